"""What every `make bench` figure is built from: the settings, a figure and a comparison, the
measurements (a steady wrk load, side by side, alternated), the py-spy profile of a miss, and the
seeded image the read figures share. bench.run and the figure modules beside it import from here.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import drive, seed
from bench.profile import py_spy, start_recording, summarise
from bench.servers import Server
from pixyproxy.domain.models import NewImage

MIB = 1024 * 1024


HOW_TO_INSTALL_WRK = "apt-get install -y wrk"


# Every figure measured with a fixed-duration load (`steady`): throughput (req/s, MiB/s) and the p50 of
# a steady load. wrk only: the httpx fallback tops out at a few hundred req/s, which pulls throughput
# ratios towards 1, and adds a millisecond of its own to every latency (BENCHMARKS.md, "Reproduce").
NEEDS_WRK = (
    "1-sqlite",
    "1-info-vs-warning",
    "1-mariadb",
    "2-content",
    "2-offload",
    "4-first",
    "4-deep",
    "4-generate-p50",
    "6-accept",
)


@dataclass(frozen=True)
class Settings:
    """How long and how hard each measurement runs."""

    duration_s: float = float(os.environ.get("BENCH_DURATION_S", "5"))
    warmup_s: float = float(os.environ.get("BENCH_WARMUP_S", "2"))
    rounds: int = int(os.environ.get("BENCH_ROUNDS", "3"))
    concurrency: int = int(os.environ.get("BENCH_CONCURRENCY", "32"))
    latency_concurrency: int = 4
    profile: bool = os.environ.get("BENCH_PROFILE", "1") != "0"
    mysql_url: str = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/pixyproxy_bench")
    amqp_url: str = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    only: tuple[str, ...] = tuple(t.strip() for t in os.environ.get("BENCH_ONLY", "").split(",") if t.strip())
    refused: tuple[str, ...] = field(default_factory=lambda: () if drive.load_tool() == "wrk" else NEEDS_WRK)

    def wanted(self, key: str) -> bool:
        """Whether BENCH_ONLY asks for this figure (all do, without it), refused or not."""
        return not self.only or any(
            key == t or key.startswith(t + "-") or t.startswith(key + "-") for t in self.only
        )

    def selected(self, *keys: str) -> bool:
        """Whether any of these figure keys (or key prefixes, like "4") is to run: all, without BENCH_ONLY,
        but never one that needs wrk when wrk is missing."""
        keys = tuple(key for key in keys if key not in self.refused)
        if not self.only:
            return bool(keys)
        return any(
            key == token or key.startswith(token + "-") or token.startswith(key + "-")
            for key in keys
            for token in self.only
        )


@dataclass
class Figure:
    """One printed line: what was measured, against what, the target and the verdict."""

    key: str
    title: str
    measured: str
    baseline: str
    ratio: float | None
    target: str
    verdict: str  # PASS, MISS, n/a or info
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Comparison:
    """Both sides' measurements, alternated round by round."""

    subject: list[dict[str, Any]]
    baseline: list[dict[str, Any]]

    def median(self, side: str, metric: str) -> float:
        """The median of one metric over one side's rounds."""
        runs = self.subject if side == "subject" else self.baseline
        return float(statistics.median(float(run[metric]) for run in runs))

    def clean(self) -> bool:
        """Whether every request of every round was answered with a 2xx or 3xx."""
        runs = [*self.subject, *self.baseline]
        return all(r["non_2xx_3xx"] == 0 and r["transport_errors"] == 0 and r["requests"] > 0 for r in runs)


def public_settings(settings: Settings) -> dict[str, Any]:
    """The settings without the MySQL and AMQP URLs, which may carry a password."""
    return {k: v for k, v in asdict(settings).items() if k not in ("mysql_url", "amqp_url")}


