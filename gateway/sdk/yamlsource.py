"""YAML loading that remembers the line of every key and refuses hostile files.

Defined once in `community_protocol.yamlsource`, which the central side uses too; the
kit re-exports it so drivers keep importing only `gateway.sdk`.
"""

from __future__ import annotations

from community_protocol.yamlsource import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_SCALAR,
    MAX_VALUES,
    decode_text,
    load_located,
    read_limited,
)

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_SCALAR",
    "MAX_VALUES",
    "decode_text",
    "load_located",
    "read_limited",
]
