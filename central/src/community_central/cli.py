"""`community-central`: run the ticket service, list tickets, acknowledge one."""

from __future__ import annotations

import faulthandler
import json
import logging
import re
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .database import is_url
from .fair import Budget
from .options import broker_options, broker_settings
from .records import AckStatus, Ticket, TicketState, parse_ticket_id

if TYPE_CHECKING:
    from .store import TicketStore

__all__ = ["main", "percentile"]

_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class DbTarget(click.ParamType):
    """`--db`: a postgresql:// URL, or a SQLite file (that must exist unless serving)."""

    name = "FILE|URL"

    def __init__(self, *, exists: bool) -> None:
        self.exists = exists

    def convert(self, value: Any, param: Any, ctx: Any) -> str | Path:
        if isinstance(value, Path) or is_url(value):
            return value
        path = click.Path(path_type=Path, dir_okay=False, exists=self.exists)
        converted: Path = path.convert(value, param, ctx)
        return converted


db_option = click.option(
    "--db",
    "db_path",
    type=DbTarget(exists=True),
    required=True,
    help="The tickets' database: a SQLite file, or a postgresql://user@host/dbname URL.",
)


def _open(db_path: str | Path) -> TicketStore:
    from .store import TicketStore

    errors: tuple[type[Exception], ...] = (sqlite3.Error, OSError)
    if is_url(db_path):  # psycopg costs a SQLite user a tenth of a second: only for a URL
        try:
            import psycopg
        except ImportError:
            raise click.BadParameter(
                "PostgreSQL needs psycopg: pip install 'community-central[postgres]'",
                param_hint="--db",
            ) from None
        errors += (psycopg.Error,)
    try:
        return TicketStore(db_path)
    except errors as exc:
        shown = str(db_path).split("@")[-1] if is_url(db_path) else db_path
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise click.BadParameter(f"{shown}: {reason}", param_hint="--db") from exc


class _Main(click.Group):
    """The top group; `fleet` is imported only when it is asked for (or for `--help`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), "fleet"})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "fleet":
            from .fleet.cli import fleet

            return fleet
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Main)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def main(log_level: str) -> None:
    """The community ticket service (central side): one ticket per alarm, routed to a team."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _default_client_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40] or "host"
    return f"tickets-{host}"


