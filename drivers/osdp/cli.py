"""`gateway osdp pseudonym`: the pseudonym of a card, for an installer's allow list."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.config.cli import config_option, load_or_exit

from .pseudonym import PseudonymError, card_pseudonym
from .settings import OsdpSettings, SecretError, read_site_secret
from .wiegand import WiegandError, encode, parse_card_spec

__all__ = ["osdp_group", "pseudonym"]


@click.group("osdp")
def osdp_group() -> None:
    """OSDP card readers (installers)."""


@osdp_group.command("pseudonym")
@config_option
@click.option("--device", default=None, help="Reader whose site secret to use (default: first).")
@click.option("--wiegand", "wiegand", default=None, help="FACILITY:NUMBER as printed on the card.")
@click.option("--card-hex", default=None, help="The card's bits as hex, MSB first, as read.")
@click.option("--bits", type=int, default=26, show_default=True, help="Card length in bits.")
def pseudonym(
    config_path: Path, device: str | None, wiegand: str | None, card_hex: str | None, bits: int
) -> None:
    """Print a card's pseudonym (one line, for the allow list file); nothing else is stored.

    The site secret comes from the config's OSDP readers.
    """
    if (wiegand is None) == (card_hex is None):
        raise click.UsageError("give exactly one of --wiegand FACILITY:NUMBER or --card-hex HEX")
    loaded = load_or_exit(config_path)
    readers = [d for d in loaded.devices if isinstance(d.settings, OsdpSettings)]
    if device is not None:
        readers = [d for d in readers if d.id == device]
    if not readers:
        where = f"device {device!r}" if device else "any OSDP reader"
        click.echo(f"error: {config_path} has no {where}", err=True)
        sys.exit(1)
    settings = readers[0].settings_as(OsdpSettings)
    try:
        secret = read_site_secret(settings.site_secret)
        if wiegand is not None:
            data = encode(*parse_card_spec(wiegand), bits=bits)
        else:
            assert card_hex is not None
            data = bytes.fromhex(card_hex.replace(" ", "").removeprefix("0x"))
        token = card_pseudonym(secret, data, bits)
    except (SecretError, WiegandError, PseudonymError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except ValueError:
        click.echo(f"error: --card-hex {card_hex!r} is not hex", err=True)
        sys.exit(1)
    click.echo(token)
