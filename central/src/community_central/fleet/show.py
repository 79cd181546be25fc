"""How the `fleet` commands print their results: one line per gateway, wave or audit row."""

from __future__ import annotations

import json
import time

import click

from .api import PushOutcome, RolloutReport
from .audit import AuditRow
from .inventory import GatewayView

__all__ = ["audit_line", "outcome_line", "print_rollout", "view_line"]


def view_line(v: GatewayView) -> str:
    """One row of `fleet list`: state, software, config version and result, backlog."""
    result = v.config_result or "-"
    if v.desired_version is not None and v.config_result != "applied":
        result = f"{result} v{v.desired_version}"
    depth = "-" if v.outbox_depth is None else str(v.outbox_depth)
    config = "-" if v.config_version is None else str(v.config_version)
    return (
        f"{v.key:32} {v.state or '-':8} {v.software or '-':10} {config:>6} {result:16} "
        f"{depth:>7}  {v.last_seen or '-'}" + (f"  ({v.reason})" if v.reason else "")
    )


def outcome_line(o: PushOutcome) -> str:
    """A gateway's answer to a push, with the problems it reported, one a line."""
    line = f"{o.key}: version {o.version} {o.result} in {o.seconds:.1f} s"
    if o.reason:
        line += f": {o.reason}"
    for p in o.problems:
        line += f"\n  {p.get('path') or '(document)'}: {p.get('message')}"
    return line


def print_rollout(report: RolloutReport, as_json: bool, done: str = "applied it") -> None:
    """Echo a rollout wave by wave, and where it stopped (or one JSON object)."""
    if as_json:
        click.echo(json.dumps({
            "ok": report.ok,
            "waves": [[o.row() for o in wave] for wave in report.waves],
            "stopped_by": None if report.stopped_by is None else report.stopped_by.row(),
            "not_pushed": report.not_pushed,
        }, ensure_ascii=False))  # fmt: skip
        return
    for n, wave in enumerate(report.waves):
        click.echo(f"wave {n + 1} ({'canary' if n == 0 else 'batch'}, {len(wave)} gateways)")
        for o in wave:
            click.echo("  " + outcome_line(o).replace("\n", "\n  "))
    if report.stopped_by is not None:
        click.echo(
            f"stopped: {report.stopped_by.key} {report.stopped_by.result}; "
            f"{len(report.not_pushed)} gateways not pushed"
            + (f": {' '.join(report.not_pushed[:20])}" if report.not_pushed else "")
        )
    else:
        click.echo(f"done: {sum(len(w) for w in report.waves)} gateways {done}")


def audit_line(r: AuditRow) -> str:
    """One row of the audit trail: when, which gateway, what, its result, who signed."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.at))
    who = f" by {r.signed_by}" if r.signed_by else ""
    kid = f" key {r.key_id}" if r.key_id else ""
    version = "-" if r.version is None else str(r.version)
    what = f"release {r.release}" if r.release else f"v{version:>4}"
    line = f"{when} {r.site}/{r.gateway:24} {r.origin:8} {what} {r.result:12}{who}{kid}"
    return line + (f": {r.reason}" if r.reason else "")