@main.command()
@broker_options
@click.option(
    "--db",
    "db_path",
    type=DbTarget(exists=False),
    required=True,
    help="The tickets' database, shared by the instances sharing the load: a SQLite file"
    " (created if missing) or a postgresql://user@host/dbname URL (several machines).",
)
@click.option(
    "--group", default="tickets", show_default=True, help="Shared subscription group name."
)
@click.option(
    "--routes",
    "routes_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="YAML file mapping alarm types to teams (central/docs/tickets.md).",
)
@click.option(
    "--client-id",
    default=None,
    help="MQTT client id; its broker session queues alarms while the service is down. "
    "Each instance needs its own. [default: tickets-HOSTNAME]",
)
@click.option(
    "--session-expiry",
    type=click.IntRange(60, 2**32 - 1),
    default=7 * 24 * 3600,
    show_default=True,
    help="Seconds the broker keeps this instance's session (and queues its alarms) while it is down.",
)
@click.option(
    "--reconcile-every",
    type=click.FloatRange(min=1),
    default=600,
    show_default=True,
    help="Seconds between re-reads of every retained alarm, which heal any lost message.",
)
@click.option(
    "--gateway-rate",
    type=click.FloatRange(min=0.1),
    default=Budget().rate_per_s,
    show_default=True,
    help="Alarm documents a second each gateway gets processed; the excess waits, coalesced.",
)
@click.option(
    "--gateway-burst",
    type=click.IntRange(min=1),
    default=Budget().burst,
    show_default=True,
    help="Alarm documents a gateway may send at once before its rate applies.",
)
@click.option(
    "--signing-key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Ed25519 private key (gateway security keygen) that signs acknowledgements; "
    "gateways that trust its public key refuse unsigned ones.",
)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds given to an orderly stop after SIGTERM; work still busy then (e.g."
    " waiting on a peer's database lock) is abandoned, logged, and exits with status 1.",
)
def serve(
    db_path: str | Path,
    group: str,
    routes_path: Path | None,
    client_id: str | None,
    session_expiry: int,
    reconcile_every: float,
    gateway_rate: float,
    gateway_burst: int,
    signing_key: Path | None,
    stop_timeout: float,
    **broker_kw: Any,
) -> None:
    """Open a ticket for every alarm of every gateway, and deliver acknowledgements."""
    # The service's modules (paho, the contract's schemas, pydantic) are imported here,
    # not at the top: `list`, `ack` and `stats` are what staff type, and need none of them.
    from .lifecycle import run_until_signalled
    from .routing import load_routes
    from .service import ServiceConfig, TicketService
    from .yamlfile import ConfigError

    client_id = client_id or _default_client_id()
    for name, value in (("--client-id", client_id), ("--group", group)):
        if not _LEVEL.match(value):
            raise click.BadParameter(
                f"{value!r}: 1-64 letters, digits, '_', '.', '-' (it becomes a topic level)",
                param_hint=name,
            )
    broker = broker_settings(broker_kw)
    try:
        routes = load_routes(routes_path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{routes_path}: not started", err=True)
        sys.exit(2)
    signer = None
    if signing_key is not None:
        from .signing import CommandSigner, load_private_key

        try:
            signer = CommandSigner(load_private_key(signing_key))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--signing-key") from exc
    _open(db_path).close()  # a database that cannot be opened stops us here
    # `kill -USR1` writes every thread's stack to the log: what a hung service is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    cfg = ServiceConfig(
        broker,
        db_path,
        client_id,
        group,
        session_expiry_s=session_expiry,
        reconcile_every_s=reconcile_every,
        budget=Budget(rate_per_s=gateway_rate, burst=gateway_burst),
        signer=signer,
    )
    run_until_signalled(TicketService(cfg, routes).run, grace_s=stop_timeout)


