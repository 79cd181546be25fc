"""The `gateway` command line: a table of command name -> where it lives, imported on use.

`gateway --help` and each command import only what that command needs (see `lazy`):
no driver, alarm engine or web console for `gateway validate`, and no command at all
for `--help`.  Drivers add their commands through entry points (`lazy.COMMANDS_GROUP`,
`lazy.SCAN_GROUP` in pyproject.toml).

May import: every package of `gateway` (inside the commands, on use).
"""

from __future__ import annotations

import click

from gateway import __version__
from gateway.cli.lazy import COMMANDS_GROUP, SCAN_GROUP, LazyGroup

__all__ = ["COMMANDS", "main"]

# name -> "module:attr"; tests/test_cli_startup.py checks each one loads and is listed.
COMMANDS: dict[str, str] = {
    "validate": "gateway.cli.core:validate",
    "devices": "gateway.cli.core:devices",
    "run": "gateway.cli.run:run",
    "outbox": "gateway.cli.core:outbox",
    "read": "gateway.cli.core:read",
    "watch": "gateway.cli.watch:watch",
    "check": "gateway.cli.installer:check",
    "ports": "gateway.cli.installer:ports",
    "provision": "gateway.cli.installer:provision",
    "firstboot": "gateway.cli.installer:firstboot",
    "alarms": "gateway.alarms.cli:alarms",
    "ack": "gateway.alarms.cli:ack",
    "staff": "gateway.web.cli:staff",
    "notify": "gateway.notify.cli:notify",
    "security": "gateway.security.cli:security",
    "config": "gateway.fleet.cli:config",
}


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    plugins=COMMANDS_GROUP,
    context_settings={"help_option_names": ["-h", "--help"]},
)
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
    from gateway.process.logsetup import setup_logging

    ctx.obj = {"log_level": log_level, "log_format": log_format}
    setup_logging(log_level or "info", log_format or "text")


@main.group(cls=LazyGroup, plugins=SCAN_GROUP)
def scan() -> None:
    """Find devices on a bus (installers)."""
