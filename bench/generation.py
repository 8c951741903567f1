"""Figures 3-cpu and 4-generate-p50: what one generation costs PixyProxy, in CPU and in latency.

3-cpu: CPU seconds (utime + stime from /proc/<pid>/stat, over the server process and any children)
per `POST /image` through the OpenAI adapter against the fake upstream answering a 1 MiB image as
base64, against the same from a bare FastAPI + httpx app doing the same upstream call
(bench/generate_baseline_app.py). CPU time is not stretched by a busy machine the way wall time is;
the load generator and the fake upstream are other processes and are not counted.

4-generate-p50: p50 latency of a synchronous `POST /image` (no Prefer: since the jobs issue, a job
run in the request) against the path before jobs, `ImageService.generate` called straight from the
route with no job record (bench/direct_generate_app.py), both on the embedded default (procedural generator,
SQLite, local disk, in-process memory queue).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench import drive
from bench.figures import (
    Comparison,
    Figure,
    Settings,
    latency_figure,
    log,
    pixyproxy_env,
    profile_during,
    steady,
)
from bench.servers import PIXYPROXY_APP, Server, running

MIB = 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

CPU_IMAGE_BYTES = MIB
CPU_REQUESTS = int(os.environ.get("BENCH_CPU_REQUESTS", "300"))
CPU_CONCURRENCY = 8
CPU_WARMUP = 24
CPU_TARGET = 1.5
GENERATE_TARGET = 1.2
API_KEY = "sk-bench-not-a-secret"
PROMPT = "a lighthouse in a storm, for the bench"
GENERATE = drive.Request(method="POST", body=json.dumps({"prompt": PROMPT}))
GENERATION_BASELINE_APP = "bench.generate_baseline_app:create_app"
DIRECT_APP = "bench.direct_generate_app:create_app"


# --- CPU seconds of a process tree ----------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields from the third (state) on: the command name may hold spaces."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of `pid` and of every live descendant, in seconds (all threads included)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    user = system = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        fields = _stat_fields(current)
        if fields is None:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])  # fields 14, 15 of stat(5)
        pending.extend(children.get(current, []))
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def cpu_per_request(server: Server, *, count: int, concurrency: int) -> dict[str, Any]:
    """Send `count` `POST /image` at `concurrency`; the server's CPU seconds per request among them."""
    user, system = cpu_seconds(server.pid)
    result = drive.each([server.base_url + "/image"] * count, concurrency=concurrency, request=GENERATE)
    user_after, system_after = cpu_seconds(server.pid)
    user, system = user_after - user, system_after - system
    per_request = 1000 / max(result["requests"], 1)
    result.update(
        cpu_s=user + system,
        cpu_ms_per_request=(user + system) * per_request,
        user_ms_per_request=user * per_request,
        system_ms_per_request=system * per_request,
    )
    return result


# --- figure 3-cpu -----------------------------------------------------------------------------------


