"""Problems in a YAML file, each with file, line and key path: the driver kit's names.

Defined once in `community_protocol.problems`, which the central side uses too; the kit
re-exports them so drivers keep importing only `gateway.sdk`.
"""

from __future__ import annotations

from community_protocol.problems import (
    Located,
    Path_,
    Problem,
    YamlSyntaxError,
    format_path,
    pydantic_problems,
)

__all__ = [
    "Located",
    "Path_",
    "Problem",
    "YamlSyntaxError",
    "format_path",
    "pydantic_problems",
]
