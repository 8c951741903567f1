"""A Factory's product made again only when what it is made from changes, for the hottest routes.

`container.image_service()` builds an ImageService per call (a Factory, with two config-derived
arguments): 2 µs, and a twentieth of the time of a cached `GET /image/{guid}` in make bench figure 1's
profile (`get_image (routes.py:285)`, own time). The service keeps no state of its own, so one
instance serves as long as its collaborators are the same objects. Those are asked of their providers
on every call (Singletons: a dictionary-free lookup each), so a provider overridden later, as the tests
do, is seen at once, as is an override of the Factory itself. The configuration is read when the
container is built and is not watched.
"""

from __future__ import annotations

import operator
from typing import Any, Generic, TypeVar

from dependency_injector import providers

T = TypeVar("T")


class Reused(Generic[T]):
    """`factory()`, remembered while `factory`'s overrides and each of `made_from`'s objects stay."""

    def __init__(self, factory: providers.Provider[T], *made_from: providers.Provider[Any]) -> None:
        self._factory = factory
        self._made_from = made_from
        self._made: tuple[tuple[object, ...], T] | None = None

    def __call__(self) -> T:
        """The remembered product, or a new one if anything it was made from is another object now."""
        key = (self._factory.overridden, *(part() for part in self._made_from))
        made = self._made
        if made is not None and all(map(operator.is_, made[0], key)):  # as many parts each time
            return made[1]
        product = self._factory()
        self._made = (key, product)
        return product
