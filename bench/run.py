"""`make bench`: PixyProxy's own overhead, as ratios against baselines measured in the same run.

Every server is a uvicorn subprocess on a free loopback port with the same settings (bench.servers);
load comes from a separate process (wrk for every fixed-duration load: without it those figures are
refused; bench.load for bursts and one-request-each measurements). Each side of a comparison is
measured `BENCH_ROUNDS` times, alternately, and the figure uses each side's median. Prints a table and
writes bench/results.json. Figures are printed, never asserted: this is not a test.

Environment: BENCH_DURATION_S (5), BENCH_WARMUP_S (2), BENCH_ROUNDS (3), BENCH_CONCURRENCY (32),
BENCH_LOADGEN=httpx (act as if wrk were missing: the figures that need it are refused),
BENCH_PROFILE=0 (no py-spy on a miss),
BENCH_MYSQL_URL (mysql://root@127.0.0.1:3306/pixyproxy_bench; the databases are created and dropped),
BENCH_AMQP_URL (amqp://guest:guest@127.0.0.1:5672/; the job figures' queues are created and deleted),
BENCH_ONLY (comma-separated figure keys or their prefixes, e.g. `8,9-delete`: run only those figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench import drive, mariadb, rabbitmq, request_logging, seed
from bench.figures import (
    HOW_TO_INSTALL_WRK,
    MIB,
    NEEDS_WRK,
    Comparison,
    Figure,
    Seeded,
    Settings,
    check_same_answers,
    compare,
    latency_figure,
    log,
    pixyproxy_env,
    profile_during,
    profile_miss,
    public_settings,
    ratio_figure,
    seed_image,
    steady,
)
from bench.servers import BASELINE_APP, PIXYPROXY_APP, REPO_ROOT, Server, peak_rss_bytes, running
from pixyproxy.adapters.mysql.connection import parse_mysql_url
from pixyproxy.adapters.mysql.init import init_schema
from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.server import start_worker
from tests.support.stack import openai_env

RESULTS_PATH = REPO_ROOT / "bench" / "results.json"


# --- figures 1, 2 and the logging price: the embedded default (SQLite + local disk) ---------------------


def embedded_figures(
    settings: Settings, workdir: Path, seeded: Seeded
) -> tuple[list[Figure], dict[str, int | None]]:
    """Figure 1 on SQLite at INFO with its INFO/WARNING price (bench.request_logging), figure 2, and
    the workers' peak RSS."""
    data_dir, detail, guid, baseline_env = seeded.data_dir, seeded.detail, seeded.guid, seeded.baseline_env
    figures: list[Figure] = []
    rss: dict[str, int | None] = {}
    with (
        running("baseline", BASELINE_APP, env=baseline_env, log_dir=workdir) as baseline,
        running("pixyproxy-sqlite", PIXYPROXY_APP, env=pixyproxy_env(data_dir), log_dir=workdir) as pixy,
    ):
        check_same_answers(pixy, baseline, detail)
        content_path = f"/image/{guid}/content"
        if settings.selected("1-sqlite", "1-info-vs-warning"):
            read_figures, read_rss = request_logging.sqlite_figures(
                settings, workdir, seeded, baseline=baseline
            )
            figures.extend(read_figures)
            rss.update(read_rss)

        if settings.selected("2-content"):
            log("figure 2: GET /image/{guid}/content (1 MiB), PixyProxy vs Starlette FileResponse")
            content = compare(pixy.base_url + content_path, baseline.base_url + content_path, settings)
            fig2 = ratio_figure(
                "2-content",
                "GET /image/{guid}/content 1 MiB, vs FileResponse",
                content,
                metric="mib_per_s",
                unit="MiB/s",
                target=0.8,
            )
            fig2.note = (
                fig2.note
                or f"{content.median('subject', 'requests_per_s'):,.0f} vs "
                f"{content.median('baseline', 'requests_per_s'):,.0f} req/s"
            )
            if fig2.verdict == "MISS":
                profile_miss(fig2, pixy, baseline, content_path, settings, workdir)
            figures.append(fig2)
        rss["pixyproxy-sqlite"] = pixy.peak_rss_bytes()
        rss["baseline"] = baseline.peak_rss_bytes()
    return figures, rss


# --- figure 1 on MariaDB and figure 4: need the MySQL adapter (branch `mysql`) ------------------------------


PAGE_LIMIT = 10
DEEP_PAGES = 100
SMALL, LARGE = 1_000, 1_000_000


def deep_page_url(server: Server, *, limit: int, page: int) -> str:
    """The URL of page `page` (1 = first) of GET /image, reached by following Link rel=next."""
    url = f"{server.base_url}/image?limit={limit}"
    with httpx.Client(timeout=30) as client:
        for _ in range(page - 1):
            response = client.get(url)
            response.raise_for_status()
            link = response.links.get("next", {}).get("url")
            if link is None:
                raise RuntimeError(f"{server.name}: no page after {url}")
            url = str(httpx.URL(server.base_url).join(link))
    return url


SEARCH_LIMIT = 100
MYSQL_KEYS = (
    ("1-mariadb", request_logging.MARIADB_TITLE, f">= {request_logging.READ_TARGET}"),
    ("4-first", f"GET /image?limit={PAGE_LIMIT} first page p50, 1M / 1k rows", "<= 1.5"),
    ("4-deep", f"GET /image page {DEEP_PAGES} by cursor p50, 1M / 1k rows", "<= 1.5"),
    (
        "8-search-rare",
        f"GET /image?q=<rare>&limit={SEARCH_LIMIT} p50, 1M rows, vs unfiltered",
        "<= 3.0",
    ),
    (
        "8-search-common",
        f"GET /image?q=<30 % word>&limit={SEARCH_LIMIT} p50, 1M rows, vs unfiltered",
        "<= 3.0",
    ),
)