def generate_cpu_figure(settings: Settings, workdir: Path) -> tuple[Figure, dict[str, int | None]]:
    """Figure 3-cpu: PixyProxy's CPU per POST /image (OpenAI adapter, 1 MiB image) against bare httpx."""
    from tests.support.fake_openai import running_fake_openai

    key = "3-cpu"
    title = "CPU per POST /image, 1 MiB via OpenAI adapter, vs FastAPI+httpx"
    data_dir, out_dir = workdir / "data-cpu", workdir / "baseline-cpu-out"
    runs = Comparison(subject=[], baseline=[])
    rss: dict[str, int | None] = {}
    try:
        with running_fake_openai(workdir / "fake-openai-cpu.log") as fake:
            fake.set_mode("ok", image_bytes=CPU_IMAGE_BYTES)
            env = pixyproxy_env(
                data_dir,
                PIXYPROXY_GENERATOR="openai",
                OPENAI_API_KEY=API_KEY,
                OPENAI_BASE_URL=fake.base_url,
                PIXYPROXY_OPENAI_MAX_RETRIES="0",
                PIXYPROXY_MAX_CONCURRENT_GENERATIONS=str(CPU_CONCURRENCY),
            )
            with running("pixyproxy-cpu", PIXYPROXY_APP, env=env, log_dir=workdir) as pixy:
                warmups = [cpu_per_request(pixy, count=CPU_WARMUP, concurrency=CPU_CONCURRENCY)]
                # The baseline sends exactly the body PixyProxy's adapter sent (model, size, quality...).
                sent = fake.stats()["last_body"]
                baseline_env = {
                    "BENCH_UPSTREAM_URL": fake.base_url + "/images/generations",
                    "BENCH_UPSTREAM_BODY": json.dumps(sent),
                    "BENCH_UPSTREAM_KEY": API_KEY,
                    "BENCH_OUT_DIR": str(out_dir),
                }
                with running(
                    "baseline-cpu", GENERATION_BASELINE_APP, env=baseline_env, log_dir=workdir
                ) as baseline:
                    warmups.append(cpu_per_request(baseline, count=CPU_WARMUP, concurrency=CPU_CONCURRENCY))
                    sizes = _check_sizes(pixy, baseline, out_dir)
                    log(
                        f"figure 3-cpu: {settings.rounds} x {CPU_REQUESTS} POST /image at {CPU_CONCURRENCY},"
                        " PixyProxy (OpenAI adapter) and bare FastAPI + httpx, alternately"
                    )
                    for _ in range(settings.rounds):
                        runs.baseline.append(
                            cpu_per_request(baseline, count=CPU_REQUESTS, concurrency=CPU_CONCURRENCY)
                        )
                        runs.subject.append(
                            cpu_per_request(pixy, count=CPU_REQUESTS, concurrency=CPU_CONCURRENCY)
                        )
                    subject = runs.median("subject", "cpu_ms_per_request")
                    base = runs.median("baseline", "cpu_ms_per_request")
                    ratio = subject / base if base else float("inf")
                    clean = runs.clean()
                    figure = Figure(
                        key,
                        title,
                        f"{subject:.1f} ms CPU/req",
                        f"{base:.1f} ms CPU/req",
                        ratio,
                        f"<= {CPU_TARGET}",
                        "PASS" if ratio <= CPU_TARGET and clean else "MISS",
                        details={"subject": runs.subject, "baseline": runs.baseline, "warmups": warmups},
                    )
                    wall = {s: runs.median(s, "p50_ms") for s in ("subject", "baseline")}
                    figure.note = "; ".join(
                        filter(
                            None,
                            [
                                f"{CPU_REQUESTS} requests a round at {CPU_CONCURRENCY}, image"
                                f" {sizes['pixyproxy']:,} bytes (baseline {sizes['baseline']:,});"
                                f" p50 {wall['subject']:.1f} vs {wall['baseline']:.1f} ms;"
                                f" clock tick 1/{CLOCK_TICKS} s",
                                "" if clean else "some requests failed: see details",
                            ],
                        )
                    )
                    if figure.verdict == "MISS" and settings.profile:
                        log(f"{key} missed its target: profiling {pixy.name} and {baseline.name}")
                        url = "/image"
                        figure.details["profile"] = profile_during(
                            pixy, pixy.base_url + url, settings, workdir, request=GENERATE
                        )
                        figure.details["baseline_profile"] = profile_during(
                            baseline, baseline.base_url + url, settings, workdir, request=GENERATE
                        )
                    rss[baseline.name] = baseline.peak_rss_bytes()
                rss[pixy.name] = pixy.peak_rss_bytes()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(out_dir, ignore_errors=True)
    return figure, rss


