"""Dependency-injector markers for FastAPI routes, without a worker-thread hop per request.

FastAPI runs a synchronous dependency callable in its thread pool. dependency-injector's
`Provide` marker is one (its `__call__` returns the marker, which `@inject` then replaces with
the provided object), so every request paid a thread round trip for nothing; make bench showed
it as the largest avoidable cost of GET /image/{guid}. `AsyncProvide` is the same marker with an
async `__call__`, which FastAPI awaits on the event loop instead.
"""

from typing import TYPE_CHECKING

from dependency_injector.wiring import Provide

if TYPE_CHECKING:  # to type checkers the markers are one protocol; the subclass is runtime detail
    AsyncProvide = Provide
else:

    class AsyncProvide(Provide):
        """A `Provide` marker that FastAPI awaits rather than runs in a thread."""

        async def __call__(self) -> "AsyncProvide":
            return self