def mysql_figures(
    settings: Settings, workdir: Path, seeded: Seeded
) -> tuple[list[Figure], dict[str, int | None]]:
    """Figure 1 on MariaDB; figure 4, GET /image at 1,000 and at 1,000,000 rows; figure 8, search pages
    at 1,000,000 rows. One database of a million rows serves figures 4 and 8."""
    keys = tuple(k for k in MYSQL_KEYS if settings.selected(k[0]))

    def unavailable(reason: str) -> list[Figure]:
        return [Figure(key, title, reason, "", None, target, "n/a") for key, title, target in keys]

    why = mariadb.reachable(settings.mysql_url)
    if why is not None:
        return unavailable(f"n/a (MariaDB unreachable: {why})"), {}
    base = parse_mysql_url(settings.mysql_url).database
    small_url = mariadb.url_with_database(settings.mysql_url, base + "_1k")
    large_url = mariadb.url_with_database(settings.mysql_url, base + "_1m")
    need_small = settings.selected("1-mariadb", "4-first", "4-deep")
    need_large = settings.selected("4-first", "4-deep", "8-search-rare", "8-search-common")
    try:
        loads = []
        if need_small:
            loads.append(mariadb.create_loaded_database(small_url, rows=SMALL, seeded=seeded.image))
        if need_large:
            log(f"figures 4 and 8: loading {LARGE:,} images into MariaDB, with their search columns")
            large = mariadb.create_loaded_database(large_url, rows=LARGE, seeded=seeded.image)
            log(f"loaded {large.rows:,} rows in {large.load_s:.0f} s")
            loads.append(large)
        return _measure_mysql(
            settings,
            workdir,
            seeded,
            small_url if need_small else None,
            large_url if need_large else None,
            keys,
            loads=loads,
        )
    finally:
        mariadb.drop_database(small_url)
        mariadb.drop_database(large_url)


def _measure_mysql(
    settings: Settings,
    workdir: Path,
    seeded: Seeded,
    small_url: str | None,
    large_url: str | None,
    keys: tuple[tuple[str, str, str], ...],
    *,
    loads: list[mariadb.LoadedDatabase],
) -> tuple[list[Figure], dict[str, int | None]]:
    def env(url: str) -> dict[str, str]:
        return pixyproxy_env(seeded.data_dir, PIXYPROXY_REPOSITORY="mysql", PIXYPROXY_MYSQL_URL=url)

    titles = {key: title for key, title, _ in keys}
    load_details = [{"rows": load.rows, "load_s": load.load_s} for load in loads]
    figures: list[Figure] = []
    rss: dict[str, int | None] = {}
    with contextlib.ExitStack() as stack:
        small = large = None
        if small_url is not None:
            small = stack.enter_context(
                running("pixyproxy-mysql-1k", PIXYPROXY_APP, env=env(small_url), log_dir=workdir)
            )
        if large_url is not None:
            large = stack.enter_context(
                running("pixyproxy-mysql-1m", PIXYPROXY_APP, env=env(large_url), log_dir=workdir)
            )
        if small_url is not None and "1-mariadb" in titles:
            # at INFO, as served: a server of its own, so that figure 4's two servers stay alike
            info_env = request_logging.served_env(env(small_url), "INFO")
            with running(
                "pixyproxy-mysql-1k-info", request_logging.SERVED_APP, env=info_env, log_dir=workdir
            ) as info:
                figures.append(_mariadb_read_figure(settings, workdir, seeded, info, titles["1-mariadb"]))
                rss[info.name] = info.peak_rss_bytes()
        if small is not None and large is not None and "4-first" in titles:
            figures.extend(_page_figures(settings, workdir, small, large, titles, load_details))
        if large is not None and any(key.startswith("8-") for key in titles):
            figures.extend(_search_figures(settings, workdir, large, large_url or "", titles, load_details))
        for server in (small, large):
            if server is not None:
                rss[server.name] = server.peak_rss_bytes()
    return figures, rss


def _mariadb_read_figure(
    settings: Settings, workdir: Path, seeded: Seeded, small: Server, title: str
) -> Figure:
    """Figure 1 on MariaDB: GET /image/{guid} req/s at INFO against the bare FastAPI baseline."""
    detail_path = f"/image/{seeded.guid}"
    with running("baseline-3", BASELINE_APP, env=seeded.baseline_env, log_dir=workdir) as baseline:
        check_same_answers(small, baseline, seeded.detail)
        log("figure 1: GET /image/{guid}, PixyProxy at INFO on MariaDB vs bare FastAPI")
        fig1 = ratio_figure(
            "1-mariadb",
            title,
            compare(small.base_url + detail_path, baseline.base_url + detail_path, settings),
            metric="requests_per_s",
            unit="req/s",
            target=request_logging.READ_TARGET,
        )
        if fig1.verdict == "MISS":
            profile_miss(fig1, small, baseline, detail_path, settings, workdir)
    return fig1


def _page_figures(
    settings: Settings,
    workdir: Path,
    small: Server,
    large: Server,
    titles: dict[str, str],
    load_details: list[dict[str, Any]],
) -> list[Figure]:
    """Figure 4: the first page and page DEEP_PAGES of GET /image, at 1,000,000 rows against 1,000."""
    log(f"figure 4: first page and page {DEEP_PAGES}, at {SMALL:,} and {LARGE:,} rows")
    urls = {
        "first": (
            f"{small.base_url}/image?limit={PAGE_LIMIT}",
            f"{large.base_url}/image?limit={PAGE_LIMIT}",
        ),
        "deep": (
            deep_page_url(small, limit=PAGE_LIMIT, page=DEEP_PAGES),
            deep_page_url(large, limit=PAGE_LIMIT, page=DEEP_PAGES),
        ),
    }
    runs: dict[str, Comparison] = {name: Comparison(subject=[], baseline=[]) for name in urls}
    for _ in range(settings.rounds):
        for name, (small_page, large_page) in urls.items():
            runs[name].baseline.append(steady(small_page, settings, concurrency=settings.latency_concurrency))
            runs[name].subject.append(steady(large_page, settings, concurrency=settings.latency_concurrency))
    figures = []
    for key, name in (("4-first", "first"), ("4-deep", "deep")):
        figure = latency_figure(key, titles[key], runs[name], target=1.5)
        figure.details["loads"] = load_details
        if figure.verdict == "MISS":
            path = urls[name][1].removeprefix(large.base_url)
            profile_miss(figure, large, small, path, settings, workdir)
        figures.append(figure)
    return figures


