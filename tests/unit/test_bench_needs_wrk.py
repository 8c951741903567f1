"""Without wrk, make bench prints no figure measured with a fixed-duration load: it refuses them."""

from __future__ import annotations

import pytest

from bench import drive, figures


def test_without_wrk_the_steady_figures_are_refused_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BENCH_LOADGEN", "httpx")
    settings = figures.Settings(only=())
    assert set(settings.refused) == set(figures.NEEDS_WRK)
    for key in ("1-sqlite", "1-info-vs-warning", "1-mariadb", "2-content", "6-accept"):
        assert not settings.selected(key), key
        assert settings.wanted(key), key
    for key in ("3-generate", "8-search-rare", "9-delete", "7-jobs", "5-rss"):
        assert settings.selected(key), key
    assert settings.selected("1-sqlite", "9-delete")


def test_with_wrk_nothing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENCH_LOADGEN", raising=False)
    monkeypatch.setattr(drive, "load_tool", lambda: "wrk")
    settings = figures.Settings(only=("1",))
    assert settings.refused == ()
    assert settings.selected("1-sqlite")
    assert settings.selected("1-info-vs-warning")
    assert not settings.selected("2-content")


def test_a_steady_load_without_wrk_raises_rather_than_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_LOADGEN", "httpx")
    with pytest.raises(RuntimeError, match="apt-get install -y wrk"):
        figures.steady("http://127.0.0.1:9/never", figures.Settings(only=()))
