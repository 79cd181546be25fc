"""Which team gets a ticket: alarm type → team, as data with defaults and a YAML override.

The defaults send fire alarms to fire safety, care and wellness alarms to the care
team, security alarms to security and maintenance alarms to maintenance.  A site with
other teams writes a small file and passes it as `--routes FILE`:

```yaml
version: 1
teams:
  fire: fire-safety
  wellness: night-nurse     # every type not named keeps its default
default: duty-manager        # optional: a type with no team at all (none by default)
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from community_protocol.problems import Problem, pydantic_problems

from .contract import AlarmType
from .ids import Id
from .yamlfile import ConfigError, load_located

__all__ = ["DEFAULT_TEAMS", "Routes", "load_routes"]


DEFAULT_TEAMS: dict[AlarmType, str] = {
    AlarmType.FIRE: "fire-safety",
    AlarmType.CARE: "care",
    AlarmType.WELLNESS: "care",
    AlarmType.SECURITY: "security",
    AlarmType.MAINTENANCE: "maintenance",
}

# A team name is shown in lists and may become a topic level or a file name downstream:
# the same rule as the config's ids.
Team = Id


class _RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    teams: dict[AlarmType, Team] = Field(default_factory=dict)
    default: Team | None = None


@dataclass(frozen=True, slots=True)
class Routes:
    """The team of each alarm type; `default` takes a type the contract may add later."""

    teams: dict[AlarmType, str] = field(default_factory=lambda: dict(DEFAULT_TEAMS))
    default: str = "unrouted"

    def team_for(self, alarm_type: str) -> str:
        try:
            return self.teams[AlarmType(alarm_type)]
        except (ValueError, KeyError):
            return self.default


def load_routes(path: Path | None) -> Routes:
    """The routes of a `--routes` file on top of the defaults; ConfigError naming key and line."""
    if path is None:
        return Routes()
    try:
        src = load_located(path)
    except OSError as exc:
        problem = Problem(str(path), None, "", f"cannot read: {exc.strerror or exc}")
        raise ConfigError([problem]) from exc
    if not isinstance(src.data, dict):
        raise ConfigError([src.problem((), "a routes file is a mapping with version and teams")])
    try:
        parsed = _RoutesFile.model_validate(src.data)
    except ValidationError as exc:
        raise ConfigError(pydantic_problems(src, exc)) from exc
    teams = dict(DEFAULT_TEAMS)
    teams.update(parsed.teams)
    return Routes(teams, parsed.default or "unrouted")
