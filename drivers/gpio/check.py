"""`gateway gpio check`: an installer's hardware check of every configured GPIO line.

For each configured line it reports the state now (level and meaning, e.g. `door open
(level 1)`) and every edge seen during a short window, in which the installer presses
each button and opens each door.  It goes through the driver's own `EdgeSource` (the
real libgpiod request on a Pi), so what it shows is what the driver will see.

It switches nothing unless asked: a relay output is not even requested (requesting an
output drives it).  With `--toggle` each relay is requested off, switched on for
`pulse_s` during the window, then off again.  Stop the gateway service first: a line
it holds is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from gateway.config.cli import config_option, load_or_exit
from gateway.sdk.driver import DeviceSpec

from .driver import _describe, _inputs
from .relay import Relay
from .settings import GpioSettings, Role
from .source import ChipUnavailable, EdgeSource, LineConfig, Opener, open_gpiod

__all__ = ["LineReport", "check_lines", "format_report", "gpio_group"]

PULSE_S = 0.5


@dataclass(slots=True)
class LineReport:
    """What one configured line did during the check."""

    device: str
    chip: str
    offset: int
    role: Role
    level: int | None = None  # at the start of the window; None: not read
    state: str = ""  # the level's meaning: "open", "pressed", "on"
    edges: list[int] = field(default_factory=list)  # levels of the edges seen, in order
    note: str = ""  # what was done to an output, or why the line was not requested
    fault: str = ""


@dataclass(slots=True)
class _Chip:
    lines: dict[int, LineConfig] = field(default_factory=dict)
    inputs: dict[int, tuple[LineReport, int]] = field(default_factory=dict)  # report, active
    relays: dict[int, tuple[LineReport, Relay]] = field(default_factory=dict)


def _plan(specs: Sequence[DeviceSpec], toggle: bool) -> tuple[dict[str, _Chip], list[LineReport]]:
    chips: dict[str, _Chip] = defaultdict(_Chip)
    reports: list[LineReport] = []
    used: dict[tuple[str, int], str] = {}  # (chip, line) -> device, as the driver refuses
    for spec in specs:
        s = spec.settings_as(GpioSettings)
        chip = chips[s.chip]
        lines = [s.line] if s.rex_line is None else [s.line, s.rex_line]
        if clash := next((o for o in lines if (s.chip, o) in used), None):
            report = LineReport(spec.id, s.chip, clash, s.role)
            report.fault = f"line {clash} is already used by device {used[(s.chip, clash)]}"
            reports.append(report)
            continue
        used.update(((s.chip, o), spec.id) for o in lines)
        if s.role is Role.RELAY:
            relay = Relay(spec, s.chip, s.line, s.active)
            report = LineReport(spec.id, s.chip, s.line, s.role)
            reports.append(report)
            if toggle:
                chip.lines[s.line] = relay.config  # requested off
                chip.relays[s.line] = (report, relay)
            else:
                report.note = "output not requested (that would switch it); --toggle pulses it"
            continue
        for i in _inputs(spec):
            report = LineReport(spec.id, s.chip, i.offset, i.role)
            reports.append(report)
            chip.lines[i.offset] = i.config
            chip.inputs[i.offset] = (report, i.active_level)
    return chips, reports


async def _check_chip(
    path: str, chip: _Chip, window_s: float, pulse_s: float, opener: Opener
) -> None:
    every = [r for r, _ in chip.inputs.values()] + [r for r, _ in chip.relays.values()]
    if not chip.lines:
        return
    try:
        source = opener(path, chip.lines)
    except ChipUnavailable as exc:
        for report in every:
            report.fault = str(exc)
        return
    try:
        for offset, (report, active) in chip.inputs.items():
            report.level = source.read(offset)
            report.state = _describe(report.role, report.level == active)
        for report, relay in chip.relays.values():
            report.level = relay.level(False)
            report.state = "off"
        async with asyncio.TaskGroup() as group:
            group.create_task(_watch(source, chip, window_s))
            if chip.relays:
                group.create_task(_toggle(source, chip, pulse_s))
    except* ChipUnavailable as exc:
        for report in every:
            report.fault = report.fault or str(exc.exceptions[0])
    finally:
        source.close()


async def _watch(source: EdgeSource, chip: _Chip, window_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(window_s):
            async for offset, level, _ts in source:
                if offset in chip.inputs:
                    chip.inputs[offset][0].edges.append(level)


async def _toggle(source: EdgeSource, chip: _Chip, pulse_s: float) -> None:
    for offset, (report, relay) in chip.relays.items():
        source.write(offset, relay.level(True))
        report.note = f"switched on for {pulse_s:g} s"
        await asyncio.sleep(pulse_s)
        source.write(offset, relay.level(False))
        report.note += ", then off"


async def check_lines(
    specs: Sequence[DeviceSpec],
    *,
    window_s: float,
    toggle: bool = False,
    pulse_s: float = PULSE_S,
    opener: Opener = open_gpiod,
) -> list[LineReport]:
    """Every configured line's state and the edges seen within `window_s`, chips at once."""
    chips, reports = _plan(specs, toggle)
    await asyncio.gather(
        *(_check_chip(path, chip, window_s, pulse_s, opener) for path, chip in chips.items())
    )
    return reports


