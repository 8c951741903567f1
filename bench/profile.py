"""Profile a running server with py-spy (sampling, from outside) and summarise its hottest frames."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Profile:
    """py-spy's collapsed stacks, summarised: frames by own samples and by samples they appear in."""

    samples: int
    own: list[tuple[str, int]]
    inclusive: list[tuple[str, int]]
    own_by_package: list[tuple[str, int]]
    raw_path: Path

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready summary, with shares in percent."""

        def share(rows: list[tuple[str, int]]) -> list[dict[str, object]]:
            return [{"frame": f, "pct": round(100 * n / max(self.samples, 1), 1)} for f, n in rows]

        return {
            "samples": self.samples,
            "top_own": share(self.own),
            "top_inclusive": share(self.inclusive),
            "own_by_package": share(self.own_by_package),
            "raw": str(self.raw_path),
        }


def py_spy() -> str | None:
    """The py-spy executable beside this Python, or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_recording(pid: int, *, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start py-spy sampling `pid` for `seconds` into collapsed-stack text; None without py-spy."""
    exe = py_spy()
    if exe is None:
        return None
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "200",
         "--format", "raw", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip


def package_of(frame: str) -> str:
    """The top-level package of a py-spy frame `function (package/module.py:line)`."""
    location = frame.rpartition(" (")[2]
    return location.split("/", 1)[0].split(".py", 1)[0].split(":", 1)[0] or "?"


# PixyProxy's own frames, and the hand-offs to worker threads that its dependencies make per request.
FOCUS = ("pixyproxy/", "run_in_threadpool", "to_thread.py")


def summarise(raw_path: Path, *, top: int = 12, focus: tuple[str, ...] = FOCUS) -> Profile:
    """Top frames by own samples (where time goes), PixyProxy's frames by inclusive samples, packages."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        by_package[package_of(frames[-1])] += count
        # Inclusive time only for the focus's frames: the shared server stack above them says nothing.
        for frame in {f for f in frames if any(part in f for part in focus)}:
            inclusive[frame] += count
    return Profile(
        samples=total,
        own=own.most_common(top),
        inclusive=inclusive.most_common(top),
        own_by_package=by_package.most_common(top),
        raw_path=raw_path,
    )
