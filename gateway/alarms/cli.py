"""`gateway alarms` (a table of open and recent alarms) and `gateway ack` (staff on site).

`gateway ack` never changes an alarm itself: the gateway process owns the alarm
database's transitions.  It queues the acknowledgement in the database (`pending_acks`),
which the running gateway applies within a second and publishes through its outbox,
so also while the uplink is down; the command waits a few seconds for the answer.  If
no gateway runs, the acknowledgement waits in the queue until one starts.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from gateway.config import GatewayConfig
from gateway.config.cli import config_option, load_or_exit

from .engine import check_ack_fields
from .model import Alarm, AlarmState
from .store import AlarmStore

__all__ = ["ack", "alarms"]


def _store(config: GatewayConfig) -> AlarmStore | None:
    path = config.alarms.store_path(config.outbox.path)
    store = AlarmStore(path)
    try:
        store.open(create=False)
    except FileNotFoundError:
        return None
    return store


def _since(ts: datetime, now: datetime) -> str:
    s = int((now - ts).total_seconds())
    if s < 120:
        return f"{s}s ago"
    if s < 7200:
        return f"{s // 60}m ago"
    if s < 172800:
        return f"{s // 3600}h ago"
    return ts.strftime("%Y-%m-%d")


def _row(a: Alarm, now: datetime) -> tuple[str, ...]:
    loc = a.device.location
    where = " ".join(
        filter(None, [f"b{loc.get('building', '')}", loc.get("floor"), loc.get("unit")])
    )
    return (
        a.id,
        str(a.type),
        str(a.severity),
        str(a.state),
        a.device.id,
        where,
        _since(a.raised_at, now),
        str(a.escalation),
        a.ack.by if a.ack else "",
    )


@click.command()
@config_option
@click.option("--recent", default=20, show_default=True, help="How many closed alarms to show.")
@click.option("--json", "as_json", is_flag=True, help="The alarm documents as JSON lines.")
def alarms(config_path: Path, recent: int, as_json: bool) -> None:
    """Show open alarms and the most recently closed ones."""
    config = load_or_exit(config_path).config
    store = _store(config)
    if store is None:
        click.echo("no alarms yet (this gateway has no alarm database)")
        return
    try:
        listed = [
            *sorted(store.open_alarms(), key=lambda a: a.raised_at, reverse=True),
            *store.recent_closed(recent),
        ]
    finally:
        store.close()
    if as_json:
        for a in listed:
            click.echo(json.dumps(a.document(config.identity), ensure_ascii=False))
        return
    if not listed:
        click.echo("no alarms")
        return
    now = datetime.now(UTC)
    rows: list[tuple[str, ...]] = [
        ("ID", "TYPE", "SEVERITY", "STATE", "DEVICE", "LOCATION", "SINCE", "ESC", "ACKED BY")
    ]
    rows += [_row(a, now) for a in listed]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _describe(doc: dict[str, Any]) -> str:
    ack = doc.get("ack") or {}
    return f"{doc['alarm_id']} ({doc['type']}, {doc['device']['id']}) is {doc['state']}" + (
        f", acknowledged by {ack['by']} at {ack['at']}" if ack else ""
    )


@click.command()
@click.argument("alarm_id")
@click.option("--by", required=True, help="Staff id of who acknowledges.")
@click.option("--note", default="", help="Optional note (at most 500 characters).")
@click.option("--wait", default=5.0, show_default=True, help="Seconds to wait for the gateway.")
@config_option
def ack(alarm_id: str, by: str, note: str, wait: float, config_path: Path) -> None:
    """Acknowledge an alarm on site; published when the uplink is up."""
    try:
        check_ack_fields(by, note)
    except ValueError as exc:
        click.echo(f"refused: {exc}", err=True)
        sys.exit(2)
    config = load_or_exit(config_path).config
    store = _store(config)
    if store is None:
        click.echo(f"unknown alarm {alarm_id!r}: this gateway has no alarms yet", err=True)
        sys.exit(1)
    try:
        alarm = store.get(alarm_id)
        if alarm is None:
            click.echo(f"unknown alarm {alarm_id!r} on this gateway", err=True)
            sys.exit(1)
        if alarm.ack is not None or alarm.state is AlarmState.CLOSED:
            doc = alarm.document(config.identity)
            click.echo(f"already acknowledged: {_describe(doc)}")
            return
        ack_id = store.queue_ack(alarm_id, by, note, "cli")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            result = store.ack_result(ack_id)
            if result is not None and result.status is not None:
                break
            time.sleep(0.2)
        else:
            click.echo(
                f"queued: no running gateway took it within {wait:g} s; "
                "it is applied and published when the gateway runs"
            )
            return
    finally:
        store.close()
    if result.status in ("accepted", "already_acknowledged"):
        doc = json.loads(result.detail or "{}")
        word = "acknowledged" if result.status == "accepted" else "already acknowledged"
        click.echo(f"{word}: {_describe(doc)}")
        return
    click.echo(f"refused: {result.detail}", err=True)
    sys.exit(1)
