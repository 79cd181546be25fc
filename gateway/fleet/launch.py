#!/usr/bin/python3 -I
"""The service's launcher: runs the current release, or switches back first when a trial keeps failing.

systemd starts this file (ExecStart=/opt/community-gateway/launch run -c ...), not the
gateway: it imports nothing but the standard library and nothing of any release, so a
release that cannot even be imported is never started more than `max_starts` times
(docs/fleet.md, "Software updates").  At each start:

1. No trial in the state file: run the release `current` points to (the installed
   venv, /opt/community-gateway/venv, when no update ever ran).
2. A trial (a new release switched in, not yet committed by its health gate) started
   fewer than `max_starts` times: count this start (written durably first), run it.
3. A trial started `max_starts` times without a commit (it crashed, hung, was killed,
   or its health gate never passed), or one whose switch was interrupted (`current`
   does not name it): point `current` back at the previous release, record why, and
   run that one.

Every write is atomic: a new file or link beside the old one, fsync, rename, fsync of
the folder, so a power cut at any point leaves either the old or the new state.
`gateway.fleet.update` imports this module for the same state file and links.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_FACTORY",
    "ENV_RELEASES",
    "STATE_FILE",
    "TRANSFER_DIR",
    "choose",
    "main",
    "point",
    "read_state",
    "unreported",
    "write_json",
    "write_state",
]

# Inside the service's state folder (/var/lib/community-gateway: the only place the
# sandboxed service may write, so the running gateway can switch releases itself).
STATE_FILE = "update/state.json"
TRANSFER_DIR = ("update", "transfer")  # a transfer over MQTT, staged by the running gateway
CURRENT = "current"
DEFAULT_STATE_DIR = Path("/var/lib/community-gateway")
# What the launcher tells the gateway it starts (gateway.fleet.update_front): where the
# releases and their state are, and the installed venv that runs without `current`.
ENV_RELEASES = "COMMUNITY_GATEWAY_RELEASES"
ENV_FACTORY = "COMMUNITY_GATEWAY_FACTORY"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_state(state_dir: Path) -> dict[str, Any]:
    """The update state; empty when there is none, or when it is unreadable (then nothing is on trial)."""
    try:
        doc = json.loads((state_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def unreported(state: dict[str, Any]) -> dict[str, Any] | None:
    """The last outcome the launcher wrote (a roll-back) and no running gateway reported yet."""
    last = state.get("last")
    return last if isinstance(last, dict) and not last.get("audited") else None


def write_state(state_dir: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically and durably."""
    write_json(state_dir / STATE_FILE, state)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Replace `path` by `doc` as JSON atomically and durably (its folder is made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def point(state_dir: Path, target: str) -> None:
    """Make `current` name `target` in one rename (a new link beside it, then replace)."""
    link = state_dir / CURRENT
    tmp = state_dir / (CURRENT + ".new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    _fsync_dir(state_dir)


def _runs(venv: Path) -> bool:
    return os.access(venv / "bin" / "gateway", os.X_OK)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def choose(state_dir: Path, factory: Path) -> tuple[Path, str]:
    """The venv to run now, and a line for the log (empty when nothing special happened)."""
    state = read_state(state_dir)
    trial = state.get("trial")
    link = state_dir / CURRENT
    current = Path(os.readlink(link)) if link.is_symlink() else factory
    if not isinstance(trial, dict):
        return (current if _runs(current) else factory), ""
    starts = int(trial.get("starts", 0))
    max_starts = int(trial.get("max_starts", 2))
    version = str(trial.get("version", "?"))
    previous = str(trial.get("previous") or factory)
    why = ""
    if trial.get("venv") and str(current) != str(trial["venv"]):
        # Killed between writing the trial and switching the link: never started.
        why = f"the switch to version {version} was interrupted before it ran"
    elif starts >= max_starts:
        why = (
            f"version {version} was started {starts} times without passing its health gate"
            " (it crashed, hung or could not reach the broker)"
        )
    elif not _runs(current):
        why = f"version {version} has no runnable program at {current}"
    if why:
        point(state_dir, previous)
        state["trial"] = None
        state["last"] = {"version": version, "result": "rolled_back", "reason": why, "at": _now()}
        write_state(state_dir, state)
        return Path(previous), f"rolled back to {previous}: {why}"
    trial["starts"] = starts + 1
    write_state(state_dir, state)
    return current, f"trying version {version} (start {starts + 1} of {max_starts})"


def main(argv: list[str]) -> int:
    """`launch [--state DIR] [--factory VENV] GATEWAY-ARGS...`: exec the chosen release's gateway."""
    state_dir, factory = DEFAULT_STATE_DIR, Path(__file__).resolve().parent / "venv"
    args = list(argv)
    while args and args[0] in ("--state", "--factory") and len(args) >= 2:
        if args[0] == "--state":
            state_dir = Path(args[1])
        else:
            factory = Path(args[1])
        del args[:2]
    try:
        venv, note = choose(state_dir, factory)
    except OSError as exc:
        # The state folder is unusable: run the installed program rather than nothing.
        venv, note = (
            factory,
            f"cannot read or write {state_dir / STATE_FILE} ({exc}); running {factory}",
        )
    if note:
        sys.stderr.write(f"launch: {note}\n")
        sys.stderr.flush()
    program = venv / "bin" / "gateway"
    os.environ[ENV_RELEASES] = str(state_dir)
    os.environ[ENV_FACTORY] = str(factory)
    try:
        os.execv(program, [str(program), *args])
    except OSError as exc:
        sys.stderr.write(f"launch: error: cannot run {program}: {exc.strerror or exc}\n")
        return 1
    return 0  # not reached: execv replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
