"""The HTTP entrypoint: FastAPI app, routes, the one exception handler, request logging."""
