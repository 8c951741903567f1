"""The dependency-injector container: binds one adapter per port from containers.yml.

This module, with the entrypoints, is the only place that names concrete adapters.
"""

from __future__ import annotations

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
from pixyproxy.adapters.mysql import MySqlImageRepository
from pixyproxy.adapters.procedural import ProceduralImageGenerator
from pixyproxy.adapters.sqlite import SqliteImageRepository
from pixyproxy.app.bounded import BoundedImageGenerator
from pixyproxy.app.service import ImageService
from pixyproxy.entrypoints.settings import DEFAULT_CONFIG_PATH, Settings, load_settings


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def _presign_expiry(enabled: bool, expires_s: int) -> int | None:
    return expires_s if enabled else None


class Container(containers.DeclarativeContainer):
    """Every long-lived collaborator of the service, chosen by configuration."""

    wiring_config = containers.WiringConfiguration(modules=["pixyproxy.entrypoints.http.routes"])

    config = providers.Configuration(strict=True)
    settings = providers.Dependency(instance_of=Settings)

    repository = providers.Selector(
        config.repository.kind,
        memory=providers.Singleton(InMemoryImageRepository),
        sqlite=providers.Singleton(SqliteImageRepository, config.repository.sqlite_path),
        mysql=providers.Singleton(
            MySqlImageRepository,
            config.repository.mysql_url,
            pool_size=config.repository.mysql_pool_size,
            connect_timeout_s=config.repository.mysql_connect_timeout_s,
            init_schema=config.repository.init_schema,
        ),
    )

    blob_store = providers.Selector(
        config.blob_store.kind,
        memory=providers.Singleton(InMemoryBlobStore),
        local=providers.Singleton(LocalDiskBlobStore, config.blob_store.local_root),
    )

    upstream_generator = providers.Selector(
        config.generator.kind,
        memory=providers.Singleton(InMemoryImageGenerator),
        procedural=providers.Singleton(
            ProceduralImageGenerator, default_size=config.generator.procedural_size
        ),
    )

    generator = providers.Singleton(
        BoundedImageGenerator,
        upstream_generator,
        max_concurrent=config.generator.max_concurrent,
        wait_s=config.generator.queue_timeout_s,
    )

    image_service = providers.Factory(
        ImageService,
        repository=repository,
        generator=generator,
        blob_store=blob_store,
        idempotency_retention=providers.Callable(_seconds, config.http.idempotency_retention_s),
        presign_expires_s=providers.Callable(
            _presign_expiry, config.blob_store.presign, config.blob_store.presign_expires_s
        ),
    )


def build_container(config_path: Path = DEFAULT_CONFIG_PATH) -> Container:
    """A container from containers.yml and the environment; raises ConfigurationError."""
    settings, _ = load_settings(config_path)
    container = Container(settings=settings)
    container.config.from_dict(_plain(settings))
    return container


def _plain(settings: Settings) -> dict[str, Any]:
    """The validated settings as plain values, secrets revealed for the adapters that need them."""
    values = settings.model_dump()

    def reveal(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: reveal(v) for k, v in node.items()}
        return node.get_secret_value() if hasattr(node, "get_secret_value") else node

    plain: dict[str, Any] = reveal(values)
    return plain
