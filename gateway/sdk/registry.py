"""Finds drivers through the `community_gateway.drivers` entry points, nothing else."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from gateway.sdk.driver import DriverInfo

__all__ = ["ENTRY_POINT_GROUP", "available_drivers"]

ENTRY_POINT_GROUP = "community_gateway.drivers"


@cache
def available_drivers() -> dict[str, DriverInfo]:
    """Every registered driver by name; a broken registration fails loudly here."""
    found: dict[str, DriverInfo] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        info = ep.load()
        if not isinstance(info, DriverInfo):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not a DriverInfo")
        if info.name != ep.name:
            raise TypeError(f"entry point {ep.name} names a driver called {info.name!r}")
        found[ep.name] = info
    return found
