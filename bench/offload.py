"""Figure 2-offload: 1 MiB of image content through nginx + PixyProxy, against nginx alone.

The subject is `GET /image/{guid}/content` sent to nginx running the README's server block in front of
PixyProxy with PIXYPROXY_CONTENT_OFFLOAD=x-accel-redirect: PixyProxy checks the record and answers
headers and an X-Accel-Redirect, nginx sends the file with sendfile. The baseline is the same nginx
sending the same file from a plain location. One nginx (worker_processes 1, sendfile on, access_log off)
serves both sides, measured alternately with wrk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from bench import drive
from bench.figures import Figure, Seeded, Settings, compare, log, pixyproxy_env, profile_during, ratio_figure
from bench.servers import PIXYPROXY_APP, running
from tests.support.nginx import HOW_TO_INSTALL, nginx_binary, readme_server_block, running_nginx
from tests.support.real_parts import free_port

KEY = "2-offload"
TITLE = "GET /image/{guid}/content 1 MiB via nginx offload, vs nginx alone"
TARGET = 0.8


def direct_server_block(*, port: int, images_dir: Path) -> str:
    """nginx serving the store's files itself, under /direct/: the baseline."""
    return f"""
server {{
    listen 127.0.0.1:{port};
    sendfile on;
    tcp_nopush on;
    location /direct/ {{
        alias {images_dir}/;
    }}
}}
"""


def check_same_bytes(urls: list[str], sha256: str) -> None:
    """Both sides must send the seeded image, or the ratio compares nothing."""
    with httpx.Client(timeout=30) as client:
        for url in urls:
            response = client.get(url)
            if response.status_code != 200 or hashlib.sha256(response.content).hexdigest() != sha256:
                raise RuntimeError(f"{url} answers {response.status_code} and other bytes")


def offload_figure(settings: Settings, workdir: Path, seeded: Seeded) -> Figure:
    """Figure 2-offload, or n/a where nginx or wrk is missing."""
    if nginx_binary() is None:
        return Figure(KEY, TITLE, f"n/a (nginx missing: {HOW_TO_INSTALL})", "", None, f">= {TARGET}", "n/a")
    if drive.load_tool() != "wrk":
        return Figure(KEY, TITLE, "n/a (needs wrk: apt-get install -y wrk)", "", None, f">= {TARGET}", "n/a")
    images_dir = (seeded.data_dir / "images").resolve()
    filename = str(seeded.detail["filename"])
    env = pixyproxy_env(seeded.data_dir, PIXYPROXY_CONTENT_OFFLOAD="x-accel-redirect")
    offload_port, direct_port = free_port(), free_port()
    with running("pixyproxy-offload", PIXYPROXY_APP, env=env, log_dir=workdir) as pixy:
        blocks = readme_server_block(
            port=offload_port, upstream=pixy.base_url.removeprefix("http://"), images_dir=images_dir
        ) + direct_server_block(port=direct_port, images_dir=images_dir)
        with running_nginx(workdir / "nginx", blocks, port=offload_port, access_log=False) as nginx:
            subject_url = f"{nginx.base_url}/image/{seeded.guid}/content"
            baseline_url = f"http://127.0.0.1:{direct_port}/direct/{filename}"
            check_same_bytes([subject_url, baseline_url], str(seeded.detail["sha256"]))
            log("figure 2-offload: 1 MiB content through nginx + PixyProxy (X-Accel-Redirect) vs nginx alone")
            comparison = compare(subject_url, baseline_url, settings)
            figure = ratio_figure(KEY, TITLE, comparison, metric="mib_per_s", unit="MiB/s", target=TARGET)
            figure.note = figure.note or (
                f"{comparison.median('subject', 'requests_per_s'):,.0f} vs "
                f"{comparison.median('baseline', 'requests_per_s'):,.0f} req/s"
            )
            if figure.verdict == "MISS":
                log(f"{KEY} missed its target: profiling PixyProxy behind nginx with py-spy")
                figure.details["profile"] = profile_during(pixy, subject_url, settings, workdir)
            figure.details["peak_rss_bytes"] = pixy.peak_rss_bytes()
    return figure
