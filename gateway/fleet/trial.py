"""Switching to a candidate config, and deciding at each start whether to try it or roll back.

The steps, each one atomic, in this order (docs/fleet.md, "Test, then commit"):

1. `switch`: write the trial file (the previous config's text and state inside it,
   attempts 0), then replace the config file by the candidate; the gateway then
   restarts itself.
2. `on_start`, before the config is even read: no trial file, nothing to do.  A trial
   with attempts 0 whose candidate is in place: attempts becomes 1 and the trial runs.
   A trial already started once (attempts 1: that start crashed, was killed, or lost
   power before committing), or whose candidate never got in place (a kill between
   the two writes of step 1): the previous config is restored first.
3. `commit` (the running gateway saw the broker echo its report): the state says the
   candidate runs, then the trial file goes.  `rollback`: the previous config is
   written back, the state says why, then the trial file goes.

A kill between any two writes leaves a trial file, so the next start finishes the
rollback (restoring the same bytes again is harmless).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from community_protocol.documents import format_ts
from community_protocol.enums import ConfigResult

from .state import FleetFiles, Outcome, Running, State, Trial, sha256_of, write_durably

if TYPE_CHECKING:  # the checks import cryptography and the drivers: not for every start
    from .check import Candidate

__all__ = ["commit", "on_start", "rollback", "switch"]

log = logging.getLogger(__name__)

STOPPED_IN_TRIAL = (
    "the gateway stopped before the new configuration was confirmed"
    " (it crashed, was killed or lost power while trying it)"
)
INTERRUPTED = "the switch to the new configuration was interrupted before it was in place"


def switch(files: FleetFiles, candidate: Candidate, running: Running, trial_s: float) -> Trial:
    """Step 1: record the trial, then put the candidate in place of the config."""
    trial = Trial(
        version=candidate.version,
        sha256=candidate.sha256,
        signed_by=candidate.signed_by,
        key_id=candidate.key_id,
        previous_config=files.config_bytes().decode("utf-8", errors="surrogateescape"),
        previous=running,
        trial_s=trial_s,
    )
    files.write_trial(trial)
    write_durably(files.config, candidate.text)
    log.warning(
        "configuration version %d (signed by %s) in place; restarting to try it",
        candidate.version,
        candidate.signed_by,
    )
    return trial


def on_start(files: FleetFiles) -> Trial | None:
    """Step 2: the trial this start runs, or None (after a rollback if one was due)."""
    trial = files.read_trial()
    if trial is None:
        return None
    if trial.attempts >= 1:
        rollback(files, trial, STOPPED_IN_TRIAL)
        return None
    try:
        in_place = sha256_of(files.config_bytes()) == trial.sha256
    except OSError:
        in_place = False
    if not in_place:
        rollback(files, trial, INTERRUPTED)
        return None
    started = replace(trial, attempts=trial.attempts + 1)
    files.write_trial(started)
    log.warning(
        "trying configuration version %d: it must reach the broker within %g s",
        trial.version,
        trial.trial_s,
    )
    return started


def commit(files: FleetFiles, trial: Trial) -> State:
    """Step 3: the candidate is what runs now."""
    running = Running(
        version=trial.version,
        sha256=trial.sha256,
        applied_at=format_ts(datetime.now(UTC)),
        signed_by=trial.signed_by,
        previous_version=trial.previous.version,
    )
    outcome = Outcome(
        ConfigResult.APPLIED,
        trial.version,
        signed_by=trial.signed_by,
        key_id=trial.key_id,
        previous_version=trial.previous.version,
    )
    state = State(running, outcome)
    files.write_state(state)
    files.remove_trial()
    log.warning("configuration version %d committed", trial.version)
    return state


def rollback(files: FleetFiles, trial: Trial, reason: str) -> State:
    """Step 3, the other way: the previous config back in place, the state says why."""
    write_durably(files.config, trial.previous_config.encode("utf-8", errors="surrogateescape"))
    outcome = Outcome(
        ConfigResult.ROLLED_BACK,
        trial.version,
        reason=reason,
        signed_by=trial.signed_by,
        key_id=trial.key_id,
        previous_version=trial.previous.version,
    )
    state = State(trial.previous, outcome)
    files.write_state(state)
    files.remove_trial()
    log.error(
        "configuration version %d rolled back to version %d: %s",
        trial.version,
        trial.previous.version,
        reason,
    )
    return state
