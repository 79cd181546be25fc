"""Problems in a YAML file, each with file, line and key path: the driver kit's names.

Defined once in `community_protocol.problems`, which the central side uses too; the kit
re-exports them (the `X as X` form says so to the type checker) so drivers keep
importing only `gateway.sdk`.
"""

from __future__ import annotations

from community_protocol.problems import Located as Located
from community_protocol.problems import Path_ as Path_
from community_protocol.problems import Problem as Problem
from community_protocol.problems import YamlSyntaxError as YamlSyntaxError
from community_protocol.problems import format_path as format_path
from community_protocol.problems import pydantic_problems as pydantic_problems