SEARCH_TARGET = 3.0
MIN_EACH_REQUESTS = 8  # a p50 over fewer says little
MAX_EACH_REQUESTS = 5_000


def page_latency(url: str, settings: Settings, *, concurrency: int) -> dict[str, Any]:
    """p50 latency of `url` over about `duration_s` of requests, each one measured (drive.each).

    A common word's page can take seconds, which leaves a fixed window of a few seconds with one
    request or none inside it; so both sides of a search figure send a number of requests sized
    from a sequential warm-up of `warmup_s` (at least two requests) to fill `duration_s`.
    """
    times: list[float] = []
    with httpx.Client(timeout=120) as client:
        deadline = time.monotonic() + settings.warmup_s
        while len(times) < 2 or time.monotonic() < deadline:
            started = time.perf_counter()
            client.get(url).raise_for_status()
            times.append(time.perf_counter() - started)
    each_s = statistics.median(times)
    count = int(settings.duration_s * concurrency / each_s) if each_s > 0 else MAX_EACH_REQUESTS
    count = max(MIN_EACH_REQUESTS, min(MAX_EACH_REQUESTS, count))
    result = drive.each([url] * count, concurrency=concurrency)
    result["warmup_median_ms"] = each_s * 1000
    return result


def check_search_pages(large: Server, urls: dict[str, str]) -> dict[str, int]:
    """Each page must hold what the loader put there (every image with the word), or it prices nothing."""
    expect = {
        "unfiltered": SEARCH_LIMIT,
        "rare": min(SEARCH_LIMIT, mariadb.expected_matches(LARGE, mariadb.RARE_WORD)),
        "common": min(SEARCH_LIMIT, mariadb.expected_matches(LARGE, mariadb.COMMON_WORD)),
    }
    words = {"rare": mariadb.RARE_WORD, "common": mariadb.COMMON_WORD}
    with httpx.Client(timeout=120) as client:
        for name, url in urls.items():
            response = client.get(url)
            page = response.json() if response.status_code == 200 else None
            if not isinstance(page, list) or len(page) != expect[name]:
                raise RuntimeError(f"{large.name}: {url} answered {response.status_code}, not {expect[name]}")
            word = words.get(name)
            if word is not None and not all(word in image["prompt"].split() for image in page):
                raise RuntimeError(f"{large.name}: {url} answered an image without {word!r}")
    return expect


def _search_figures(
    settings: Settings,
    workdir: Path,
    large: Server,
    large_url: str,
    titles: dict[str, str],
    load_details: list[dict[str, Any]],
) -> list[Figure]:
    """Figure 8: the first page of GET /image?q=<word>&limit=100 at 1,000,000 rows, for a word in 10
    images and for a word in 30 % of them, against the unfiltered first page on the same server."""
    base = f"{large.base_url}/image?limit={SEARCH_LIMIT}"
    urls = {
        "unfiltered": base,
        "rare": f"{base}&q={mariadb.RARE_WORD}",
        "common": f"{base}&q={mariadb.COMMON_WORD}",
    }
    found = check_search_pages(large, urls)
    log(
        f"figure 8: q={mariadb.RARE_WORD} ({mariadb.expected_matches(LARGE, mariadb.RARE_WORD):,} images),"
        f" q={mariadb.COMMON_WORD} ({mariadb.expected_matches(LARGE, mariadb.COMMON_WORD):,}) and unfiltered,"
        f" limit={SEARCH_LIMIT}, at {LARGE:,} rows"
    )
    wanted = [name for name in ("rare", "common") if f"8-search-{name}" in titles]
    unfiltered: list[dict[str, Any]] = []
    searched: dict[str, list[dict[str, Any]]] = {name: [] for name in wanted}
    for _ in range(settings.rounds):
        unfiltered.append(
            page_latency(urls["unfiltered"], settings, concurrency=settings.latency_concurrency)
        )
        for name in wanted:
            searched[name].append(
                page_latency(urls[name], settings, concurrency=settings.latency_concurrency)
            )
    figures = []
    for name in wanted:
        key = f"8-search-{name}"
        word = mariadb.RARE_WORD if name == "rare" else mariadb.COMMON_WORD
        matches = mariadb.expected_matches(LARGE, word)
        comparison = Comparison(subject=searched[name], baseline=unfiltered)
        figure = latency_figure(
            key,
            titles[key],
            comparison,
            target=SEARCH_TARGET,
            subject_label=f"q={word}",
            baseline_label="no q",
        )
        plan = mariadb.explain_search(large_url, word, limit=SEARCH_LIMIT)
        summary = plan["summary"]
        figure.details.update(
            loads=load_details, matches=matches, page_size=found[name], plan=plan, urls=urls
        )
        figure.note = "; ".join(
            filter(
                None,
                [
                    f"{matches:,} of {LARGE:,} images hold {word!r};"
                    f" MariaDB plan: {summary['access_type']} on {summary['key']}, then filesort"
                    f" (priority queue {summary['priority_queue']}); ANALYZE: {summary['rows_read']:,}"
                    f" rows read, {summary['pages_accessed'] or 0:,} pages,"
                    f" {(summary['optimization_ms'] or 0) + (summary['execution_ms'] or 0):,.0f} ms"
                    " in the server",
                    figure.note,
                ],
            )
        )
        if figure.verdict == "MISS":
            path = urls[name].removeprefix(large.base_url)
            log(f"{key} missed its target: profiling {large.name} on q, then without")
            figure.details["profile"] = profile_during(large, urls[name], settings, workdir)
            figure.details["baseline_profile"] = profile_during(large, urls["unfiltered"], settings, workdir)
            figure.details["profile_path"] = path
        figures.append(figure)
    return figures


# --- figure 3: POST /image against an OpenAI-compatible upstream answering after 500 ms ---------------------

UPSTREAM_DELAY_S = 0.5
BURST = 64


