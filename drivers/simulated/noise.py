"""Deterministic noise: the same keys give the same number on every run and machine.

Python's `hash()` of a string changes per process and `random.Random` carries state;
the simulator needs a value that is a pure function of (seed, device, step), so a
restarted gateway replays exactly the same curve.
"""

from __future__ import annotations

import zlib

__all__ = ["noise", "noise_after", "prefix", "salt", "unit_interval"]

_MASK = (1 << 64) - 1


def _mix(z: int) -> int:
    # splitmix64 finaliser: cheap, and every input bit changes about half the output bits.
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _hash(keys: tuple[int, ...]) -> int:
    z = 0
    for key in keys:
        z = _mix(z ^ (key & _MASK))
    return z


def unit_interval(*keys: int) -> float:
    """A number in [0, 1) that depends only on `keys`."""
    return (_hash(keys) >> 11) / float(1 << 53)


def noise(*keys: int) -> float:
    """A number in [-1, 1) that depends only on `keys`."""
    return 2.0 * unit_interval(*keys) - 1.0


def salt(text: str) -> int:
    """A stable integer for a name (device id, reading name) to use as a noise key."""
    return zlib.crc32(text.encode("utf-8"))


def prefix(*keys: int) -> int:
    """The state after `keys`, so that `noise_after(prefix(*a), k) == noise(*a, k)`.

    Hashing a device's fixed keys once instead of on every reading matters at 5000
    readings a second.
    """
    return _hash(keys)


def noise_after(state: int, key: int) -> float:
    """`noise(*keys, key)` for `state = prefix(*keys)`: a number in [-1, 1)."""
    return 2.0 * ((_mix(state ^ (key & _MASK)) >> 11) / float(1 << 53)) - 1.0
