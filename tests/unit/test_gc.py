"""Garbage collection of orphan bytes and records whose bytes are gone."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from pixyproxy.adapters.memory import InMemoryBlobStore, InMemoryImageGenerator, InMemoryImageRepository
from pixyproxy.app.maintenance import GarbageCollector
from pixyproxy.app.service import ImageService
from pixyproxy.domain.models import utc_now


async def test_reports_both_kinds_of_orphan_and_deletes_only_old_bytes() -> None:
    repository, store = InMemoryImageRepository(), InMemoryBlobStore()
    service = ImageService(repository=repository, generator=InMemoryImageGenerator(), blob_store=store)
    kept = await service.generate({"prompt": "kept"})
    lost = await service.generate({"prompt": "lost bytes"})
    del store.blobs[lost.filename]
    old_time = utc_now() - timedelta(hours=3)
    store.blobs["old-orphan.png"] = (b"old", "image/png", old_time)
    await store.put("young-orphan.png", b"young", content_type="image/png")
    collector = GarbageCollector(repository=repository, blob_store=store)

    dry = await collector.collect(now=utc_now(), grace=timedelta(hours=1), delete=False)
    assert [b.key for b in dry.orphan_blobs] == ["old-orphan.png", "young-orphan.png"]
    assert dry.missing_blobs == [(lost.guid, lost.filename)]
    assert dry.deleted == []
    assert "old-orphan.png" in store.blobs

    done = await collector.collect(now=utc_now(), grace=timedelta(hours=1), delete=True)
    assert done.deleted == ["old-orphan.png"]
    assert done.kept_young == ["young-orphan.png"]
    assert set(store.blobs) == {kept.filename, "young-orphan.png"}


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixyproxy.entrypoints.cli", *args],
        env={
            "PATH": "/usr/bin:/bin",
            "PIXYPROXY_DATA_DIR": str(data_dir),
            "PIXYPROXY_PROCEDURAL_SIZE": "32x32",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_generate_then_gc_on_the_embedded_default(tmp_path: Path) -> None:
    made = _cli("generate", "a fox from the command line", data_dir=tmp_path)
    assert made.returncode == 0, made.stderr
    detail = json.loads(made.stdout)
    assert detail["prompt"] == "a fox from the command line"
    assert (tmp_path / "images" / detail["filename"]).is_file()
    (tmp_path / "images" / "orphan.png").write_bytes(b"left by a crash")

    report = _cli("gc", data_dir=tmp_path)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["orphan_blobs"] == ["orphan.png"]

    deleted = _cli("gc", "--delete", "--grace-minutes", "0", data_dir=tmp_path)
    assert json.loads(deleted.stdout)["deleted"] == ["orphan.png"]
    assert not (tmp_path / "images" / "orphan.png").exists()
    assert (tmp_path / "images" / detail["filename"]).is_file()
