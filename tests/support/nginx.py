"""Debian's nginx as a real process on a free loopback port, all its files inside one folder.

The server block is the README's own (section "Serving image bytes with nginx"), with its example
address, upstream and data folder replaced: what the tests and the bench run is what users copy.
Nothing under /etc/nginx, /var or /run is read or written: the configuration, logs, pid file and
temporary folders all live in the given folder.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.real_parts import missing_real_part

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
README = REPO_ROOT / "README.md"
HOW_TO_INSTALL = "install Debian's nginx with `apt-get update && apt-get install -y nginx`"
_BLOCK = re.compile(r"^### Serving image bytes with nginx\n.*?^```nginx\n(.*?)^```", re.MULTILINE | re.DOTALL)
_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str | None:
    """Where nginx is, or None."""
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    return found if os.access(found, os.X_OK) else None


def require_nginx() -> str:
    """nginx's path; missing, it fails under CI and skips elsewhere."""
    binary = nginx_binary()
    if binary is None:
        missing_real_part("Debian's nginx", HOW_TO_INSTALL)
    return binary


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise AssertionError(f"the README's nginx block no longer has exactly one {old!r}")
    return text.replace(old, new)


def readme_server_block(*, port: int, upstream: str, images_dir: Path) -> str:
    """The README's nginx block, listening on 127.0.0.1:`port`, in front of `upstream` (host:port),
    sending files from `images_dir` (the local store's root)."""
    match = _BLOCK.search(README.read_text())
    if match is None:
        raise AssertionError("README.md has no ```nginx block under 'Serving image bytes with nginx'")
    block = match.group(1)
    block = _replace_once(block, "server 127.0.0.1:8000;", f"server {upstream};")
    block = _replace_once(block, "listen 80;", f"listen 127.0.0.1:{port};")
    block = _replace_once(block, "alias /srv/pixyproxy-data/images/;", f"alias {images_dir}/;")
    return block


def nginx_conf(workdir: Path, http_blocks: str, *, access_log: bool = True) -> str:
    """A whole nginx.conf: one worker, logs and temporary folders inside `workdir`, these blocks."""
    user = f"user {pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name};"
    temp_paths = "\n".join(f"    {name}_temp_path {workdir / ('temp-' + name)};" for name in _TEMP_PATHS)
    return f"""\
# Written by tests/support/nginx.py. As root, workers run as root too, so they can read a 0700 test folder.
{user if os.getuid() == 0 else ""}
worker_processes 1;
error_log {workdir / "error.log"} warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log {workdir / "access.log" if access_log else "off"};
{temp_paths}
    types {{
        image/png png;
        image/webp webp;
        image/jpeg jpg;
    }}
    default_type application/octet-stream;
{http_blocks}
}}
"""


@dataclass
class RunningNginx:
    """An nginx master process and the folder holding its configuration and logs."""

    process: subprocess.Popen[bytes]
    workdir: Path
    base_url: str

    def logs(self) -> str:
        """The error log and whatever the master wrote before it opened it."""
        parts = [self.workdir / "error.log", self.workdir / "nginx.out"]
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())

    def stop(self, timeout_s: float = 10) -> None:
        """Fast shutdown (SIGTERM); SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout_s)


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def start_nginx(
    workdir: Path, http_blocks: str, *, port: int, access_log: bool = True, timeout_s: float = 15
) -> RunningNginx:
    """Start nginx with these http blocks (one listening on `port`) and wait until the port answers."""
    binary = require_nginx()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_conf(workdir, http_blocks, access_log=access_log))
    command = [binary, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=timeout_s, check=False)
    if checked.returncode != 0:
        raise RuntimeError(f"nginx refuses its configuration:\n{checked.stderr}\n{conf.read_text()}")
    with (workdir / "nginx.out").open("ab") as out:
        process = subprocess.Popen(
            [*command, "-g", f"daemon off; pid {workdir / 'nginx.pid'};"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    nginx = RunningNginx(process=process, workdir=workdir, base_url=f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{nginx.logs()}")
        if _answers(port):
            return nginx
        time.sleep(0.05)
    nginx.stop()
    raise RuntimeError(f"nginx did not listen on {port} within {timeout_s} s:\n{nginx.logs()}")


@contextmanager
def running_nginx(
    workdir: Path, http_blocks: str, *, port: int, access_log: bool = True
) -> Iterator[RunningNginx]:
    """nginx for the duration of the block, the blocks listening on `port` (free_port() finds one)."""
    nginx = start_nginx(workdir, http_blocks, port=port, access_log=access_log)
    try:
        yield nginx
    finally:
        nginx.stop()
