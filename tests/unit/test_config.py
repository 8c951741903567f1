"""containers.yml with environment overrides, and one clear line for a bad setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pixyproxy.adapters.local_disk import LocalDiskBlobStore
from pixyproxy.adapters.memory import InMemoryImageRepository
from pixyproxy.adapters.procedural import ProceduralImageGenerator
from pixyproxy.adapters.sqlite import SqliteImageRepository
from pixyproxy.app.requests import largest_valid_body_bytes
from pixyproxy.domain.exceptions import ConfigurationError
from pixyproxy.entrypoints.cli import main
from pixyproxy.entrypoints.container import build_container

ALL_SETTINGS = [
    "PIXYPROXY_REPOSITORY",
    "PIXYPROXY_BLOB_STORE",
    "PIXYPROXY_GENERATOR",
    "PIXYPROXY_DATA_DIR",
    "PIXYPROXY_MYSQL_URL",
    "PIXYPROXY_S3_BUCKET",
    "OPENAI_API_KEY",
    "PIXYPROXY_LOG_LEVEL",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_embedded_adapters(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    container = build_container()
    assert isinstance(container.selected_repository(), SqliteImageRepository)
    assert isinstance(container.selected_blob_store(), LocalDiskBlobStore)
    assert container.generator().name == "procedural"
    assert isinstance(container.upstream_generator(), ProceduralImageGenerator)
    settings = container.settings()
    assert settings.repository.sqlite_path == "./pixyproxy-data/pixyproxy.sqlite3"
    assert settings.http.max_body_bytes is None
    assert settings.http.body_cap() == largest_valid_body_bytes()
    assert settings.http.key_list() == []


def test_a_body_cap_above_the_largest_valid_request_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXYPROXY_MAX_BODY_BYTES", str(largest_valid_body_bytes() + 1))
    assert build_container().settings().http.body_cap() == largest_valid_body_bytes() + 1


def test_environment_overrides_the_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIXYPROXY_REPOSITORY", "memory")
    monkeypatch.setenv("PIXYPROXY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PIXYPROXY_MAX_CONCURRENT_GENERATIONS", "3")
    monkeypatch.setenv("PIXYPROXY_LOG_LEVEL", "debug")
    container = build_container()
    assert isinstance(container.selected_repository(), InMemoryImageRepository)
    assert container.config.blob_store.local_root() == f"{tmp_path}/images"
    assert container.settings().generator.max_concurrent == 3
    assert container.settings().logging.level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIXYPROXY_REPOSITORY", "postgres"),
        ("PIXYPROXY_BLOB_STORE", "ftp"),
        ("PIXYPROXY_GENERATOR", "crayons"),
        ("PIXYPROXY_MAX_CONCURRENT_GENERATIONS", "many"),
        ("PIXYPROXY_MAX_CONCURRENT_GENERATIONS", "0"),
        ("PIXYPROXY_LOG_FORMAT", "xml"),
        ("PIXYPROXY_PROCEDURAL_SIZE", "big"),
        ("PIXYPROXY_KEEP_ALIVE_S", "0"),
        ("PIXYPROXY_MAX_BODY_BYTES", "16384"),  # below the largest valid request
    ],
)
def test_a_bad_value_names_its_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        build_container()
    assert caught.value.setting == name
    assert value in str(caught.value)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PIXYPROXY_REPOSITORY": "mysql"}, "PIXYPROXY_MYSQL_URL"),
        ({"PIXYPROXY_BLOB_STORE": "s3"}, "PIXYPROXY_S3_BUCKET"),
        ({"PIXYPROXY_GENERATOR": "openai"}, "OPENAI_API_KEY"),
    ],
)
def test_a_missing_required_value_names_its_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError) as caught:
        build_container()
    assert caught.value.setting == named


def test_cli_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PIXYPROXY_REPOSITORY", "postgres")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "PIXYPROXY_REPOSITORY" in err


def test_serve_process_exits_2_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pixyproxy.entrypoints.cli", "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", "PIXYPROXY_GENERATOR": "crayons", "PIXYPROXY_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "PIXYPROXY_GENERATOR" in result.stderr
    assert "Traceback" not in result.stderr


def test_secrets_never_appear_in_the_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXYPROXY_REPOSITORY", "mysql")
    monkeypatch.setenv("PIXYPROXY_MYSQL_URL", "postgres://user:hunter2@db/x")
    with pytest.raises(ConfigurationError) as caught:
        build_container()
    assert "hunter2" not in str(caught.value)
    assert caught.value.setting == "PIXYPROXY_MYSQL_URL"


@pytest.mark.parametrize("secret", ["not-a-secret", "whsec_c2hvcnQ=", "whsec_!!!!"])
def test_a_bad_webhook_secret_names_its_setting_but_never_shows_the_value(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("PIXYPROXY_WEBHOOK_SECRET", secret)
    with pytest.raises(ConfigurationError) as caught:
        build_container()
    assert caught.value.setting == "PIXYPROXY_WEBHOOK_SECRET"
    assert secret not in str(caught.value)


def test_the_webhook_retry_schedule_is_read_from_a_comma_separated_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIXYPROXY_WEBHOOK_RETRY_SCHEDULE_S", "1, 2.5,60")
    assert build_container().settings().webhooks.retry_schedule_s == (1.0, 2.5, 60.0)


@pytest.mark.parametrize(
    ("name", "value", "read"),
    [
        # Values YAML would read as something else had they been pasted into the file before parsing.
        ("PIXYPROXY_API_KEYS", "alice: sk-1,bob: sk-2", lambda s: s.http.api_keys),
        ("PIXYPROXY_API_KEYS", "sk-ends-in #hash", lambda s: s.http.api_keys),
        ("PIXYPROXY_API_KEYS", "*star-first-key", lambda s: s.http.api_keys),
        ("PIXYPROXY_API_KEYS", "[bracketed]", lambda s: s.http.api_keys),
        ("PIXYPROXY_API_KEYS", "'quoted'", lambda s: s.http.api_keys),
        ("PIXYPROXY_API_KEYS", "12345678", lambda s: s.http.api_keys),
        (
            "PIXYPROXY_CONTENT_CACHE_CONTROL",
            "public, max-age=60 # not a comment",
            lambda s: s.http.content_cache_control,
        ),
    ],
)
def test_an_environment_value_is_taken_verbatim_whatever_yaml_would_make_of_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, read: Any
) -> None:
    monkeypatch.setenv(name, value)
    settings = build_container().settings()
    configured = read(settings)
    shown = configured.get_secret_value() if hasattr(configured, "get_secret_value") else configured
    assert shown == value


def test_an_empty_environment_value_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXYPROXY_REQUEST_RATE", "")
    assert build_container().settings().quota.request_rate is None
