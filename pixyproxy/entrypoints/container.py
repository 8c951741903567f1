"""The dependency-injector container: binds one adapter per port from containers.yml.

This module, with the entrypoints, is the only place that names concrete adapters.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from dependency_injector import containers, providers

from pixyproxy.adapters.local_disk import LocalDiskBlobStore
from pixyproxy.adapters.memory import (
    InMemoryBlobStore,
    InMemoryImageGenerator,
    InMemoryImageRepository,
)
from pixyproxy.adapters.memory_jobs import InMemoryJobQueue, InMemoryJobRepository
from pixyproxy.adapters.memory_webhooks import InMemoryWebhookDeliveries
from pixyproxy.adapters.mysql import MySqlImageRepository, MySqlJobRepository, MySqlWebhookDeliveries
from pixyproxy.adapters.openai_images import OpenAIImageGenerator
from pixyproxy.adapters.procedural import ProceduralImageGenerator
from pixyproxy.adapters.quota_limits import LimitsQuotaGate, limits_storage
from pixyproxy.adapters.rabbitmq import RabbitMqJobQueue
from pixyproxy.adapters.s3 import S3BlobStore
from pixyproxy.adapters.sqlite import SqliteImageRepository
from pixyproxy.adapters.sqlite_jobs import SqliteJobRepository
from pixyproxy.adapters.sqlite_webhooks import SqliteWebhookDeliveries
from pixyproxy.adapters.webhook_http import HttpWebhookSender
from pixyproxy.app.bounded import BoundedImageGenerator
from pixyproxy.app.caching import CachedImageRepository
from pixyproxy.app.health import ReadinessChecker
from pixyproxy.app.jobs import JobService, JobTiming
from pixyproxy.app.service import ImageService
from pixyproxy.app.webhooks import WebhookService
from pixyproxy.domain.exceptions import (
    BlobStoreUnavailableError,
    GeneratorUnavailableError,
    JobQueueUnavailableError,
    RepositoryUnavailableError,
)
from pixyproxy.entrypoints.job_documents import JobDocuments
from pixyproxy.entrypoints.metrics import (
    JobMetrics,
    MeteredBlobStore,
    MeteredImageGenerator,
    MeteredQuotaGate,
    Metrics,
)
from pixyproxy.entrypoints.settings import DEFAULT_CONFIG_PATH, Settings, load_settings

log = logging.getLogger(__name__)


def _job_timing(
    lease_s: float, max_attempts: int, retention_s: int, idempotency_retention_s: int, sync_wait_s: float
) -> JobTiming:
    return JobTiming(
        lease=timedelta(seconds=lease_s),
        max_attempts=max_attempts,
        retention=timedelta(seconds=retention_s),
        idempotency_retention=timedelta(seconds=idempotency_retention_s),
        sync_wait_s=sync_wait_s,
    )


def _presign_expiry(enabled: bool, expires_s: int) -> int | None:
    return expires_s if enabled else None


def _offloads_files(content_offload: str) -> bool:
    return content_offload != "none"


class Container(containers.DeclarativeContainer):
    """Every long-lived collaborator of the service, chosen by configuration."""

    config = providers.Configuration(strict=True)
    settings = providers.Dependency(instance_of=Settings)

    selected_repository = providers.Selector(
        config.repository.kind,
        memory=providers.Singleton(InMemoryImageRepository),
        sqlite=providers.Singleton(
            SqliteImageRepository,
            config.repository.sqlite_path,
            synchronous=config.repository.sqlite_synchronous,
        ),
        mysql=providers.Singleton(
            MySqlImageRepository,
            config.repository.mysql_url,
            pool_size=config.repository.mysql_pool_size,
            connect_timeout_s=config.repository.mysql_connect_timeout_s,
            init_schema=config.repository.init_schema,
        ),
    )

    # Records never change once created but may be deleted elsewhere: each is trusted for cache_ttl_s.
    repository = providers.Singleton(
        CachedImageRepository,
        selected_repository,
        max_entries=config.repository.cache_entries,
        ttl_s=config.repository.cache_ttl_s,
    )

    metrics = providers.Singleton(Metrics)

    selected_blob_store = providers.Selector(
        config.blob_store.kind,
        memory=providers.Singleton(InMemoryBlobStore),
        local=providers.Singleton(LocalDiskBlobStore, config.blob_store.local_root),
        s3=providers.Singleton(
            S3BlobStore,
            bucket=config.blob_store.s3_bucket,
            endpoint_url=config.blob_store.s3_endpoint_url,
            region=config.blob_store.s3_region,
            prefix=config.blob_store.s3_prefix,
            create_bucket=config.blob_store.s3_create_bucket,
            timeout_s=config.blob_store.s3_timeout_s,
            max_attempts=config.blob_store.s3_max_attempts,
        ),
    )

    blob_store = providers.Singleton(MeteredBlobStore, selected_blob_store, metrics=metrics)

    upstream_generator = providers.Selector(
        config.generator.kind,
        memory=providers.Singleton(InMemoryImageGenerator),
        procedural=providers.Singleton(
            ProceduralImageGenerator, default_size=config.generator.procedural_size
        ),
        openai=providers.Singleton(
            OpenAIImageGenerator,
            api_key=config.generator.openai_api_key,
            base_url=config.generator.openai_base_url,
            model=config.generator.openai_model,
            size=config.generator.openai_size,
            quality=config.generator.openai_quality,
            timeout_s=config.generator.openai_timeout_s,
            max_retries=config.generator.openai_max_retries,
            max_download_bytes=config.generator.openai_max_download_bytes,
        ),
    )

    generator = providers.Singleton(
        BoundedImageGenerator,
        providers.Singleton(MeteredImageGenerator, upstream_generator, metrics=metrics),
        max_concurrent=config.generator.max_concurrent,
        wait_s=config.generator.queue_timeout_s,
    )

    # The model names the selected generator serves, as GET /v1/models lists them.
    served_models = providers.Selector(
        config.generator.kind,
        memory=providers.Object([InMemoryImageGenerator.MODEL]),
        procedural=providers.Object([ProceduralImageGenerator.MODEL]),
        openai=providers.List(config.generator.openai_model),
    )

    image_service = providers.Factory(
        ImageService,
        repository=repository,
        generator=generator,
        blob_store=blob_store,
        presign_expires_s=providers.Callable(
            _presign_expiry, config.blob_store.presign, config.blob_store.presign_expires_s
        ),
        offload_files=providers.Callable(_offloads_files, config.http.content_offload),
    )

    # Jobs live beside the images, on the same database connection or pool.
    job_repository = providers.Selector(
        config.repository.kind,
        memory=providers.Singleton(InMemoryJobRepository),
        sqlite=providers.Singleton(SqliteJobRepository, selected_repository),
        mysql=providers.Singleton(MySqlJobRepository, selected_repository),
    )

    job_queue = providers.Selector(
        config.jobs.queue,
        memory=providers.Singleton(InMemoryJobQueue),
        rabbitmq=providers.Singleton(
            RabbitMqJobQueue, config.jobs.amqp_url, queue_name=config.jobs.amqp_queue
        ),
    )

    webhook_deliveries = providers.Selector(
        config.repository.kind,
        memory=providers.Singleton(InMemoryWebhookDeliveries),
        sqlite=providers.Singleton(SqliteWebhookDeliveries, selected_repository),
        mysql=providers.Singleton(MySqlWebhookDeliveries, selected_repository),
    )

    webhook_sender = providers.Singleton(
        HttpWebhookSender,
        secret=config.webhooks.secret,
        timeout_s=config.webhooks.timeout_s,
        allow_private=config.webhooks.allow_private,
    )

    webhook_service = providers.Factory(
        WebhookService,
        deliveries=webhook_deliveries,
        sender=webhook_sender,
        render=providers.Factory(JobDocuments, images=image_service),
        retry_schedule_s=config.webhooks.retry_schedule_s,
    )

    # One storage for both quotas: memory:// counts per process, redis:// across every node.
    quota_storage = providers.Singleton(limits_storage, config.quota.storage)
    generation_quota = providers.Singleton(
        MeteredQuotaGate,
        providers.Singleton(
            LimitsQuotaGate,
            config.quota.generation_rate,
            storage=quota_storage,
            scope="generations",
            on_error=config.quota.on_error,
            overrides=config.quota.rate_overrides,
        ),
        metrics=metrics,
        quota="generations",
    )
    request_quota = providers.Singleton(
        MeteredQuotaGate,
        providers.Singleton(
            LimitsQuotaGate,
            config.quota.request_rate,
            storage=quota_storage,
            scope="requests",
            on_error=config.quota.on_error,
        ),
        metrics=metrics,
        quota="requests",
    )

    job_service = providers.Factory(
        JobService,
        jobs=job_repository,
        queue=job_queue,
        images=image_service,
        events=providers.Singleton(JobMetrics, metrics),
        webhooks=webhook_service,
        quota=generation_quota,
        timing=providers.Callable(
            _job_timing,
            config.jobs.lease_s,
            config.jobs.max_attempts,
            config.jobs.retention_s,
            config.http.idempotency_retention_s,
            config.jobs.sync_wait_s,
        ),
    )

    readiness_checker = providers.Factory(
        ReadinessChecker,
        repository=repository,
        blob_store=blob_store,
        job_queue=job_queue,
        quotas=providers.List(generation_quota, request_quota),
    )


def build_container(config_path: Path = DEFAULT_CONFIG_PATH) -> Container:
    """A container from containers.yml and the environment; raises ConfigurationError."""
    settings, _ = load_settings(config_path)
    container = Container(settings=settings)
    container.config.from_dict(_plain(settings))
    return container


async def close_adapters(container: Container) -> None:
    """Close every adapter the container has built, even when one of them fails to close."""
    for provider in (
        container.webhook_sender,
        container.job_queue,
        container.generator,
        container.blob_store,
        container.repository,
    ):
        try:
            await provider().close()
        except Exception:
            log.exception("closing %s failed", provider)


async def initialize_adapters(container: Container) -> None:
    """Run the start-up step of each selected adapter that has one (a schema, a bucket check).

    A wrong setting (a bucket that does not exist) stops start-up. A dependency that is only
    down does not: requests answer 503 and /readyz says why until it is back, and the adapters
    retry on first use, so PixyProxy never needs a restart for it.
    """
    for provider in (
        container.selected_repository,
        container.selected_blob_store,
        container.upstream_generator,
        container.job_queue,
    ):
        initialize = getattr(provider(), "initialize", None)
        if initialize is None:
            continue
        try:
            await initialize()
        except (
            RepositoryUnavailableError,
            BlobStoreUnavailableError,
            GeneratorUnavailableError,
            JobQueueUnavailableError,
        ) as err:
            log.warning("not ready at start-up, will retry on first use: %s", err)


@asynccontextmanager
async def adapters_open(container: Container) -> AsyncIterator[None]:
    """The selected adapters started for the block, and closed after it however it ends."""
    try:
        await initialize_adapters(container)
        yield
    finally:
        await close_adapters(container)


def _plain(settings: Settings) -> dict[str, Any]:
    """The validated settings as plain values, secrets revealed for the adapters that need them."""
    values = settings.model_dump()

    def reveal(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: reveal(v) for k, v in node.items()}
        return node.get_secret_value() if hasattr(node, "get_secret_value") else node

    plain: dict[str, Any] = reveal(values)
    return plain