def _check_sizes(pixy: Server, baseline: Server, out_dir: Path) -> dict[str, int]:
    """Both sides must have stored the same 1 MiB image, or the ratio compares nothing."""
    with httpx.Client(timeout=60) as client:
        ours = client.post(pixy.base_url + "/image", content=GENERATE.body, headers=GENERATE.wire_headers())
        theirs = client.post(
            baseline.base_url + "/image", content=GENERATE.body, headers=GENERATE.wire_headers()
        )
    if ours.status_code != 201 or theirs.status_code != 201:
        raise RuntimeError(f"POST /image answered {ours.status_code} and {theirs.status_code}: {ours.text}")
    sizes = {"pixyproxy": int(ours.json()["size_bytes"]), "baseline": int(theirs.json()["size_bytes"])}
    written = (out_dir / theirs.json()["filename"]).stat().st_size
    if sizes["pixyproxy"] != sizes["baseline"] or written != sizes["baseline"] or written < CPU_IMAGE_BYTES:
        raise RuntimeError(f"the two sides stored different images: {sizes}, {written} bytes on disk")
    return sizes


# --- figure 4-generate-p50 --------------------------------------------------------------------------


@contextlib.contextmanager
def _two_servers(workdir: Path, env_of: Any) -> Iterator[tuple[Server, Server]]:
    with (
        running("pixyproxy-generate-job", PIXYPROXY_APP, env=env_of("job"), log_dir=workdir) as job,
        running("pixyproxy-generate-direct", DIRECT_APP, env=env_of("direct"), log_dir=workdir) as direct,
    ):
        yield job, direct


def generate_latency_figure(settings: Settings, workdir: Path) -> tuple[Figure, dict[str, int | None]]:
    """Figure 4-generate-p50: sync POST /image p50 through a job, against the direct pre-jobs path."""
    key = "4-generate-p50"
    title = "POST /image (sync, procedural) p50, job path vs direct"
    dirs = {side: workdir / f"data-generate-{side}" for side in ("job", "direct")}
    rss: dict[str, int | None] = {}
    try:
        with _two_servers(workdir, lambda side: pixyproxy_env(dirs[side])) as (job, direct):
            _check_generates(job, direct)
            concurrency = settings.latency_concurrency
            log(f"figure 4-generate-p50: POST /image, job path vs direct, {concurrency} at a time")
            runs = Comparison(subject=[], baseline=[])
            for _ in range(settings.rounds):
                runs.baseline.append(
                    steady(direct.base_url + "/image", settings, concurrency=concurrency, request=GENERATE)
                )
                runs.subject.append(
                    steady(job.base_url + "/image", settings, concurrency=concurrency, request=GENERATE)
                )
            figure = latency_figure(
                key, title, runs, target=GENERATE_TARGET, subject_label="job", baseline_label="direct"
            )
            p99 = {side: runs.median(side, "p99_ms") for side in ("subject", "baseline")}
            figure.note = "; ".join(
                filter(
                    None,
                    [
                        f"p99 {p99['subject']:.2f} vs {p99['baseline']:.2f} ms; SQLite + local disk,"
                        " PIXYPROXY_JOB_QUEUE=memory; direct = ImageService.generate from the route",
                        figure.note,
                    ],
                )
            )
            if figure.verdict == "MISS" and settings.profile:
                log(f"{key} missed its target: profiling {job.name}, then {direct.name}")
                figure.details["profile"] = profile_during(
                    job, job.base_url + "/image", settings, workdir, request=GENERATE
                )
                figure.details["baseline_profile"] = profile_during(
                    direct, direct.base_url + "/image", settings, workdir, request=GENERATE
                )
            rss[job.name], rss[direct.name] = job.peak_rss_bytes(), direct.peak_rss_bytes()
    finally:
        for path in dirs.values():
            shutil.rmtree(path, ignore_errors=True)
    return figure, rss


def _check_generates(job: Server, direct: Server) -> None:
    """The job path must record a job and the direct one none, or the figure compares nothing."""
    with httpx.Client(timeout=60) as client:
        for server in (job, direct):
            answer = client.post(
                server.base_url + "/image", content=GENERATE.body, headers=GENERATE.wire_headers()
            )
            if answer.status_code != 201:
                raise RuntimeError(f"{server.name}: POST /image answered {answer.status_code}: {answer.text}")
        jobs = {s.name: len(client.get(s.base_url + "/jobs").json()) for s in (job, direct)}
    if jobs != {job.name: 1, direct.name: 0}:
        raise RuntimeError(f"expected one job on the job path and none on the direct one: {jobs}")
