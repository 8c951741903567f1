"""Entrypoints: HTTP, CLI and the container that binds adapters. The only place naming adapters."""
