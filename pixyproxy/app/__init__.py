"""Use-cases: generate, get, list, open content. Imports domain and ports only."""

from pixyproxy.app.service import ImageService

__all__ = ["ImageService"]