def generate_burst_figure(settings: Settings, workdir: Path) -> Figure:
    """Figure 3: 64 concurrent POST /image, each waiting 500 ms upstream: the wall time, as information
    (it was to be within 1.3 x 500 ms; on 2 shared cores wall time prices the machine, so figure 3-cpu
    prices a generation in CPU seconds instead).

    The upstream is the project's fake OpenAI server (tests/support/fake_openai.py) spoken to by
    the real openai SDK inside PixyProxy. PIXYPROXY_MAX_CONCURRENT_GENERATIONS is raised to 64 so
    that the figure prices PixyProxy's overhead, not its configured bound on upstream calls.
    """
    title = f"{BURST} concurrent POST /image, upstream {UPSTREAM_DELAY_S * 1000:.0f} ms"
    data_dir = workdir / "data-openai"
    prompt = "a lighthouse in a storm, for the bench"
    body = json.dumps({"prompt": prompt})
    # The same burst sent straight to the upstream: what the harness itself (load generator and fake
    # upstream on the same 2 cores) costs, so PixyProxy's share can be told apart from it.
    direct_body = json.dumps({"model": "gpt-image-1", "prompt": prompt})
    direct_auth = {"authorization": "Bearer sk-bench-not-a-secret"}
    with running_fake_openai(workdir / "fake-openai.log") as fake:
        env = pixyproxy_env(
            data_dir,
            PIXYPROXY_GENERATOR="openai",
            OPENAI_API_KEY="sk-bench-not-a-secret",
            OPENAI_BASE_URL=fake.base_url,
            PIXYPROXY_OPENAI_MAX_RETRIES="0",
            PIXYPROXY_MAX_CONCURRENT_GENERATIONS=str(BURST),
        )
        with running("pixyproxy-openai", PIXYPROXY_APP, env=env, log_dir=workdir) as pixy:
            url = pixy.base_url + "/image"
            direct_url = fake.base_url + "/images/generations"
            fake.set_mode("ok", delay_s=UPSTREAM_DELAY_S)
            log(f"figure 3: {settings.rounds} x {BURST} POST /image, and the same straight at the upstream")
            warmup = drive.burst(url, count=8, method="POST", body=body)
            fake.reset()
            fake.set_mode("ok", delay_s=UPSTREAM_DELAY_S)
            bursts, direct = [], []
            for _ in range(settings.rounds):
                direct.append(
                    drive.burst(
                        direct_url,
                        count=BURST,
                        method="POST",
                        body=direct_body,
                        preconnect="/_control/stats",
                        headers=direct_auth,
                    )
                )
                bursts.append(drive.burst(url, count=BURST, method="POST", body=body, preconnect="/healthz"))
            upstream = fake.stats()
            wall_s = statistics.median(b["wall_s"] for b in bursts)
            ratio = wall_s / UPSTREAM_DELAY_S
            profile = None  # info only now: 3-cpu profiles a generation when it misses
            rss = pixy.peak_rss_bytes()
    direct_s = statistics.median(b["wall_s"] for b in direct)
    clean = (
        all(b["statuses"] == {"201": BURST} for b in bursts)
        and all(b["statuses"] == {"200": BURST} for b in direct)
        and warmup["statuses"] == {"201": 8}
    )
    return Figure(
        "3-generate",
        title,
        f"{wall_s * 1000:,.0f} ms wall",
        f"{direct_s * 1000:,.0f} ms direct",
        ratio,
        "report only",  # wall time on a shared machine: figure 3-cpu prices a generation instead
        "info" if clean else "MISS",
        note=(
            "wall time, info only (3-cpu is the target); the same burst straight at the upstream takes"
            f" {direct_s * 1000:,.0f} ms"
            f" ({direct_s / UPSTREAM_DELAY_S:.2f} x 500 ms) on this machine; PixyProxy adds"
            f" {(wall_s - direct_s) * 1000:,.0f} ms; upstream peak in flight {upstream['max_in_flight']}"
            + ("" if clean else "; some requests did not answer 201/200: see details")
        ),
        details={
            "bursts": bursts,
            "direct_bursts": direct,
            "warmup": warmup,
            "upstream": upstream,
            "peak_rss_bytes": rss,
            "profile": profile,
        },
    )


# --- figure 6: accepting a job, against a read on the same server ------------------------------------------

ACCEPT = drive.Request(
    method="POST",
    body=json.dumps({"prompt": "a lighthouse at dusk, accepted for the bench"}),
    headers={"prefer": "respond-async"},
)


def rabbitmq_env(settings: Settings, queue: str) -> dict[str, str]:
    """Jobs published to `queue` on the bench's broker: `serve` then only accepts, workers run them."""
    return {
        "PIXYPROXY_JOB_QUEUE": "rabbitmq",
        "PIXYPROXY_AMQP_URL": settings.amqp_url,
        "PIXYPROXY_AMQP_QUEUE": queue,
    }


def check_accepts(server: Server) -> None:
    """One async POST must answer 202 with a queued job at its Location, or the figure prices nothing."""
    with httpx.Client(timeout=30) as client:
        response = client.request(
            ACCEPT.method, server.base_url + "/image", content=ACCEPT.body, headers=ACCEPT.wire_headers()
        )
    job = response.json() if response.status_code == 202 else {}
    if job.get("status") != "queued" or response.headers.get("location") != f"/jobs/{job.get('id')}":
        raise RuntimeError(f"{server.name} did not accept a job: {response.status_code} {response.text}")


def count_with_status(client: httpx.Client, status: str) -> int:
    """How many jobs the server lists with `status` (up to 1,000)."""
    response = client.get("/jobs", params={"status": status, "limit": 1000})
    response.raise_for_status()
    return len(response.json())


