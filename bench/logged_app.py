"""PixyProxy with its request logging on, as `pixyproxy serve` runs by default (INFO, the seed's text format).

Started directly by uvicorn, create_app() leaves logging as uvicorn set it (warning), so the
seed's REQUEST START/END lines are not written; this factory turns them on to price them.
"""

from __future__ import annotations

from fastapi import FastAPI

from pixyproxy.entrypoints.http.app import create_app as create_pixyproxy_app
from pixyproxy.entrypoints.logging_setup import configure_logging


def create_app() -> FastAPI:
    """PixyProxy's app, with the seed's INFO request log lines going to standard error."""
    configure_logging("INFO", "text")
    return create_pixyproxy_app()
