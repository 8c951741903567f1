"""The `pixyproxy` command: serve, worker, init-db, generate, gc.

This module imports the container (and so every SDK) only when a command runs: with
`--workers N` each worker process re-imports the command's module before it can answer
uvicorn's 5-second health ping, and a slow import there gets the worker killed at start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pixyproxy.entrypoints.container import Container
    from pixyproxy.entrypoints.settings import HttpSettings

EXIT_CONFIG = 2
EXIT_FAILED = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixyproxy", description="PixyProxy image service")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    worker = commands.add_parser("worker", help="run generation jobs from the broker's queue")
    worker.add_argument("--concurrency", type=int, default=8, help="jobs run at once (default 8)")
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve this worker's /metrics on this port (default: none)",
    )
    worker.add_argument("--metrics-host", default="127.0.0.1", help="the address /metrics listens on")
    commands.add_parser("init-db", help="create the repository's schema (idempotent)")
    generate = commands.add_parser("generate", help="generate one image and print its detail as JSON")
    generate.add_argument("prompt")
    generate.add_argument("--size", default=None)
    gc = commands.add_parser(
        "gc", help="report bytes with no record and records with no bytes; --delete removes orphan bytes"
    )
    gc.add_argument("--delete", action="store_true", help="delete orphan bytes older than the grace period")
    gc.add_argument("--grace-minutes", type=float, default=60.0, help="minimum age of bytes to delete")
    gc.add_argument(
        "--forget-missing",
        action="store_true",
        help="delete records whose bytes are gone (a delete interrupted between its two steps)",
    )
    delete = commands.add_parser("delete", help="delete images: their bytes, then their records")
    delete.add_argument("guids", nargs="+", metavar="GUID")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit 2 with one line on a configuration error."""
    args = _parser().parse_args(argv)
    from pixyproxy.domain.exceptions import ConfigurationError, ImageGenerationException
    from pixyproxy.entrypoints.container import build_container
    from pixyproxy.entrypoints.logging_setup import configure_logging

    try:
        container = build_container()
        settings = container.settings()
        configure_logging(settings.logging.level, settings.logging.format)
        if args.command == "serve":
            return _serve(container, args, settings.http)
        if args.command == "worker":
            from pixyproxy.entrypoints.worker import configure_worker, run_worker

            configure_worker(container, concurrency=args.concurrency)
            metrics_at = (args.metrics_host, args.metrics_port) if args.metrics_port else None
            return asyncio.run(run_worker(container, concurrency=args.concurrency, metrics_at=metrics_at))
        if args.command == "init-db":
            return asyncio.run(_init_db(container))
        if args.command == "generate":
            return asyncio.run(_generate(container, args.prompt, args.size))
        if args.command == "gc":
            return asyncio.run(
                _gc(
                    container,
                    delete=args.delete,
                    grace_minutes=args.grace_minutes,
                    forget_missing=args.forget_missing,
                )
            )
        if args.command == "delete":
            return asyncio.run(_delete(container, args.guids))
    except ConfigurationError as err:
        print(f"pixyproxy: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except ImageGenerationException as err:
        print(f"pixyproxy: {err}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED


def _serve(container: Container, args: argparse.Namespace, http: HttpSettings) -> int:
    import uvicorn

    from pixyproxy.entrypoints.metrics import shared_between_workers

    # uvicorn reports a failed lifespan as a stack trace and exit 3; checking the adapters here
    # first turns a missing bucket (say) into one line and exit 2. The app repeats it per worker.
    asyncio.run(_check_adapters(container))
    # Once it has shut down gracefully, uvicorn raises the SIGTERM or SIGINT that stopped it again,
    # for whatever handler was there before it. The default one would kill the process (status
    # -15, or a KeyboardInterrupt trace) after the work was done; a clean stop exits 0 instead.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _stopped)
    with shared_between_workers(args.workers):
        uvicorn.run(
            # Each worker process builds the app through this factory, which sets up logging there.
            "pixyproxy.entrypoints.http.app:create_served_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers if args.workers > 1 else None,
            reload=args.reload,
            log_config=None,
            access_log=False,
            server_header=False,
            # uvicorn would believe X-Forwarded-Proto/-For from 127.0.0.1 and rewrite the client's
            # address; the app decides whom to believe (PIXYPROXY_TRUSTED_PROXIES), from the real peer.
            proxy_headers=False,
            # A client reuses an idle pooled connection until its own expiry (httpx: 5 s, load
            # balancers: often 60 s). A server that closes first races the client's next request,
            # which is then reset; so the server keeps idle connections open longer than they do.
            timeout_keep_alive=math.ceil(http.keep_alive_s),
            # On SIGTERM uvicorn stops accepting, then waits this long for requests in flight
            # (a generation can take a minute) before the lifespan closes the pools.
            timeout_graceful_shutdown=math.ceil(http.shutdown_grace_s),
        )
    return 0


def _stopped(signum: int, frame: FrameType | None) -> None:
    """Absorb the stop signal uvicorn raises again after a graceful shutdown."""


async def _check_adapters(container: Container) -> None:
    from pixyproxy.entrypoints.container import adapters_open

    async with adapters_open(container):
        pass


async def _init_db(container: Container) -> int:
    repository = container.selected_repository()
    # Repositories with an explicit schema step (mysql) run it; the others create theirs on open.
    create_schema = getattr(repository, "create_schema", None)
    try:
        version = await create_schema() if create_schema is not None else None
        await repository.ping()
    finally:
        await repository.close()
    suffix = f", schema version {version}" if version is not None else ""
    print(f"schema ready ({container.config.repository.kind()}{suffix})")
    return 0


async def _generate(container: Container, prompt: str, size: str | None) -> int:
    from pixyproxy.entrypoints.container import adapters_open

    async with adapters_open(container):
        # A job like any other (listed by GET /jobs); with a broker, a worker makes the image.
        detail = await container.job_service().generate_now({"prompt": prompt, "size": size})
    print(json.dumps(detail.model_dump(mode="json"), indent=2, ensure_ascii=False))
    return 0


async def _delete(container: Container, guids: list[str]) -> int:
    """Delete each image in turn; an unknown or malformed GUID is reported and the others still go."""
    from pixyproxy.domain.exceptions import ImageNotFoundError, InvalidRequestError
    from pixyproxy.entrypoints.container import adapters_open

    failed = 0
    async with adapters_open(container):
        service = container.image_service()
        for guid in guids:
            try:
                await service.delete(guid)
            except (ImageNotFoundError, InvalidRequestError) as err:
                print(f"pixyproxy: {guid}: {err}", file=sys.stderr)
                failed += 1
            else:
                print(f"deleted {guid}")
    return EXIT_FAILED if failed else 0


async def _gc(
    container: Container, *, delete: bool, grace_minutes: float, forget_missing: bool = False
) -> int:
    from pixyproxy.app.maintenance import GarbageCollector
    from pixyproxy.domain.models import utc_now
    from pixyproxy.entrypoints.container import close_adapters

    collector = GarbageCollector(repository=container.repository(), blob_store=container.blob_store())
    try:
        report = await collector.collect(
            now=utc_now(),
            grace=timedelta(minutes=grace_minutes),
            delete=delete,
            forget_missing=forget_missing,
        )
        purged_jobs = await container.job_service().purge()
        retention = timedelta(seconds=container.config.jobs.retention_s())
        purged_deliveries = await container.webhook_service().purge(older_than=utc_now() - retention)
    finally:
        await close_adapters(container)
    summary = {
        "records": report.records,
        "blobs": report.blobs,
        "orphan_blobs": [b.key for b in report.orphan_blobs],
        "missing_blobs": [{"guid": str(g), "filename": f} for g, f in report.missing_blobs],
        "deleted": report.deleted,
        "forgotten_records": [str(guid) for guid in report.forgotten],
        "kept_younger_than_grace": report.kept_young,
        "purged_jobs": purged_jobs,
        "purged_webhook_deliveries": purged_deliveries,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