def accept_latency_figure(settings: Settings, workdir: Path) -> tuple[Figure, int | None]:
    """Figure 6: p50 of POST /image with `Prefer: respond-async` against p50 of GET /image/{guid}.

    One server on the embedded default (SQLite + local disk) with PIXYPROXY_JOB_QUEUE=rabbitmq and a
    throwaway queue, as an API node runs: it records each job, publishes its id and answers 202, and
    runs none of them, so the thousands of jobs a measurement accepts never compete with it for the CPU.
    The queue (and every job on it) is deleted afterwards.
    """
    key, title, target = "6-accept", "POST /image respond-async p50, vs GET /image/{guid}", 2.0
    why = rabbitmq.reachable(settings.amqp_url)
    if why is not None:
        return Figure(key, title, f"n/a (RabbitMQ unreachable: {why})", "", None, f"<= {target}", "n/a"), None
    # A data directory of its own: a server on the memory queue would run every job left queued in it.
    data_dir = workdir / "data-accept"
    data = seed.png_looking_blob()
    detail, _ = asyncio.run(
        seed.seed_sqlite_image(data_dir, seed.new_image(data, prompt="bench: accept latency"), data)
    )
    queue = rabbitmq.new_queue_name("accept")
    env = pixyproxy_env(data_dir, **rabbitmq_env(settings, queue))
    try:
        with running("pixyproxy-accept", PIXYPROXY_APP, env=env, log_dir=workdir) as pixy:
            check_accepts(pixy)
            post_url, get_url = pixy.base_url + "/image", f"{pixy.base_url}/image/{detail.guid}"
            log("figure 6: POST /image with Prefer: respond-async vs GET /image/{guid}, one server")
            runs = Comparison(subject=[], baseline=[])
            for _ in range(settings.rounds):
                runs.baseline.append(steady(get_url, settings, concurrency=settings.latency_concurrency))
                runs.subject.append(
                    steady(post_url, settings, concurrency=settings.latency_concurrency, request=ACCEPT)
                )
            figure = latency_figure(
                key, title, runs, target=target, subject_label="POST 202", baseline_label="GET"
            )
            with httpx.Client(base_url=pixy.base_url, timeout=30) as client:
                ran = sum(count_with_status(client, s) for s in ("running", "succeeded", "failed"))
            queued = rabbitmq.queue_depth(settings.amqp_url, queue)
            figure.details.update(queue_depth=queued, jobs_run=ran)
            p99 = {side: runs.median(side, "p99_ms") for side in ("subject", "baseline")}
            figure.note = "; ".join(
                filter(
                    None,
                    [
                        f"p99 {p99['subject']:.2f} vs {p99['baseline']:.2f} ms; {queued:,} jobs accepted"
                        f" onto a throwaway queue, {ran} run (PIXYPROXY_JOB_QUEUE=rabbitmq)",
                        figure.note,
                    ],
                )
            )
            if figure.verdict == "MISS" and settings.profile:
                log(f"{key} missed its target: profiling {pixy.name} on POST, then on GET")
                figure.details["profile"] = profile_during(pixy, post_url, settings, workdir, request=ACCEPT)
                figure.details["baseline_profile"] = profile_during(pixy, get_url, settings, workdir)
            rss = pixy.peak_rss_bytes()
    finally:
        rabbitmq.delete_queues(settings.amqp_url, *rabbitmq.queues_of(queue))
        shutil.rmtree(data_dir, ignore_errors=True)
    return figure, rss


# --- figure 7: jobs finished per second, two workers against one -----------------------------------------

JOBS = 80
WORKER_CONCURRENCY = 4
SUBMIT_CONCURRENCY = 8
JOBS_TIMEOUT_S = 60
BROKER_DROPPED = "Unexpected connection close"  # what aiormq logs when the broker drops a connection
RECONNECT_MARGIN_S = 10  # a drop this long before a run still costs it the reconnection