def _ago(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _row(t: Ticket) -> dict[str, Any]:
    device = t.alarm.get("device") or {}
    event = t.event()
    return {
        "ticket": t.ticket_id,
        "state": str(t.state),
        "team": t.team,
        "type": t.alarm_type,
        "severity": t.severity,
        "site": t.site,
        "gateway": t.gateway,
        "alarm_id": t.alarm_id,
        "alarm_state": t.alarm_state,
        "alarm_rev": t.alarm_rev,
        "device": device.get("id"),
        "location": device.get("location"),
        "raised_at": t.raised_at,
        "opened_at": event["opened_at"],
        "open_s": round(t.open_latency_s, 3),
        "acknowledged_by": t.acknowledged_by,
        "ack_note": t.ack_note,
        "ack_s": None if t.ack_latency_s is None else round(t.ack_latency_s, 3),
        "ack_error": t.last_ack_error,
        "resolved_at": event["resolved_at"],
    }


@main.command("list")
@db_option
@click.option("--state", type=click.Choice([s.value for s in TicketState]), default=None)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(db_path: str | Path, state: str | None, limit: int, as_json: bool) -> None:
    """Tickets, newest first, with raised → opened and raised → acknowledged times."""
    store = _open(db_path)
    try:
        found = store.tickets(TicketState(state) if state else None, limit)
    finally:
        store.close()
    if as_json:
        for t in found:
            click.echo(json.dumps(_row(t), ensure_ascii=False))
        return
    if not found:
        click.echo("no tickets")
        return
    click.echo(
        f"{'TICKET':9} {'STATE':12} {'TEAM':12} {'TYPE':11} {'SEV':8} {'GATEWAY':24} "
        f"{'ALARM':14} {'DEVICE':18} {'OPENED':19} {'OPEN_S':>7} {'ACK_S':>8}  BY"
    )
    for t in found:
        r = _row(t)
        click.echo(
            f"{r['ticket']:9} {r['state']:12} {r['team']:12} {r['type']:11} {r['severity']:8} "
            f"{t.site + '/' + t.gateway:24} {t.alarm_id:14} {r['device'] or '-'!s:18} "
            f"{_ago(t.opened_ts):19} {_secs(r['open_s']):>7} {_secs(r['ack_s']):>8}  "
            f"{t.acknowledged_by or '-'}"
            + (f"  (ack error: {t.last_ack_error})" if t.last_ack_error else "")
        )


@main.command()
@click.argument("ticket")
@click.option("--by", required=True, help="Staff id of who acknowledges (1-64 characters).")
@click.option("--note", default="", help="What they are doing about it (at most 500 characters).")
@db_option
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the gateway's answer.",
)
def ack(ticket: str, by: str, note: str, db_path: str | Path, wait: float) -> None:
    """Acknowledge TICKET: the service sends it to the gateway that raised the alarm."""
    try:
        number = parse_ticket_id(ticket)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="TICKET") from exc
    store = _open(db_path)
    try:
        try:
            current = store.get(number)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from exc
        if current.acknowledged_by is not None:
            click.echo(
                f"{current.ticket_id} is already acknowledged by {current.acknowledged_by}"
                f" ({current.state})"
            )
            return
        try:
            request_id = store.request_ack(number, by, note, time.time())
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        deadline = time.monotonic() + wait
        while True:
            req = store.ack_request(request_id)
            assert req is not None
            if req.status is not AckStatus.PENDING or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    finally:
        store.close()
    where = f"{req.site}/{req.gateway} alarm {req.alarm_id}"
    if req.status is AckStatus.ERROR:
        raise click.ClickException(f"{current.ticket_id}: {where} refused it: {req.error}")
    if req.status is AckStatus.PENDING:
        if req.attempts:
            click.echo(
                f"{current.ticket_id}: acknowledgement sent to {where}, no answer yet; the "
                f"ticket service sends it again until the gateway answers (request {request_id})"
            )
        else:
            click.echo(
                f"{current.ticket_id}: acknowledgement queued, not sent yet: is `community-"
                f"central serve` running? It goes to {where} when it runs (request {request_id})"
            )
        return
    click.echo(f"{current.ticket_id}: {where} answered {req.status}; acknowledged by {by}")


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@main.command()
@db_option
@click.option("--json", "as_json", is_flag=True)
def stats(db_path: str | Path, as_json: bool) -> None:
    """Ticket counts, and raised → opened / acknowledged times (p50, p99)."""
    store = _open(db_path)
    try:
        every = store.tickets()
        counters = store.counters()
    finally:
        store.close()
    opened = [t.open_latency_s for t in every]
    acked = [t.ack_latency_s for t in every if t.ack_latency_s is not None]
    out: dict[str, Any] = {
        "tickets": len(every),
        "by_state": {s.value: sum(t.state is s for t in every) for s in TicketState},
        "by_team": {
            team: sum(t.team == team for t in every) for team in sorted({t.team for t in every})
        },
        "open_s": {"p50": percentile(opened, 0.5), "p99": percentile(opened, 0.99)},
        "ack_s": {"p50": percentile(acked, 0.5), "p99": percentile(acked, 0.99)},
        # refused_mismatch: document about another gateway than its topic; refused_schema:
        # fails alarm.json; deferred/coalesced/dropped: a gateway over its alarm budget.
        "counters": counters,
    }
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(
        f"tickets: {out['tickets']}  " + "  ".join(f"{k}={v}" for k, v in out["by_state"].items())
    )
    click.echo("teams:   " + "  ".join(f"{k}={v}" for k, v in out["by_team"].items()))
    click.echo(
        f"raised → opened:       p50 {_secs(out['open_s']['p50'])} s  p99 {_secs(out['open_s']['p99'])} s"
    )
    click.echo(
        f"raised → acknowledged: p50 {_secs(out['ack_s']['p50'])} s  p99 {_secs(out['ack_s']['p99'])} s"
        f"  ({len(acked)} acknowledged)"
    )
    click.echo("counters: " + ("  ".join(f"{k}={v}" for k, v in counters.items()) or "none"))
