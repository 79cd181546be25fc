"""The broker options every `community-central` command that connects shares, defined once.

`serve` and the `fleet` commands take the same five: where the broker is, the topic
prefix, and the credentials and CA of a TLS broker.  `broker_settings` turns them into
checked `BrokerSettings`, a wrong one ending the command with the option's name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from community_protocol.topics import DEFAULT_PREFIX

if TYPE_CHECKING:
    from .broker import BrokerSettings

__all__ = ["broker_options", "broker_settings"]

F = TypeVar("F", bound=Callable[..., Any])

_File = click.Path(path_type=Path, dir_okay=False, exists=True)

_OPTIONS = [
    click.option(
        "--broker", "broker_url", required=True, help="mqtt://host:1883 or mqtts://host:8883"
    ),
    click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="Topic prefix."),
    click.option("--username", default=None, help="Broker user name."),
    click.option(
        "--password-file",
        type=_File,
        default=None,
        help="File holding the broker password (never on the command line).",
    ),
    click.option(
        "--ca-file",
        type=_File,
        default=None,
        help="CA certificate of an mqtts:// broker [default: the system's trusted CAs].",
    ),
]


def broker_options(fn: F) -> F:
    """Add --broker, --prefix, --username, --password-file and --ca-file to a command."""
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return fn


def broker_settings(kw: dict[str, Any]) -> BrokerSettings:
    """Take the broker options out of a command's keyword arguments, checked.

    click.BadParameter names the option at fault, including a password file that
    cannot be read.
    """
    from .broker import BrokerSettings  # paho: only for the commands that connect

    try:
        broker = BrokerSettings(
            kw.pop("broker_url"),
            kw.pop("prefix"),
            username=kw.pop("username"),
            password_file=kw.pop("password_file"),
            ca_file=kw.pop("ca_file"),
        )
        broker.password()
    except ValueError as exc:
        hint, _, message = str(exc).partition(": ")
        raise click.BadParameter(message, param_hint=hint) from exc
    except OSError as exc:
        raise click.BadParameter(f"cannot read it: {exc}", param_hint="--password-file") from exc
    return broker
