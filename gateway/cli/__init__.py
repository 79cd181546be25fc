"""The `gateway` command line: one module per command group, registered here explicitly."""

from __future__ import annotations

import click

from gateway import __version__
from gateway.alarms.cli import COMMANDS as ALARM_COMMANDS
from gateway.cli import core, installer, watch
from gateway.notify.cli import notify
from gateway.process.logsetup import setup_logging
from gateway.security.cli import security
from gateway.tickets.cli import tickets
from gateway.web.cli import COMMANDS as WEB_COMMANDS

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gateway")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Overrides the config's logging.level.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Text for people, JSON lines for log shippers; overrides the config.",
)
@click.pass_context
def main(ctx: click.Context, log_level: str | None, log_format: str | None) -> None:
    """Community IoT edge gateway: device drivers, durable outbox, MQTT uplink."""
    ctx.obj = {"log_level": log_level, "log_format": log_format}
    setup_logging(log_level or "info", log_format or "text")


@main.group()
def scan() -> None:
    """Find devices on a bus (installers)."""


for command in [*core.COMMANDS, *watch.COMMANDS]:
    main.add_command(command)
for command in installer.COMMANDS:
    main.add_command(command)
for command in ALARM_COMMANDS:
    main.add_command(command)
main.add_command(tickets)
main.add_command(notify)
main.add_command(security)
for command in WEB_COMMANDS:
    main.add_command(command)


def _attach_driver_commands() -> None:
    # Driver-contributed commands come from the same entry points as the drivers.
    from gateway.sdk.registry import available_drivers

    for info in available_drivers().values():
        if info.scan_command is not None:
            scan.add_command(info.scan_command, info.name)
        for command in info.cli_commands:
            main.add_command(command)


_attach_driver_commands()
