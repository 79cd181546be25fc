"""The files of remote configuration, beside the config file, each replaced atomically.

For `/etc/community-gateway/gateway.yaml`:

- `gateway.yaml.fleet.json`: what runs (version, sha256, when applied, who signed) and
  the last result (applied, refused, rolled_back, with reason and problems);
- `gateway.yaml.trial.json`: a trial in progress: the candidate's version and sha256,
  the previous config's text and state, the deadline, and how many starts tried it;
- `gateway.yaml.candidate`: the candidate while it is checked (removed after).

Every write goes to a temporary file in the same folder, is synced, renamed over the
old one, and the folder is synced: after a kill -9 or a power cut each file is either
the old or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from community_protocol.enums import ConfigResult
from gateway.sdk.files import write_private

__all__ = [
    "FleetFiles",
    "Outcome",
    "Running",
    "State",
    "Trial",
    "sha256_of",
    "write_durably",
]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_durably(path: Path, data: bytes) -> None:
    """Replace `path` by `data` atomically (0600) and sync its folder, so the rename lasts."""
    write_private(path, data)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_durably(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class Running:
    """The configuration that runs: 0 is one installed on site, never applied remotely."""

    version: int = 0
    sha256: str = ""
    applied_at: str | None = None
    signed_by: str | None = None
    previous_version: int | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the last desired configuration went, as reported and audited."""

    result: ConfigResult
    desired_version: int | None
    reason: str = ""
    problems: list[dict[str, str]] = field(default_factory=list)
    signed_by: str | None = None
    key_id: str | None = None
    previous_version: int | None = None
    audited: bool = False  # the gateway.config event is in the outbox
    document_sha256: str | None = None  # of the refused payload: the same one is not news


@dataclass(frozen=True, slots=True)
class State:
    running: Running = Running()
    last: Outcome | None = None


@dataclass(frozen=True, slots=True)
class Trial:
    """A candidate switched to and not yet committed."""

    version: int
    sha256: str
    signed_by: str
    key_id: str
    previous_config: str
    previous: Running
    trial_s: float
    attempts: int = 0  # starts that ran it; a second start without commit rolls back


@dataclass(frozen=True, slots=True)
class FleetFiles:
    """The files of remote configuration for one config file."""

    config: Path

    @property
    def state_path(self) -> Path:
        return self.config.with_name(self.config.name + ".fleet.json")

    @property
    def trial_path(self) -> Path:
        return self.config.with_name(self.config.name + ".trial.json")

    @property
    def candidate_path(self) -> Path:
        return self.config.with_name(self.config.name + ".candidate")

    def config_bytes(self) -> bytes:
        return self.config.read_bytes()

    def read_state(self) -> State:
        """The state; a missing or unreadable file is the state of a config installed on site."""
        data = _read_json(self.state_path)
        if data is None:
            return State(Running(sha256=_sha_or_empty(self.config)))
        try:
            running = Running(**data["running"])
            last = data.get("last")
            outcome = None
            if last is not None:
                outcome = Outcome(**{**last, "result": ConfigResult(last["result"])})
            return State(running, outcome)
        except (KeyError, TypeError, ValueError):
            return State(Running(sha256=_sha_or_empty(self.config)))

    def write_state(self, state: State) -> None:
        doc: dict[str, Any] = {"running": asdict(state.running), "last": None}
        if state.last is not None:
            doc["last"] = {**asdict(state.last), "result": str(state.last.result)}
        write_durably(self.state_path, json.dumps(doc, indent=1).encode())

    def read_trial(self) -> Trial | None:
        data = _read_json(self.trial_path)
        if data is None:
            return None
        try:
            return Trial(**{**data, "previous": Running(**data["previous"])})
        except (KeyError, TypeError):
            # A trial file that cannot be read is a trial that cannot be trusted: the
            # caller rolls back from the copy inside it, so keep what can be used.
            return None

    def write_trial(self, trial: Trial) -> None:
        write_durably(self.trial_path, json.dumps(asdict(trial), indent=1).encode())

    def remove_trial(self) -> None:
        _remove_durably(self.trial_path)

    def remove_candidate(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.candidate_path.unlink()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _sha_or_empty(path: Path) -> str:
    try:
        return sha256_of(path.read_bytes())
    except OSError:
        return ""
