"""The console's building view: buildings as columns, floors as rows, a cell per unit.

Generated from the devices' `location` (no drawing to maintain).  Each cell takes the
worst state of the devices and alarms at its place: `alarm` (an alarm nobody has
acknowledged yet), `offline` (a device not reachable), `acknowledged` (an alarm someone
is dealing with), `fine`.  The console's script computes the same from the same data
when an event arrives (`placeState` in console.js).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from html import escape
from typing import Any
from urllib.parse import urlencode

from gateway.web.i18n import t, t_or
from gateway.web.live import DeviceState, LiveState
from gateway.web.meters import BUCKET_S, Usage
from gateway.web.settings import Lang

__all__ = [
    "Place",
    "PlaceState",
    "alarm_place_state",
    "at_place",
    "building_html",
    "place_states",
    "usage_svg",
]


class PlaceState(StrEnum):
    """A cell's colour, worst first."""

    ALARM = "alarm"
    OFFLINE = "offline"
    ACKNOWLEDGED = "acknowledged"
    FINE = "fine"


_ORDER = list(PlaceState)


@dataclass(frozen=True, slots=True)
class Place:
    """Building, floor ("" when none) and unit ("" when none) of a device."""

    building: str
    floor: str
    unit: str

    @classmethod
    def of(cls, location: dict[str, Any] | None) -> Place | None:
        loc = location or {}
        if not loc.get("building"):
            return None
        floor = loc.get("floor")
        return cls(str(loc["building"]), "" if floor is None else str(floor), loc.get("unit") or "")

    @property
    def key(self) -> str:
        """The cell's id in the page (`data-place`), the same the script builds."""
        return f"{self.building}|{self.floor}|{self.unit}"

    def query(self) -> str:
        return urlencode({"b": self.building, "f": self.floor, "u": self.unit})


def _worse(a: PlaceState, b: PlaceState) -> PlaceState:
    return a if _ORDER.index(a) <= _ORDER.index(b) else b


def alarm_place_state(doc: dict[str, Any]) -> PlaceState:
    """What one alarm makes of its place; maintenance (low) alarms colour nothing red."""
    if doc.get("state") == "closed":
        return PlaceState.FINE
    if doc.get("acknowledged"):
        return PlaceState.ACKNOWLEDGED if doc.get("state") != "cleared" else PlaceState.FINE
    return PlaceState.ALARM if doc.get("severity") != "low" else PlaceState.FINE


def place_states(
    devices: Iterable[DeviceState], alarms: Iterable[dict[str, Any]]
) -> dict[Place, PlaceState]:
    """Every place with a device, and its worst state."""
    out: dict[Place, PlaceState] = {}
    for d in devices:
        p = Place.of(d.location)
        if p is None:
            continue
        state = PlaceState.OFFLINE if d.available is False else PlaceState.FINE
        out[p] = _worse(out.get(p, PlaceState.FINE), state)
    for doc in alarms:
        p = Place.of((doc.get("device") or {}).get("location"))
        if p is None or p not in out:
            continue
        out[p] = _worse(out[p], alarm_place_state(doc))
    return out


def _natural(text: str) -> tuple[int, int, str]:
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def building_html(states: dict[Place, PlaceState], lang: Lang) -> str:
    """The grid: one column per building, its floors top down, a linked cell per unit."""
    buildings: dict[str, dict[str, list[Place]]] = {}
    for p in states:
        buildings.setdefault(p.building, {}).setdefault(p.floor, []).append(p)
    cols = []
    for b in sorted(buildings, key=_natural):
        rows = []
        for f in sorted(buildings[b], key=_natural, reverse=True):
            cells = "".join(
                f'<a class="cell place-{states[p]}" data-place="{escape(p.key)}" '
                f'href="/console/place?{escape(p.query())}" '
                f'title="{escape(t("c_place_" + states[p], lang))}">'
                f"{escape(p.unit or '·')}</a>"
                for p in sorted(buildings[b][f], key=lambda p: _natural(p.unit))
            )
            label = t("c_floor", lang).format(v=f) if f else ""
            rows.append(f'<div class="floor"><span class="fl">{escape(label)}</span>{cells}</div>')
        cols.append(
            f'<div class="bldg"><h3>{escape(t("c_bldg", lang).format(v=b))}</h3>'
            f"{''.join(rows)}</div>"
        )
    legend = "".join(
        f'<span class="cell place-{s}">{escape(t("c_place_" + s, lang))}</span>' for s in PlaceState
    )
    return (
        f'<section id="building"><h2>{escape(t("c_buildings", lang))}</h2>'
        f'<div class="bldgs">{"".join(cols)}</div><p class="legend">{legend}</p></section>'
    )


def _amount(value: float, unit: str) -> str:
    return f"{value:.3g} {unit}".strip()


def usage_svg(u: Usage, lang: Lang) -> str:
    """A bar chart of one counter's use per 15 minutes over 24 h, as inline SVG.

    Attributes only (no style): the page's Content-Security-Policy forbids inline styles.
    """
    width, height = len(u.per_bucket) * 3, 40
    top = max((v for v in u.per_bucket if v is not None), default=0.0)
    bars = []
    for i, v in enumerate(u.per_bucket):
        if v is None:
            continue
        h = 1 if top <= 0 else max(1, round(v / top * (height - 2)))
        bars.append(f'<rect x="{i * 3}" y="{height - h}" width="2" height="{h}"/>')
    name = t_or(f"read_{u.name}", lang, u.name)
    note = t("c_total_24h", lang).format(v=_amount(u.total, u.unit))
    if u.unchanged_s is not None and u.unchanged_s >= 2 * BUCKET_S:
        hours = u.unchanged_s // 3600
        note += " · " + t("c_unchanged", lang).format(h=hours if hours else "<1")
    label = f"{name}{t('banner_sep', lang)}{note}"
    return (
        f'<figure class="usage" data-device="{escape(u.device)}" data-reading="{escape(u.name)}">'
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(label)}" preserveAspectRatio="none">'
        f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}"/>{"".join(bars)}</svg>'
        f"<figcaption><strong>{escape(name)}</strong> {escape(note)}</figcaption></figure>"
    )


def at_place(
    live: LiveState, where: Place, now: datetime
) -> tuple[list[DeviceState], list[dict[str, Any]], list[Usage]]:
    """The devices at a place, their alarms (newest first) and their meters' last 24 h."""
    devices = [d for d in live.devices.values() if Place.of(d.location) == where]
    ids = {d.id for d in devices}
    alarms = [a for a in live.alarm_snapshot() if (a.get("device") or {}).get("id") in ids]
    usage = []
    if live.meters is not None:
        for d in devices:
            usage.extend(live.meters.usage(d.id, now))
    return devices, alarms, usage
