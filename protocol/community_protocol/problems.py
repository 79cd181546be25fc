"""Problems in a YAML file, each with file, line and key path, in one line.

`Located` is a parsed document that knows the line of every key path (built by
`yamlsource.load_located`); `pydantic_problems` turns a model's validation error into
problems at those lines.  The gateway's config, its drivers' profiles and the central
side's files (routes, fleet configs) all report their mistakes through these, so an
installer reads the same `file:line key.path: message` from both products.
Standard library only: pydantic is named for the type checker alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "Located",
    "Path_",
    "Problem",
    "YamlSyntaxError",
    "format_path",
    "pydantic_problems",
]

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a config file, with where it is."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


@dataclass(slots=True)
class Located:
    """A parsed YAML document and the 1-based line of each key path in it.

    `problems` holds what is wrong in the document's structure but did not stop it from
    being read (a key written twice, a value that is not what its tag says); only
    `load_located(..., collect=True)` returns a document that has any.
    """

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: Path_) -> int | None:
        """Line of the deepest prefix of `path` that exists (a missing key: its parent)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def problem(self, path: Path_, message: str) -> Problem:
        return Problem(self.file, self.line_of(path), format_path(path), message)


class YamlSyntaxError(ValueError):
    """The file cannot be read as a YAML config; `problems` say where (the first: `problem`)."""

    def __init__(self, problem: Problem | list[Problem]) -> None:
        self.problems = problem if isinstance(problem, list) else [problem]
        self.problem = self.problems[0]
        super().__init__("\n".join(str(p) for p in self.problems))


def format_path(path: Path_) -> str:
    """('devices', 3, 'driver', 'port') -> 'devices[3].driver.port'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _shape(value: Any) -> str:
    """What a YAML value is, in the installer's words."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"{str(value).lower()} (yes/no/on/off are true or false in YAML)"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def pydantic_problems(src: Located, exc: ValidationError, prefix: Path_ = ()) -> list[Problem]:
    """A pydantic error as problems with file, line and key path (below `prefix`)."""
    problems = []
    for err in exc.errors():
        loc = (*prefix, *err["loc"])
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "field required"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the sample config)"
        elif err["type"] in ("model_type", "dict_type"):
            # pydantic names the model class here, which means nothing to an installer.
            msg = f"must be a mapping (key: value), not {_shape(err.get('input'))}"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        problems.append(src.problem(loc, msg))
    return problems