async def submit_jobs(base_url: str, count: int, *, prefix: str) -> list[str]:
    """POST `count` async jobs, `SUBMIT_CONCURRENCY` at a time; their ids."""
    slots = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    limits = httpx.Limits(max_connections=SUBMIT_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:

        async def one(i: int) -> str:
            async with slots:
                response = await client.post(
                    "/image", json={"prompt": f"{prefix}, job {i}"}, headers=dict(ACCEPT.headers)
                )
            if response.status_code != 202:
                raise RuntimeError(f"job {i} was not accepted: {response.status_code} {response.text}")
            return str(response.json()["id"])

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def wait_until_idle(client: httpx.Client, *, deadline: float) -> bool:
    """Poll until no job is queued or running; False if the deadline passed first."""
    while time.monotonic() < deadline:
        if not any(count_with_status(client, status) for status in ("queued", "running")):
            return True
        time.sleep(0.05)
    return False


def run_jobs(api: Server, fake: FakeOpenAI, count: int, *, prefix: str) -> dict[str, Any]:
    """Submit `count` async jobs and wait until they have finished.

    The rate runs from the first job's `created_at` (the API node) to the last one's `finished_at`
    (a worker): both written by PixyProxy on this machine's clock, so the polling interval adds nothing.
    """
    fake.reset()
    fake.set_mode("ok", delay_s=UPSTREAM_DELAY_S)
    started, started_at = time.monotonic(), time.time()
    ids = asyncio.run(submit_jobs(api.base_url, count, prefix=prefix))
    submit_s = time.monotonic() - started
    with httpx.Client(base_url=api.base_url, timeout=30) as client:
        idle = wait_until_idle(client, deadline=started + JOBS_TIMEOUT_S)
        wall_s = time.monotonic() - started
        jobs = [client.get(f"/jobs/{job_id}").json() for job_id in ids]
    upstream = fake.stats()
    statuses = Counter(str(job["status"]) for job in jobs)
    created = [datetime.fromisoformat(job["created_at"]) for job in jobs]
    finished = [datetime.fromisoformat(job["finished_at"]) for job in jobs if job["finished_at"]]
    span_s = (max(finished) - min(created)).total_seconds() if finished else wall_s
    succeeded = statuses.get("succeeded", 0)
    return {
        "jobs": count,
        "started_at": started_at,
        "ended_at": time.time(),
        "statuses": dict(statuses),
        "timed_out": not idle,
        "submit_s": submit_s,
        "wall_s": wall_s,
        "span_s": span_s,
        "jobs_per_s": succeeded / span_s if span_s > 0 else 0.0,
        "upstream_requests": upstream["requests"],
        "upstream_max_in_flight": upstream["max_in_flight"],
        # What Comparison.clean reads: every job accepted (or submit_jobs raised), every job succeeded.
        "requests": count,
        "non_2xx_3xx": count - succeeded,
        "transport_errors": 0,
    }


def job_throughput_figure(settings: Settings, workdir: Path) -> tuple[Figure, int | None]:
    """Figure 7: jobs finished per second by two `pixyproxy worker`s against one, upstream at 500 ms.

    One API server (PIXYPROXY_JOB_QUEUE=rabbitmq, a fresh queue) accepts; workers with
    `--concurrency 4` run the jobs against the fake OpenAI upstream, all on one MariaDB database
    (created and dropped here), or on one SQLite file shared by every process when MariaDB is not there.
    At 4 jobs at once and 500 ms each, one worker can finish at most 8 jobs/s and two at most 16, few
    enough that the 2 cores this runs on do not cap the second worker before the upstream does.
    """
    key, target = "7-jobs", 1.8
    title = f"{JOBS} async jobs/s, upstream {UPSTREAM_DELAY_S * 1000:.0f} ms, 2 workers / 1"
    why = rabbitmq.reachable(settings.amqp_url)
    if why is not None:
        return Figure(key, title, f"n/a (RabbitMQ unreachable: {why})", "", None, f">= {target}", "n/a"), None
    data_dir = workdir / "data-jobs"
    queue = rabbitmq.new_queue_name("jobs")
    mysql_why = mariadb.reachable(settings.mysql_url)
    db_url: str | None = None
    if mysql_why is None:
        db_url = mariadb.url_with_database(
            settings.mysql_url, parse_mysql_url(settings.mysql_url).database + "_jobs"
        )
        mariadb.drop_database(db_url)
        asyncio.run(init_schema(db_url))
        store_env = {"PIXYPROXY_REPOSITORY": "mysql", "PIXYPROXY_MYSQL_URL": db_url}
        store = "on MariaDB"
    else:
        store_env = {}
        store = f"on SQLite shared by every process (MariaDB unreachable: {mysql_why})"
    try:
        with running_fake_openai(workdir / "fake-openai-jobs.log") as fake:
            upstream = openai_env(fake, api_key="sk-bench-not-a-secret", timeout_s=30, max_retries=0)
            env = pixyproxy_env(data_dir, **store_env, **upstream, **rabbitmq_env(settings, queue))
            comparison, details, rss = _measure_jobs(settings, workdir, env, fake)
    finally:
        rabbitmq.delete_queues(settings.amqp_url, *rabbitmq.queues_of(queue))
        if db_url is not None:
            mariadb.drop_database(db_url)
        shutil.rmtree(data_dir, ignore_errors=True)
    figure = ratio_figure(
        key, title, comparison, metric="jobs_per_s", unit="jobs/s", target=target, fmt=lambda v: f"{v:.1f}"
    )
    figure.measured += " (2 workers)"
    figure.baseline += " (1 worker)"
    ceiling = WORKER_CONCURRENCY / UPSTREAM_DELAY_S

    def peak(side: str) -> int:
        runs = comparison.subject if side == "subject" else comparison.baseline
        return max(int(run["upstream_max_in_flight"]) for run in runs)

    disturbed = sum(1 for run in [*comparison.baseline, *comparison.subject] if run["broker_drops"])
    figure.note = "; ".join(
        filter(
            None,
            [
                f"{store}; --concurrency {WORKER_CONCURRENCY} per worker, so at most {ceiling:.0f} jobs/s"
                f" per worker; upstream peak in flight {peak('baseline')} (1 worker),"
                f" {peak('subject')} (2 workers)",
                "some jobs did not succeed: see details" if not comparison.clean() else "",
                f"disturbed: the broker dropped workers' connections during {disturbed} of the"
                f" {2 * settings.rounds} runs (see details)"
                if disturbed
                else "",
            ],
        )
    )
    figure.details.update(details)
    return figure, rss


def _measure_jobs(
    settings: Settings, workdir: Path, env: dict[str, str], fake: FakeOpenAI
) -> tuple[Comparison, dict[str, Any], int | None]:
    """Alternate rounds: `JOBS` jobs with one worker, then with a second one started beside it."""
    # start_worker waits for the worker's "worker ready" line, logged at INFO.
    worker_env = {**env, "PIXYPROXY_LOG_LEVEL": "INFO"}
    comparison = Comparison(subject=[], baseline=[])
    warmups: list[dict[str, Any]] = []
    worker_rss: list[int | None] = []
    with (
        running("pixyproxy-jobs-api", PIXYPROXY_APP, env=env, log_dir=workdir) as api,
        contextlib.ExitStack() as stack,
    ):
        log(f"figure 7: {settings.rounds} x {JOBS} async jobs, with one worker and with two")
        first = start_worker(worker_env, workdir / "job-worker-1.log", concurrency=WORKER_CONCURRENCY)
        stack.callback(first.stop)
        # A worker's first jobs open its connections (database, broker, upstream): not part of the figure.
        warmups.append(run_jobs(api, fake, 2 * WORKER_CONCURRENCY, prefix="warm-up, one worker"))
        for round_ in range(1, settings.rounds + 1):
            comparison.baseline.append(run_jobs(api, fake, JOBS, prefix=f"round {round_}, one worker"))
            log_path = workdir / f"job-worker-2-round-{round_}.log"  # a fresh log: "worker ready" is new
            second = start_worker(worker_env, log_path, concurrency=WORKER_CONCURRENCY)
            try:
                warmups.append(run_jobs(api, fake, 2 * WORKER_CONCURRENCY, prefix="warm-up, two workers"))
                comparison.subject.append(run_jobs(api, fake, JOBS, prefix=f"round {round_}, two workers"))
                worker_rss.append(peak_rss_bytes(second.process.pid))
            finally:
                second.stop()
        worker_rss.append(peak_rss_bytes(first.process.pid))
        rss = api.peak_rss_bytes()
    drops = broker_drops(workdir)
    for run in [*comparison.baseline, *comparison.subject]:
        run["broker_drops"] = sum(
            run["started_at"] - RECONNECT_MARGIN_S <= t <= run["ended_at"] for t in drops
        )
    details = {"warmups": warmups, "worker_peak_rss_bytes": worker_rss, "peak_rss_bytes": rss}
    return comparison, details, rss


def broker_drops(workdir: Path) -> list[float]:
    """When (epoch seconds) a job worker logged that the broker dropped its connection.

    Another client closing every connection (the project's own RabbitMQ tests do, on a shared broker)
    costs each worker a reconnection of several seconds: a run measured across one says little.
    """
    times = []
    for path in sorted(workdir.glob("job-worker-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if BROKER_DROPPED in line:
                with contextlib.suppress(ValueError):  # the text log format starts with the local time
                    times.append(datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return times


# --- figure 9: DELETE /image/{guid}, against GET /image/{guid} on the same server -------------------------

DELETE = drive.Request(method="DELETE")
DELETE_IMAGES = 200  # per side and round: each DELETE and each GET touches an image no request has
DELETE_WARMUP = 20
DELETE_BLOB_BYTES = 4096


def check_deleted(server: Server, guids: list[str], blob_dir: Path) -> None:
    """Deleted images must be gone from the API and the disk, or the figure priced something else."""
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for guid in guids[:5]:
            for path in (f"/image/{guid}", f"/image/{guid}/content"):
                status = client.get(path).status_code
                if status != 404:
                    raise RuntimeError(f"{server.name}: {path} answered {status} after its DELETE")
    left = {path.stem for path in blob_dir.rglob("*") if path.is_file()}
    if left & set(guids):
        raise RuntimeError(f"{server.name}: {len(left & set(guids))} deleted images' files are still on disk")


def delete_latency_figure(settings: Settings, workdir: Path) -> tuple[Figure, int | None]:
    """Figure 9: p50 of DELETE /image/{guid} against p50 of GET /image/{guid}, on the embedded default.

    Small images (4 KiB) are seeded through the SQLite and local-disk adapters before the server
    starts, so no record is cached in it. Each round GETs `DELETE_IMAGES` of them and DELETEs as many
    others, every request on an image no request has touched: both sides read the record from SQLite
    once (the delete looks the image up first), and the ratio prices what a delete adds to a read
    (removing the file and the thumbnails' files, deleting the row and its FTS5 entry, the commit).
    Both go through bench.load's `each` mode at 4 connections: a DELETE can be sent once per image,
    which a fixed-duration load cannot do. No target: the issue sets none.
    """
    key, title = "9-delete", "DELETE /image/{guid} p50, vs GET /image/{guid}"
    data_dir = workdir / "data-delete"
    per_round = 2 * DELETE_IMAGES
    guids = asyncio.run(
        seed.seed_sqlite_images(
            data_dir,
            2 * DELETE_WARMUP + settings.rounds * per_round,
            size=DELETE_BLOB_BYTES,
            prompt="bench: an image to delete",
        )
    )
    try:
        with running("pixyproxy-delete", PIXYPROXY_APP, env=pixyproxy_env(data_dir), log_dir=workdir) as pixy:

            def urls(batch: list[str]) -> list[str]:
                return [f"{pixy.base_url}/image/{guid}" for guid in batch]

            log(f"figure 9: {settings.rounds} x {DELETE_IMAGES} DELETE /image/{{guid}} and as many GETs")
            concurrency = settings.latency_concurrency
            warmups = [
                drive.each(urls(guids[:DELETE_WARMUP]), concurrency=concurrency),
                drive.each(
                    urls(guids[DELETE_WARMUP : 2 * DELETE_WARMUP]), concurrency=concurrency, request=DELETE
                ),
            ]
            runs = Comparison(subject=[], baseline=[])
            deleted = guids[DELETE_WARMUP : 2 * DELETE_WARMUP]
            for round_ in range(settings.rounds):
                first = 2 * DELETE_WARMUP + round_ * per_round
                read, gone = (
                    guids[first : first + DELETE_IMAGES],
                    guids[first + DELETE_IMAGES : first + per_round],
                )
                runs.baseline.append(drive.each(urls(read), concurrency=concurrency))
                runs.subject.append(drive.each(urls(gone), concurrency=concurrency, request=DELETE))
                deleted.extend(gone)
            check_deleted(pixy, deleted, seed.blob_root(data_dir))
            rss = pixy.peak_rss_bytes()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    figure = latency_figure(
        key, title, runs, target=3.0, subject_label="DELETE 204", baseline_label="GET, uncached"
    )
    p99 = {side: runs.median(side, "p99_ms") for side in ("subject", "baseline")}
    figure.target, figure.verdict = "report only", "info" if runs.clean() else "MISS"
    figure.note = "; ".join(
        filter(
            None,
            [
                f"p99 {p99['subject']:.2f} vs {p99['baseline']:.2f} ms; {DELETE_IMAGES} of each a round, on"
                f" images seeded beforehand ({DELETE_BLOB_BYTES // 1024} KiB), each touched once; SQLite +"
                " local disk",
                figure.note,
            ],
        )
    )
    figure.details.update(warmups=warmups, deleted=len(deleted))
    return figure, rss


# --- figure 5 and the report ------------------------------------------------------------------------------


RSS_TARGET_MIB = 150


def rss_figure(rss: dict[str, int | None]) -> Figure:
    """Figure 5: the highest peak RSS of the PixyProxy workers the run started, at most 150 MiB;
    the ratio is to the bare FastAPI baseline's, when figures 1 and 2 ran."""
    pixy = [value for name, value in rss.items() if name.startswith("pixyproxy") and value]
    base = rss.get("baseline")
    peak = max(pixy) if pixy else None
    measured = f"{peak / MIB:,.0f} MiB" if peak else "n/a"
    return Figure(
        "5-rss",
        "peak RSS of one PixyProxy worker (VmHWM)",
        measured,
        f"{base / MIB:,.0f} MiB" if base else "n/a",
        peak / base if peak and base else None,
        f"<= {RSS_TARGET_MIB} MiB",
        "n/a" if peak is None else "PASS" if peak <= RSS_TARGET_MIB * MIB else "MISS",
        note=", ".join(f"{k} {v / MIB:,.0f} MiB" for k, v in rss.items() if v),
        details={"peak_rss_bytes": rss},
    )


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    free = subprocess.run(["free", "-h"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "free_h": free,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_generator": drive.load_tool(),
        "wrk": shutil.which("wrk"),
    }


def table(figures: list[Figure]) -> str:
    """The figures as a fixed-width text table."""
    rows = [("#", "figure", "PixyProxy", "baseline", "ratio", "target", "result")]
    for f in figures:
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else "-"
        rows.append((f.key, f.title, f.measured, f.baseline, ratio, f.target, f.verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {f.key}: {f.note}" for f in figures if f.note]
    return "\n".join(lines + (["", "notes:", *notes] if notes else []))


def profiles_text(figures: list[Figure]) -> str:
    """The hottest frames of every profile taken on a miss, PixyProxy's beside the baseline's packages."""
    parts = []
    for f in figures:
        profile = f.details.get("profile")
        if not profile:
            continue
        parts.append(f"profile of {f.key} ({profile['samples']} samples, {profile['raw']})")
        parts.append("  top own time:")
        parts.extend(f"    {row['pct']:5.1f}%  {row['frame']}" for row in profile["top_own"][:10])
        parts.append("  PixyProxy frames and thread hand-offs, inclusive:")
        parts.extend(f"    {row['pct']:5.1f}%  {row['frame']}" for row in profile["top_inclusive"][:10])
        baseline = f.details.get("baseline_profile")
        if baseline:
            theirs = {row["frame"]: row["pct"] for row in baseline["own_by_package"]}
            parts.append("  own time by package (PixyProxy | baseline):")
            parts.extend(
                f"    {row['pct']:5.1f}% | {theirs.get(row['frame'], 0.0):5.1f}%  {row['frame']}"
                for row in profile["own_by_package"][:10]
            )
        else:
            parts.append("  own time by package:")
            parts.extend(f"    {row['pct']:5.1f}%  {row['frame']}" for row in profile["own_by_package"][:10])
    return "\n".join(parts)


def main() -> int:
    """Run every figure, print the table, write bench/results.json."""
    settings = Settings()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="pixyproxy-bench-"))
    log(f"load generator: {drive.load_tool()}; work dir {workdir}; {public_settings(settings)}")
    refused = [key for key in NEEDS_WRK if settings.wanted(key) and key in settings.refused]
    if refused:
        log(f"wrk is missing: {', '.join(refused)} will not run; install it with `{HOW_TO_INSTALL_WRK}`")
    seeded = seed_image(workdir)
    figures: list[Figure] = []
    rss: dict[str, int | None] = {}
    if settings.selected("1-sqlite", "1-info-vs-warning", "2-content"):
        figures, rss = embedded_figures(settings, workdir, seeded)
    if settings.selected("2-offload"):
        from bench import offload  # here: it imports this module's helpers

        offloaded = offload.offload_figure(settings, workdir, seeded)
        figures.append(offloaded)
        rss["pixyproxy-offload"] = offloaded.details.get("peak_rss_bytes")
    more: list[Figure] = []
    if settings.selected(*(key for key, _, _ in MYSQL_KEYS)):
        more, more_rss = mysql_figures(settings, workdir, seeded)
        rss.update(more_rss)
    figures[1:1] = [f for f in more if f.key == "1-mariadb"]  # beside figure 1 on SQLite
    if settings.selected("3-generate"):
        fig3 = generate_burst_figure(settings, workdir)
        figures.append(fig3)
        rss["pixyproxy-openai"] = fig3.details.get("peak_rss_bytes")
    from bench import generation  # here: it imports this module's helpers

    if settings.selected("3-cpu"):
        cpu, cpu_rss = generation.generate_cpu_figure(settings, workdir)
        figures.append(cpu)
        rss.update(cpu_rss)
    figures.extend(f for f in more if f.key != "1-mariadb")
    if settings.selected("4-generate-p50"):
        latency, latency_rss = generation.generate_latency_figure(settings, workdir)
        figures.append(latency)
        rss.update(latency_rss)
    later: list[Figure] = []
    if settings.selected("6-accept"):
        accept, rss["pixyproxy-accept"] = accept_latency_figure(settings, workdir)
        later.append(accept)
    if settings.selected("7-jobs"):
        jobs, rss["pixyproxy-jobs-api"] = job_throughput_figure(settings, workdir)
        later.append(jobs)
    if settings.selected("9-delete"):
        delete, rss["pixyproxy-delete"] = delete_latency_figure(settings, workdir)
        later.append(delete)
    if settings.selected("5-rss"):
        figures.append(rss_figure(rss))
    figures = [f for f in figures + later if settings.selected(f.key)]
    figures.extend(
        Figure(key, "measured with wrk only", f"n/a (needs wrk: {HOW_TO_INSTALL_WRK})", "", None, "", "n/a")
        for key in refused
    )
    elapsed = time.monotonic() - started
    report = table(figures)
    print(report)
    if refused:
        print(
            f"\nwrk is not installed: {', '.join(refused)} not measured. Their throughput (and the p50 of a"
            " steady load) from the httpx fallback would pull every ratio towards 1, so none is printed."
            f" Install wrk (`{HOW_TO_INSTALL_WRK}`, as root) and run `make bench` again."
        )
    profiles = profiles_text(figures)
    if profiles:
        print("\n" + profiles)
    print(f"\n{len(figures)} figures in {elapsed:.0f} s; load generator {drive.load_tool()}; "
          f"results in {RESULTS_PATH.relative_to(REPO_ROOT)}")  # fmt: skip
    RESULTS_PATH.write_text(
        json.dumps(
            {
                "machine": machine(),
                "settings": public_settings(settings),
                "elapsed_s": elapsed,
                "table": report,
                "figures": [asdict(f) for f in figures],
            },
            indent=2,
        )
    )
    shutil.rmtree(workdir / "data", ignore_errors=True)
    return 1 if refused else 0  # figures were asked for and not measured


if __name__ == "__main__":
    sys.exit(main())
