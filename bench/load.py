"""An async httpx load generator, run as its own process so that it never shares a core's loop with a server.

Two modes, each printing one JSON object on standard output:

- steady: `--concurrency` workers send requests back to back for `--warmup` then `--duration` seconds;
  only requests completed inside the measured window count. Reports requests/s, MiB/s, p50/p99 latency.
- burst: `--burst N` requests are sent at once; reports the wall time until the last one answered.
- each: `--urls-file FILE` sends one request to each URL of the file (one a line), `--concurrency` at
  a time, and measures every one: for requests that can be sent only once (a DELETE) or that take
  too long for a fixed window. Reports what steady does, over the wall time of the whole list.

    python -m bench.load http://127.0.0.1:8000/image/<guid> --concurrency 32 --duration 5 --warmup 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin

import httpx

MIB = 1024 * 1024
T = TypeVar("T")


def run_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where installed (uvicorn[standard] brings it): the generator's own loop costs less."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of already sorted values; 0.0 for none."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _clients(count: int) -> list[httpx.AsyncClient]:
    """One single-connection client per worker, sharing one TLS context.

    One shared pool of many connections serialises on httpcore's pool bookkeeping (measured here:
    ~120 req/s at 32 connections against ~550 req/s for 32 clients), and every client building
    its own TLS context costs tens of milliseconds: so build them once, before any clock starts.
    """
    tls = ssl.create_default_context()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return [httpx.AsyncClient(verify=tls, limits=limits, timeout=httpx.Timeout(60.0)) for _ in range(count)]


async def _close(clients: list[httpx.AsyncClient]) -> None:
    await asyncio.gather(*(client.aclose() for client in clients))


async def steady(
    url: str,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Keep `concurrency` requests in flight; measure the window after the warm-up."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    transport_errors = 0
    received = 0
    clients = _clients(concurrency)
    loop_start = time.perf_counter()
    window_start = loop_start + warmup_s
    window_end = window_start + duration_s

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal transport_errors, received
        while True:
            started = time.perf_counter()
            if started >= window_end:
                return
            try:
                response = await client.request(method, url, content=body, headers=headers)
                size = len(response.content)
            except httpx.HTTPError:
                if started >= window_start:
                    transport_errors += 1
                continue
            finished = time.perf_counter()
            # Count requests wholly inside the window, so warm-up and tail do not leak in.
            if started >= window_start and finished <= window_end:
                latencies.append(finished - started)
                statuses[response.status_code] += 1
                received += size

    try:
        await asyncio.gather(*(worker(client) for client in clients))
    finally:
        await _close(clients)

    latencies.sort()
    count = len(latencies)
    ok = sum(n for status, n in statuses.items() if 200 <= status < 400)
    return {
        "tool": "httpx",
        "mode": "steady",
        "url": url,
        "method": method,
        "concurrency": concurrency,
        "duration_s": duration_s,
        "requests": count,
        "non_2xx_3xx": count - ok,
        "transport_errors": transport_errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "requests_per_s": count / duration_s,
        "mib_per_s": received / MIB / duration_s,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


async def each(
    urls: Sequence[str],
    *,
    concurrency: int,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Send one request to each of `urls`, `concurrency` at a time, in order; measure them all."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    transport_errors = 0
    received = 0
    pending = iter(urls)
    clients = _clients(concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal transport_errors, received
        for url in pending:  # one shared iterator: each URL is taken by exactly one worker
            started = time.perf_counter()
            try:
                response = await client.request(method, url, content=body, headers=headers)
            except httpx.HTTPError:
                transport_errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] += 1
            received += len(response.content)

    wall_start = time.perf_counter()
    try:
        await asyncio.gather(*(worker(client) for client in clients))
    finally:
        wall_s = time.perf_counter() - wall_start
        await _close(clients)
    latencies.sort()
    count = len(latencies)
    ok = sum(n for status, n in statuses.items() if 200 <= status < 400)
    return {
        "tool": "httpx",
        "mode": "each",
        "url": urls[0] if urls else "",
        "method": method,
        "concurrency": concurrency,
        "duration_s": wall_s,
        "requests": count,
        "non_2xx_3xx": count - ok,
        "transport_errors": transport_errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "requests_per_s": count / wall_s if wall_s > 0 else 0.0,
        "mib_per_s": received / MIB / wall_s if wall_s > 0 else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


async def burst(
    url: str,
    *,
    count: int,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    preconnect: str | None = None,
) -> dict[str, Any]:
    """Send `count` requests at the same moment; report the wall time until the last answer.

    With `preconnect` (a path on the same server), every client first GETs it, so that the
    burst measures requests on open connections rather than `count` simultaneous TCP handshakes.
    """
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    clients = _clients(count)
    gate = asyncio.Event()
    if preconnect is not None:
        await asyncio.gather(*(client.get(urljoin(url, preconnect)) for client in clients))

    async def one(client: httpx.AsyncClient) -> None:
        await gate.wait()
        started = time.perf_counter()
        try:
            response = await client.request(method, url, content=body, headers=headers)
            statuses[response.status_code] += 1
        except httpx.HTTPError:
            statuses[0] += 1  # 0: no HTTP answer at all
        latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(one(client)) for client in clients]
    await asyncio.sleep(0)  # let every task reach the gate before the clock starts
    wall_start = time.perf_counter()
    gate.set()
    try:
        await asyncio.gather(*tasks)
    finally:
        wall_s = time.perf_counter() - wall_start
        await _close(clients)
    latencies.sort()
    return {
        "tool": "httpx",
        "mode": "burst",
        "url": url,
        "count": count,
        "wall_s": wall_s,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=None, help="the URL (not with --urls-file)")
    parser.add_argument("--urls-file", default=None, help="one request to each URL of this file instead")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default=None, help="request body (sent as application/json)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--burst", type=int, default=0, help="send this many requests at once instead")
    parser.add_argument("--preconnect", default=None, help="burst: a path each client GETs first")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one load and print its result as JSON."""
    args = _parser().parse_args(argv)
    body = args.body.encode() if args.body is not None else None
    headers = dict(header.split(": ", 1) for header in args.header)
    if body is not None:
        headers.setdefault("content-type", "application/json")
    if args.urls_file is not None:
        urls = [line.strip() for line in Path(args.urls_file).read_text().splitlines() if line.strip()]
        result = run_loop(
            each(urls, concurrency=args.concurrency, method=args.method, body=body, headers=headers)
        )
    elif args.url is None:
        raise SystemExit("a URL, or --urls-file, is needed")
    elif args.burst > 0:
        result = run_loop(
            burst(
                args.url,
                count=args.burst,
                method=args.method,
                body=body,
                headers=headers,
                preconnect=args.preconnect,
            )
        )
    else:
        result = run_loop(
            steady(
                args.url,
                concurrency=args.concurrency,
                duration_s=args.duration,
                warmup_s=args.warmup,
                method=args.method,
                body=body,
                headers=headers,
            )
        )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
