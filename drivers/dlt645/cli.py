"""`gateway scan dlt645`: ask the one meter on a bus for its address (commissioning)."""

from __future__ import annotations

import asyncio
import sys

import click

from drivers.dlt645.codec import Frame, Function, build_read_address
from drivers.dlt645.link import NoReply, SerialLink
from drivers.dlt645.settings import BusSettings, Parity
from gateway.sdk.serialport import PortError

__all__ = ["scan", "scan_address"]


def _is_address_reply(frame: Frame) -> bool:
    return frame.is_reply and frame.function == Function.READ_ADDRESS


async def scan_address(bus: BusSettings, timeout_s: float) -> str:
    """The address of the only meter on the bus, in label order.

    Every meter answers the broadcast request, so with several connected the replies
    collide and nothing valid arrives (NoReply).
    """
    link = SerialLink(bus)
    link.open()
    try:
        frame = await link.transact(build_read_address(), _is_address_reply, timeout_s)
    finally:
        link.close()
    if frame.is_abnormal:
        flags = frame.error()
        raise NoReply(f"the meter refused the address request: {flags.describe() if flags else ''}")
    # The reply carries the address twice: in the header and, reversed, in the data.
    if len(frame.data) == 6 and frame.data[::-1].hex() != frame.address:
        raise NoReply(
            f"reply header says {frame.address} but its data says {frame.data[::-1].hex()}"
        )
    return frame.address


@click.command()
@click.option("--port", required=True, help="Serial port of the RS-485 adapter, e.g. /dev/ttyUSB1.")
@click.option("--baud", type=int, default=2400, show_default=True)
@click.option(
    "--parity", type=click.Choice([p.value for p in Parity]), default="E", show_default=True
)
@click.option("--timeout", "timeout_s", type=float, default=2.0, show_default=True, help="Seconds.")
def scan(port: str, baud: int, parity: str, timeout_s: float) -> None:
    """Read the address of the one DL/T 645 meter connected to PORT (broadcast request)."""
    try:
        bus = BusSettings(port=port, baud=baud, parity=Parity(parity))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    try:
        address = asyncio.run(scan_address(bus, timeout_s))
    except PortError as exc:
        click.echo(f"error: {exc}", err=True)
        click.echo(
            "check the port name and that no other program (the gateway service) holds it", err=True
        )
        sys.exit(1)
    except NoReply as exc:
        click.echo(f"error: {exc}", err=True)
        click.echo(
            f"check: only ONE meter connected (all meters answer a broadcast), {baud} 8{parity}1, "
            "A/B wires (swap them), meter powered",
            err=True,
        )
        sys.exit(1)
    wire = bytes.fromhex(address)[::-1].hex(" ")
    click.echo(f"meter address {address}  (as on the label; on the wire: {wire})")
    click.echo(
        f'config: driver: {{type: dlt645, bus: {{port: {port}, baud: {baud}, parity: {parity}}}, address: "{address}"}}'
    )
