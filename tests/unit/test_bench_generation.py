"""make bench's CPU reading (figure 3-cpu): utime + stime of a process and its live children."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.generation import cpu_seconds


def burn(seconds: float) -> None:
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        pass


def test_the_cpu_a_process_spends_is_counted() -> None:
    user, system = cpu_seconds(os.getpid())
    burn(0.3)
    user_after, system_after = cpu_seconds(os.getpid())
    assert user_after + system_after - user - system >= 0.2


def test_a_live_childs_cpu_is_counted_with_its_parents() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.6\n"
            "while time.process_time() < end: pass\ntime.sleep(30)",
        ]
    )
    try:
        before = sum(cpu_seconds(os.getpid()))
        deadline = time.monotonic() + 20
        while sum(cpu_seconds(child.pid)) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        gained = sum(cpu_seconds(os.getpid())) - before
    finally:
        child.kill()
        child.wait()
    assert gained >= 0.3  # the child's burn, seen through the parent, while the parent slept