def format_report(reports: Sequence[LineReport]) -> list[str]:
    """One line of text per configured line, columns aligned."""
    rows = [("DEVICE", "LINE", "ROLE", "STATE", "EDGES")]
    for r in reports:
        if r.fault:
            state, edges = f"FAULT {r.fault}", ""
        else:
            state = f"{r.state} (level {r.level})" if r.level is not None else ""
            state = ", ".join(x for x in (state, r.note) if x)
            edges = f"{len(r.edges)}" + (f": {' '.join(map(str, r.edges))}" if r.edges else "")
            if r.role is Role.RELAY:
                edges = ""
        rows.append((r.device, f"{r.chip}:{r.offset}", str(r.role), state, edges))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


@click.group(name="gpio")
def gpio_group() -> None:
    """GPIO lines (installers)."""


@gpio_group.command(name="check")
@config_option
@click.option(
    "--seconds",
    type=click.FloatRange(0.1, 600),
    default=10.0,
    show_default=True,
    help="How long to watch for edges: press each button, open each door meanwhile.",
)
@click.option("--toggle", is_flag=True, help="Switch each relay output on briefly, then off.")
@click.option("--device", "device_ids", multiple=True, help="Only these devices (repeatable).")
@click.pass_context
def check_command(
    ctx: click.Context,
    config_path: Path,
    seconds: float,
    toggle: bool,
    device_ids: tuple[str, ...],
) -> None:
    """Report each configured GPIO line's state and the edges seen for a few seconds.

    Switches nothing unless --toggle is given.  Stop the gateway service first
    (sudo systemctl stop community-gateway): the lines it holds are busy.
    Exit status 1 when a chip cannot be opened.
    """
    loaded = load_or_exit(config_path)
    specs = [d for d in loaded.devices if d.driver == "gpio"]
    if device_ids:
        unknown = sorted(set(device_ids) - {d.id for d in specs})
        if unknown:
            click.echo(f"no gpio device {', '.join(map(repr, unknown))} in {config_path}", err=True)
            sys.exit(2)
        specs = [d for d in specs if d.id in device_ids]
    if not specs:
        click.echo(f"no gpio devices in {config_path}")
        return
    # Tests hand in an opener of the fake chip; a real run uses libgpiod.
    obj = ctx.obj if isinstance(ctx.obj, Mapping) else {}
    opener: Opener = obj.get("gpio_opener", open_gpiod)
    click.echo(
        f"watching {len(specs)} GPIO devices for {seconds:g} s: press each button, "
        f"open and close each door now"
        + ("; each relay is switched on briefly" if toggle else "; relays are left alone")
    )
    reports = asyncio.run(check_lines(specs, window_s=seconds, toggle=toggle, opener=opener))
    for line in format_report(reports):
        click.echo(line)
    faults = [r for r in reports if r.fault]
    if faults:
        click.echo(
            "check the chip with `gpiodetect` and the lines with `gpioinfo`; a line held by "
            "the running gateway is busy: stop the service first",
            err=True,
        )
        sys.exit(1)
