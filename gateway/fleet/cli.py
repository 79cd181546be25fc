"""`gateway config status`: which configuration runs, what is being tried, how the last one went."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from gateway.sdk.options import config_option

from .state import FleetFiles, sha256_of

__all__ = ["config", "status_of"]


def status_of(config_path: Path) -> dict[str, Any]:
    """The remote configuration state of `config_path`, as `gateway config status --json` prints it."""
    files = FleetFiles(config_path)
    state, trial = files.read_state(), files.read_trial()
    try:
        sha = sha256_of(files.config_bytes())
    except OSError as exc:
        raise click.ClickException(f"cannot read {config_path}: {exc.strerror or exc}") from exc
    running = asdict(state.running)
    running["changed_on_site"] = bool(state.running.sha256) and sha != state.running.sha256
    running["file_sha256"] = sha
    last = None
    if state.last is not None:
        last = {**asdict(state.last), "result": str(state.last.result)}
    pending = None
    if trial is not None:
        pending = {
            "version": trial.version,
            "signed_by": trial.signed_by,
            "attempts": trial.attempts,
            "trial_s": trial.trial_s,
            "previous_version": trial.previous.version,
        }
    return {"config": str(config_path), "running": running, "trial": pending, "last": last}


@click.group()
def config() -> None:
    """Remote configuration of this gateway (docs/fleet.md)."""


@config.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def status(config_path: Path, as_json: bool) -> None:
    """What runs (version, hash, who signed it), what is being tried, how the last one went."""
    doc = status_of(config_path)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    run = doc["running"]
    click.echo(f"config      {doc['config']}")
    origin = "installed on site" if run["version"] == 0 else f"signed by {run['signed_by']}"
    click.echo(
        f"running     version {run['version']} ({origin}), applied {run['applied_at'] or '-'}"
    )
    click.echo(f"sha256      {run['file_sha256']}")
    if run["changed_on_site"]:
        click.echo("            the file was changed on site since it was applied")
    trial = doc["trial"]
    if trial is None:
        click.echo("pending     nothing")
    else:
        state = "switched, not started yet" if trial["attempts"] == 0 else "being tried now"
        click.echo(
            f"pending     version {trial['version']} signed by {trial['signed_by']}: {state}"
            f" (committed once back at the broker within {trial['trial_s']:g} s)"
        )
    last = doc["last"]
    if last is not None:
        click.echo(f"last        version {last['desired_version']}: {last['result']}")
        if last["reason"]:
            click.echo(f"            {last['reason']}")
        for p in last["problems"]:
            click.echo(f"            {p['path'] or '(document)'}: {p['message']}")
