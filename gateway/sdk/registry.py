"""Finds drivers through the `community_gateway.drivers` entry points, nothing else.

A driver's entry point is loaded only when something asks for that driver by name: a
config naming two drivers imports those two, not pymodbus and libosdp besides (a Pi
has little memory, and every CLI call an installer makes pays the imports).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from gateway.sdk.driver import DriverInfo

__all__ = ["ENTRY_POINT_GROUP", "DriverRegistry", "available_drivers"]

ENTRY_POINT_GROUP = "community_gateway.drivers"


class DriverRegistry(Mapping[str, DriverInfo]):
    """The registered drivers by name; a driver's package is imported on first lookup.

    Names and iteration come from the installed metadata alone; `registry[name]` (and
    `get`, `values`, `items`) import the driver, and a broken registration fails loudly
    there, naming the entry point.
    """

    def __init__(self, points: Mapping[str, EntryPoint]) -> None:
        self._points = dict(points)
        self._loaded: dict[str, DriverInfo] = {}

    def __getitem__(self, name: str) -> DriverInfo:
        info = self._loaded.get(name)
        if info is None:
            ep = self._points[name]
            loaded = ep.load()
            if not isinstance(loaded, DriverInfo):
                raise TypeError(f"entry point {ep.name} = {ep.value} is not a DriverInfo")
            if loaded.name != ep.name:
                raise TypeError(f"entry point {ep.name} names a driver called {loaded.name!r}")
            info = self._loaded[name] = loaded
        return info

    def __iter__(self) -> Iterator[str]:
        return iter(self._points)

    def __len__(self) -> int:
        return len(self._points)

    def __contains__(self, name: object) -> bool:
        # Without this, Mapping's `in` would import the driver to answer.
        return name in self._points


@cache
def available_drivers() -> DriverRegistry:
    """Every registered driver by name, each imported when first looked up."""
    return DriverRegistry({ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)})