def log(message: str) -> None:
    """Progress on standard error, so the table on standard output stays clean."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def steady(
    url: str, settings: Settings, *, concurrency: int | None = None, request: drive.Request = drive.GET
) -> dict[str, Any]:
    """One warmed-up, fixed-duration measurement of `url` (GET unless `request` says otherwise), by wrk."""
    if drive.load_tool() != "wrk":  # a figure missing from NEEDS_WRK: refuse rather than print its numbers
        raise RuntimeError(f"a steady load needs wrk ({HOW_TO_INSTALL_WRK}); the httpx fallback is refused")
    return drive.steady(
        url,
        concurrency=concurrency or settings.concurrency,
        duration_s=settings.duration_s,
        warmup_s=settings.warmup_s,
        request=request,
    )


def compare(subject_url: str, baseline_url: str, settings: Settings) -> Comparison:
    """Measure subject and baseline alternately, `rounds` times each."""
    result = Comparison(subject=[], baseline=[])
    for _ in range(settings.rounds):
        result.baseline.append(steady(baseline_url, settings))
        result.subject.append(steady(subject_url, settings))
    return result


def profile_miss(
    figure: Figure, subject: Server, baseline: Server, path: str, settings: Settings, workdir: Path
) -> None:
    """Profile a missed figure: the subject under the same load, and the baseline for contrast."""
    log(f"{figure.key} missed its target: profiling {subject.name} and {baseline.name} with py-spy")
    figure.details["profile"] = profile_during(subject, subject.base_url + path, settings, workdir)
    figure.details["baseline_profile"] = profile_during(baseline, baseline.base_url + path, settings, workdir)


def profile_during(
    server: Server, url: str, settings: Settings, workdir: Path, *, request: drive.Request = drive.GET
) -> dict[str, Any] | None:
    """Measure `url` once more with py-spy sampling the server; the hottest frames, or None."""
    if not settings.profile or py_spy() is None:
        return None
    out = workdir / f"profile-{server.name}-{request.method.lower()}-{int(time.time())}.txt"
    recorder = start_recording(server.pid, seconds=settings.warmup_s + settings.duration_s, out=out)
    if recorder is None:
        return None
    steady(url, settings, request=request)
    _, stderr = recorder.communicate(timeout=120)
    if recorder.returncode != 0 or not out.exists():
        log(f"py-spy failed: {stderr.decode(errors='replace').strip()}")
        return None
    return summarise(out).as_dict()


def ratio_figure(
    key: str,
    title: str,
    comparison: Comparison,
    *,
    metric: str,
    unit: str,
    target: float,
    fmt: Callable[[float], str] = lambda v: f"{v:,.0f}",
) -> Figure:
    """subject / baseline of a higher-is-better metric, against a minimum ratio."""
    subject = comparison.median("subject", metric)
    baseline = comparison.median("baseline", metric)
    ratio = subject / baseline if baseline else 0.0
    verdict = "PASS" if ratio >= target and comparison.clean() else "MISS"
    note = "" if comparison.clean() else "some requests failed: see details"
    return Figure(
        key=key,
        title=title,
        measured=f"{fmt(subject)} {unit}",
        baseline=f"{fmt(baseline)} {unit}",
        ratio=ratio,
        target=f">= {target}",
        verdict=verdict,
        note=note,
        details={"subject": comparison.subject, "baseline": comparison.baseline},
    )


def check_same_answers(pixy: Server, baseline: Server, detail: dict[str, Any]) -> None:
    """Both servers must answer the same detail and the same bytes, or the ratio compares nothing."""
    guid = detail["guid"]
    with httpx.Client(timeout=30) as client:
        ours = client.get(f"{pixy.base_url}/image/{guid}")
        theirs = client.get(f"{baseline.base_url}/image/{guid}")
        if ours.status_code != 200 or ours.json() != theirs.json():
            raise RuntimeError(
                f"PixyProxy and the baseline answer different details:\n{ours.text}\n{theirs.text}"
            )
        for server in (pixy, baseline):
            content = client.get(f"{server.base_url}/image/{guid}/content")
            if content.status_code != 200 or hashlib.sha256(content.content).hexdigest() != detail["sha256"]:
                raise RuntimeError(f"{server.name} serves other bytes ({content.status_code})")


def pixyproxy_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a PixyProxy server on the embedded default, logging at warning."""
    return {
        "PIXYPROXY_REPOSITORY": "sqlite",
        "PIXYPROXY_DATA_DIR": str(data_dir),
        "PIXYPROXY_BLOB_STORE": "local",
        "PIXYPROXY_GENERATOR": "procedural",
        "PIXYPROXY_LOG_LEVEL": "WARNING",
        **overrides,
    }


@dataclass(frozen=True)
class Seeded:
    """The one 1 MiB image every read figure serves, and where PixyProxy and the baseline find it."""

    image: NewImage
    detail: dict[str, Any]
    data_dir: Path
    baseline_env: dict[str, str]

    @property
    def guid(self) -> str:
        """The image's GUID as text."""
        return str(self.detail["guid"])


def seed_image(workdir: Path) -> Seeded:
    """1 MiB of noise behind a PNG signature, stored through the SQLite and local-disk adapters."""
    data_dir = workdir / "data"
    data = seed.png_looking_blob()
    image = seed.new_image(data, prompt="bench: 1 MiB of noise")
    detail_model, image_file = asyncio.run(seed.seed_sqlite_image(data_dir, image, data))
    detail_json = seed.write_detail_json(detail_model, workdir / "detail.json")
    return Seeded(
        image=image,
        detail=detail_model.model_dump(mode="json"),
        data_dir=data_dir,
        baseline_env={"BENCH_DETAIL_JSON": str(detail_json), "BENCH_IMAGE_FILE": str(image_file)},
    )


def latency_figure(
    key: str,
    title: str,
    comparison: Comparison,
    *,
    target: float,
    subject_label: str = "1M",
    baseline_label: str = "1k",
) -> Figure:
    """subject / baseline of p50 latency (lower is better), against a maximum ratio."""
    subject = comparison.median("subject", "p50_ms")
    baseline = comparison.median("baseline", "p50_ms")
    ratio = subject / baseline if baseline else float("inf")
    clean = comparison.clean()
    return Figure(
        key=key,
        title=title,
        measured=f"{subject:.2f} ms p50 ({subject_label})",
        baseline=f"{baseline:.2f} ms p50 ({baseline_label})",
        ratio=ratio,
        target=f"<= {target}",
        verdict="PASS" if ratio <= target and clean else "MISS",
        note="" if clean else "some requests failed: see details",
        details={"subject": comparison.subject, "baseline": comparison.baseline},
    )
