"""YAML loading that remembers the line of every key and refuses hostile files.

Defined once in `community_protocol.yamlsource`, which the central side uses too; the
kit re-exports it (the `X as X` form says so to the type checker) so drivers keep
importing only `gateway.sdk`.
"""

from __future__ import annotations

from community_protocol.yamlsource import MAX_BYTES as MAX_BYTES
from community_protocol.yamlsource import MAX_DEPTH as MAX_DEPTH
from community_protocol.yamlsource import MAX_SCALAR as MAX_SCALAR
from community_protocol.yamlsource import MAX_VALUES as MAX_VALUES
from community_protocol.yamlsource import decode_text as decode_text
from community_protocol.yamlsource import load_located as load_located
from community_protocol.yamlsource import read_limited as read_limited
