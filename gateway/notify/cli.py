"""`gateway notify log` (what was texted to whom) and `gateway notify test` (installers).

`test` talks to the modem directly, so run it while the gateway is stopped or before
the notifier is configured: two programs on one serial port garble each other's answers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.config.cli import config_option, load_or_exit

from .modem import Modem, ModemError
from .pdu import encode_submit
from .settings import SmsConfig
from .store import SmsStore

__all__ = ["notify"]


def _sms(config_path: Path) -> tuple[SmsConfig, Path]:
    config = load_or_exit(config_path).config
    sms = config.notify.sms
    if sms is None:
        click.echo(f"{config_path}: no notify.sms section; nothing is texted", err=True)
        sys.exit(2)
    return sms, sms.db_path or config.gateway.state_dir / "notify.db"


@click.group()
def notify() -> None:
    """SMS to the on-call list through a GSM/4G modem."""


@notify.command("log")
@config_option
@click.option("-n", "--limit", default=30, show_default=True, type=click.IntRange(1, 10_000))
def log_command(config_path: Path, limit: int) -> None:
    """The latest SMS: alarm, level, recipient, state, attempts (no phone numbers)."""
    _, db = _sms(config_path)
    store = SmsStore(db)
    try:
        store.open(create=False)
    except FileNotFoundError:
        click.echo("No SMS yet.")
        return
    try:
        records = store.recent(limit)
    finally:
        store.close()
    if not records:
        click.echo("No SMS yet.")
    for r in records:
        error = f"  ({r.last_error})" if r.last_error and r.state != "sent" else ""
        click.echo(
            f"{r.created_at}  {r.alarm_id:<10} level {r.level}  {r.recipient:<16} "
            f"{r.state:<9} tries {r.attempts}{error}"
        )


@notify.command("test")
@config_option
@click.option("--to", "recipient", required=True, help="A name from notify.sms.on_call.")
@click.option("--text", default="Test message from the community gateway. 测试短信。")
def test_command(config_path: Path, recipient: str, text: str) -> None:
    """Send one SMS now, to check the modem, the SIM and the number."""
    sms, _ = _sms(config_path)
    person = next((p for p in sms.on_call if p.name == recipient), None)
    if person is None:
        names = ", ".join(p.name for p in sms.on_call)
        click.echo(f"no one called {recipient!r} in notify.sms.on_call (there: {names})", err=True)
        sys.exit(2)
    modem = Modem(
        sms.port,
        sms.baudrate,
        pin_file=sms.pin_file,
        command_timeout_s=sms.command_timeout_s,
        send_timeout_s=sms.send_timeout_s,
    )
    try:
        state = modem.prepare()
        click.echo(f"modem on {sms.port}: {state}")
        refs = modem.send(encode_submit(person.phone, text, max_parts=sms.max_parts))
    except ModemError as exc:
        click.echo(f"SMS not sent: {exc.reason}", err=True)
        sys.exit(1)
    finally:
        modem.close()
    click.echo(f"SMS sent to {person.name} (network reference {', '.join(map(str, refs))})")
