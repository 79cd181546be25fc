"""Central's YAML files (routes, fleet configs) read as the gateway reads its own.

The reader and the problems are the protocol's (`community_protocol.yamlsource`,
`.problems`), shared with the gateway: the line of every key, hostile files refused
(a FIFO, UTF-16, an alias bomb, a key written twice), and errors in the
`file:line key.path: message` form operators know from `gateway validate`.  This
module only gathers them into `ConfigError`, the one error central's commands print.
"""

from __future__ import annotations

from pathlib import Path

from community_protocol.problems import Located, Path_, Problem, YamlSyntaxError
from community_protocol.yamlsource import load_located as _load_located

__all__ = ["ConfigError", "KeyPath", "load_located"]

KeyPath = Path_


class ConfigError(ValueError):
    """A file that cannot be used; `problems` say what and where."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load_located(path: Path) -> Located:
    """Parse a YAML file; ConfigError with file and line for what is wrong in it.

    OSError (missing, unreadable) is the caller's to report.
    """
    try:
        return _load_located(path)
    except YamlSyntaxError as exc:
        raise ConfigError(exc.problems) from exc
