"""Figure 1 at the product's default log level, and what that level costs (issue 17, item 1).

`pixyproxy serve` logs at INFO: two lines a request (REQUEST START / REQUEST END). Figure 1 prices
PixyProxy as served, so its server is built by `create_served_app` (logging set up from
`PIXYPROXY_LOG_LEVEL`, as `serve` does) at INFO, writing its lines to a file through its standard
error. `1-info-vs-warning` sets it beside the same factory at WARNING, which writes no request line:
the ratio is what the lines cost. The three servers are measured in turn within each round, so both
figures come from measurements a few seconds apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.figures import (
    Comparison,
    Figure,
    Seeded,
    Settings,
    check_same_answers,
    log,
    pixyproxy_env,
    profile_miss,
    ratio_figure,
    steady,
)
from bench.servers import Server, running

SERVED_APP = "pixyproxy.entrypoints.http.app:create_served_app"
READ_TARGET = 0.8  # PixyProxy at INFO against bare FastAPI
LEVEL_TARGET = 0.9  # PixyProxy at INFO against itself at WARNING: the lines cost at most a tenth
READ_TITLE = "GET /image/{guid} req/s at INFO, SQLite vs bare FastAPI"
LEVEL_TITLE = "GET /image/{guid} req/s, PixyProxy at INFO vs at WARNING"
MARIADB_TITLE = "GET /image/{guid} req/s at INFO, MariaDB vs bare FastAPI"


def served_env(env: dict[str, str], level: str) -> dict[str, str]:
    """A PixyProxy server's environment at log level `level` (the bench's default is WARNING)."""
    return {**env, "PIXYPROXY_LOG_LEVEL": level}


def count_request_lines(server: Server) -> int:
    """How many REQUEST START lines the server has written: the INFO side must log, or it prices nothing."""
    return sum(1 for line in server.logs().splitlines() if " REQUEST START " in line)


def sqlite_figures(
    settings: Settings, workdir: Path, seeded: Seeded, *, baseline: Server
) -> tuple[list[Figure], dict[str, int | None]]:
    """Figures 1-sqlite (INFO vs bare FastAPI) and 1-info-vs-warning, from one set of rounds."""
    env = pixyproxy_env(seeded.data_dir)
    path = f"/image/{seeded.guid}"
    figures: list[Figure] = []
    with (
        running("pixyproxy-info", SERVED_APP, env=served_env(env, "INFO"), log_dir=workdir) as info,
        running("pixyproxy-warning", SERVED_APP, env=served_env(env, "WARNING"), log_dir=workdir) as warning,
    ):
        check_same_answers(info, baseline, seeded.detail)
        before = count_request_lines(info)
        log("figure 1: GET /image/{guid}, PixyProxy at INFO vs bare FastAPI, and vs itself at WARNING")
        runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "warning": [], "info": []}
        for _ in range(settings.rounds):
            runs["baseline"].append(steady(baseline.base_url + path, settings))
            runs["warning"].append(steady(warning.base_url + path, settings))
            runs["info"].append(steady(info.base_url + path, settings))
        logged = count_request_lines(info) - before
        served = sum(int(run["requests"]) for run in runs["info"])
        read = ratio_figure(
            "1-sqlite",
            READ_TITLE,
            Comparison(subject=runs["info"], baseline=runs["baseline"]),
            metric="requests_per_s",
            unit="req/s",
            target=READ_TARGET,
        )
        level = ratio_figure(
            "1-info-vs-warning",
            LEVEL_TITLE,
            Comparison(subject=runs["info"], baseline=runs["warning"]),
            metric="requests_per_s",
            unit="req/s",
            target=LEVEL_TARGET,
        )
        if logged < served:  # wrk's warm-up requests are logged too, so at least as many lines
            for figure in (read, level):
                figure.verdict = "MISS"
                figure.note = f"the INFO server logged {logged:,} requests of {served:,} measured"
        level.note = (
            level.note or "same factory (create_served_app), same SQLite image; only the level differs"
        )
        for figure, other in ((read, baseline), (level, warning)):
            if figure.verdict == "MISS":
                profile_miss(figure, info, other, path, settings, workdir)
            figures.append(figure)
        rss = {"pixyproxy-info": info.peak_rss_bytes(), "pixyproxy-warning": warning.peak_rss_bytes()}
    return figures, rss
