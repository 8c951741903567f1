"""Debian's Chromium, driven by playwright: the one browser these machines can have (none is downloaded)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from playwright import sync_api as playwright_api

from tests.support.real_parts import missing_real_part

CHROMIUM = "/usr/bin/chromium"


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A headless Chromium for the block; missing, it fails under CI and skips elsewhere."""
    if shutil.which(CHROMIUM) is None:
        missing_real_part(
            "Debian's chromium", "install it with `apt-get update && apt-get install -y chromium`"
        )
    with playwright_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
