"""The staff console's pages: sign-in, the alarm and device overview, one place."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from typing import Any

from gateway.sdk.model import format_ts
from gateway.web.building import Place, building_html, place_states, usage_svg
from gateway.web.i18n import CONSOLE_JS_KEYS, TEXT, t, t_or
from gateway.web.live import DeviceState
from gateway.web.meters import Usage
from gateway.web.page import esc, html_lang, page
from gateway.web.settings import Lang
from gateway.web.timefmt import ago, local_time, zone_label

__all__ = ["console_page", "device_value", "place", "place_page", "signin_page", "when_html"]


def _switch(lang: Lang, path: str) -> str:
    other = Lang.EN if lang is Lang.ZH else Lang.ZH
    sep = "&" if "?" in path else "?"
    return f'<a class="lang" href="{esc(path)}{sep}lang={other}">{esc(t("other_lang", lang))}</a>'


def when_html(ts: str | None, zone: tzinfo, lang: Lang, now: datetime | None = None) -> str:
    """A timestamp in local time with its age; the UTC instant in `datetime` and `title`."""
    if not ts:
        return ""
    return (
        f'<time datetime="{esc(ts)}" title="{esc(ts)}">{esc(local_time(ts, zone))}</time>'
        f' <span class="ago">{esc(ago(ts, lang, now))}</span>'
    )


def signin_page(csrf: str, lang: Lang, *, error: str = "", staff_id: str = "") -> str:
    err = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    body = f"""<main class="narrow"><p class="switch">{_switch(lang, "/signin")}</p>
<h1>{esc(t("c_signin_title", lang))}</h1>{err}
<form method="post" action="/signin">
<input type="hidden" name="csrf" value="{esc(csrf)}">
<label>{esc(t("c_staff_id", lang))}<input name="staff_id" value="{esc(staff_id)}"
 maxlength="64" required autocomplete="username" autocapitalize="none"></label>
<label>{esc(t("c_secret", lang))}<input name="secret" type="password" maxlength="128"
 required autocomplete="current-password"></label>
<button type="submit">{esc(t("c_signin", lang))}</button></form></main>"""
    return page(t("c_signin_title", lang), body, lang=html_lang(lang), cls="console")


def place(location: dict[str, Any] | None, lang: Lang) -> str:
    """Building / floor / unit of a device, in `lang`."""
    loc = location or {}
    parts = [t("c_bldg", lang).format(v=loc["building"])] if loc.get("building") else []
    if loc.get("floor") is not None:
        parts.append(t("c_floor", lang).format(v=loc["floor"]))
    if loc.get("unit"):
        parts.append(str(loc["unit"]))
    return " / ".join(parts)


def _word(prefix: str, value: object, lang: Lang) -> str:
    # A value outside the contract (a newer engine) is shown as it came, escaped later.
    return t_or(f"{prefix}_{value}", lang, "" if value is None else str(value))


def device_value(d: DeviceState, lang: Lang) -> str:
    """A device's last value in `lang`: reading names and event types translated."""
    if d.last_event:
        return _word("evt", d.last_event, lang)
    if d.last_readings:
        sep = "\uff0c" if lang is Lang.ZH else ", "
        return sep.join(
            f"{_word('read', name, lang)} {value}{' ' + unit if unit else ''}"
            for name, value, unit in d.last_readings
        )
    return d.last_value


def _alarm_card(doc: dict[str, Any], csrf: str, lang: Lang, zone: tzinfo, now: datetime) -> str:
    device = doc.get("device") or {}
    ack = doc.get("ack") or {}
    acked = ""
    if ack:
        note = ack.get("note") or ""
        who = f"{ack.get('by', '')}{t('banner_sep', lang) + note if note else ''}"
        acked = f'<p class="a-ack">✓ {esc(who)}</p>'
    form = ""
    if not doc.get("acknowledged") and doc.get("state") != "closed":
        form = (
            f'<form class="ack" method="post" action="/console/alarms/{esc(doc["alarm_id"])}/ack">'
            f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
            f'<input name="note" maxlength="500" placeholder="{esc(t("c_note", lang))}"'
            f' aria-label="{esc(t("c_note", lang))}">'
            f"<button>{esc(t('c_ack', lang))}</button>"
            '<p class="ack-msg error" role="alert" hidden></p></form>'
        )
    esc_n = doc.get("escalation") or 0
    escalated = (
        f'<span class="badge esc">{esc(t("c_escalation_n", lang).format(n=esc_n))}</span>'
        if esc_n
        else ""
    )
    return (
        f'<article class="alarm sev-{esc(doc.get("severity"))} state-{esc(doc.get("state"))}" '
        f'data-alarm="{esc(doc["alarm_id"])}" data-rev="{esc(doc.get("rev"))}">'
        f'<p class="a-head"><strong class="a-type">{esc(_word("type", doc.get("type"), lang))}'
        f'</strong> · <span class="a-cause">{esc(_word("evt", doc.get("cause"), lang))}</span></p>'
        f'<p class="a-badges"><span class="badge sev">{esc(_word("sev", doc.get("severity"), lang))}'
        f'</span> <span class="badge st">{esc(_word("state", doc.get("state"), lang))}</span>'
        f"{escalated}</p>"
        f'<p class="a-place"><strong>{esc(place(device.get("location"), lang))}</strong>'
        f"<br><small>{esc(device.get('name') or device.get('id'))}</small></p>"
        f'<p class="when">{when_html(doc.get("raised_at"), zone, lang, now)}</p>'
        f"{acked}{form}</article>"
    )


def _device_row(d: DeviceState, lang: Lang, zone: tzinfo, now: datetime) -> str:
    avail = {True: "online", False: "offline", None: "unknown"}[d.available]
    return (
        f'<tr data-device="{esc(d.id)}" class="avail-{avail}">'
        f"<td>{esc(d.name or d.id)}<br><small>{esc(d.id)}</small></td>"
        f"<td>{esc(_word('kind', d.kind, lang))}</td>"
        f"<td>{esc(place(d.location, lang))}</td><td>{esc(t('avail_' + avail, lang))}"
        f"{'<br><small>' + esc(d.reason) + '</small>' if d.reason else ''}</td>"
        f'<td>{esc(device_value(d, lang))}</td><td class="when">'
        f"{when_html(d.last_at, zone, lang, now)}</td></tr>"
    )


def _devices_table(devices: list[DeviceState], lang: Lang, zone: tzinfo, now: datetime) -> str:
    h = {k: esc(t(k, lang)) for k in TEXT if k.startswith("c_")}
    rows = "".join(_device_row(d, lang, zone, now) for d in devices)
    return (
        f'<table id="devices"><thead><tr><th>{h["c_device"]}</th><th>{h["c_kind"]}</th>'
        f"<th>{h['c_location']}</th><th>{h['c_availability']}</th>"
        f"<th>{h['c_last_value']}</th><th>{h['c_at']}</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


_ICON = '<link rel="icon" href="/static/icon.svg" type="image/svg+xml">'


def _console_header(
    site: str, staff_name: str, csrf: str, lang: Lang, path: str, *, live: bool = True
) -> str:
    # `live`: the page has the live script (the main console), so it shows its state.
    h = {k: esc(t(k, lang)) for k in ("c_title", "c_connecting", "c_signout", "c_alerts_on")}
    badge = f'<span id="live" class="live off">{h["c_connecting"]}</span>' if live else ""
    return f"""<header><h1><span class="site">{esc(site)}</span> {h["c_title"]}</h1>
{badge}<button type="button" id="alerts" class="alerts" hidden>{h["c_alerts_on"]}</button>
<span class="who">{esc(t("c_signed_in_as", lang).format(name=staff_name))}</span>
{_switch(lang, path)}
<form method="post" action="/signout"><input type="hidden" name="csrf" value="{esc(csrf)}">
<button>{h["c_signout"]}</button></form></header>"""


def _stale_overlay(lang: Lang) -> str:
    # Shown by the script when the event stream is lost: the page says it is not live
    # over everything it shows, instead of a small badge next to old data.
    return (
        f'<div id="stale" class="stale" role="alert" hidden><p class="stale-title">'
        f'{esc(t("c_stale", lang))}</p><p id="stale-since"></p>'
        f'<p id="stale-action">{esc(t("c_stale_retry", lang))} '
        f'<a class="button" href="/signin">{esc(t("c_signin_again", lang))}</a></p></div>'
    )


def console_page(
    *,
    staff_name: str,
    csrf: str,
    alarms: list[dict[str, Any]],
    devices: Iterable[DeviceState],
    site: str,
    lang: Lang,
    zone: tzinfo,
    now: datetime | None = None,
) -> str:
    now = now or datetime.now(UTC)
    devices = list(devices)
    cards = "".join(_alarm_card(a, csrf, lang, zone, now) for a in alarms)
    words = json.dumps({k: t(k, lang) for k in CONSOLE_JS_KEYS}, ensure_ascii=False)
    h = {k: esc(t(k, lang)) for k in TEXT}
    grid = building_html(place_states(devices, alarms), lang)
    body = f"""{_console_header(site, staff_name, csrf, lang, "/console")}{_stale_overlay(lang)}
<main data-csrf="{esc(csrf)}" data-lang="{lang}" data-now="{esc(format_ts(now))}"
 data-site="{esc(site)}" data-words="{esc(words)}">
<h2>{h["c_alarms"]}</h2><p id="no-alarms"{" hidden" if alarms else ""}>{h["c_no_alarms"]}</p>
<div id="alarms" class="cards">{cards}</div>
{grid}
<h2>{h["c_devices"]}</h2><p class="zone">{esc(t("times_in", lang).format(zone=zone_label(zone)))}</p>
{_devices_table(devices, lang, zone, now)}</main>"""
    return page(
        f"{site} · {t('c_title', lang)}",
        body,
        lang=html_lang(lang),
        cls="console",
        script="console.js",
        head=_ICON,
    )


def place_page(
    *,
    staff_name: str,
    csrf: str,
    where: Place,
    alarms: list[dict[str, Any]],
    devices: list[DeviceState],
    usage: list[Usage],
    site: str,
    lang: Lang,
    zone: tzinfo,
    now: datetime | None = None,
) -> str:
    """One cell of the building view: its devices, alarms and meters' last 24 hours."""
    now = now or datetime.now(UTC)
    loc = {"building": where.building, "floor": where.floor or None, "unit": where.unit}
    title = place(loc, lang)
    h = {k: esc(t(k, lang)) for k in TEXT}
    if not devices:
        content = f"<p>{h['c_no_place']}</p>"
    else:
        cards = "".join(_alarm_card(a, csrf, lang, zone, now) for a in alarms)
        charts = "".join(usage_svg(u, lang) for u in usage)
        if any(d.kind == "meter" for d in devices):
            charts = f"<h2>{h['c_last_24h']}</h2>" + (charts or f"<p>{h['c_no_history']}</p>")
        content = (
            f'<div id="alarms" class="cards">{cards}</div>{charts}'
            f"<h2>{h['c_devices']}</h2>{_devices_table(devices, lang, zone, now)}"
        )
    body = (
        f"{_console_header(site, staff_name, csrf, lang, '/console/place?' + where.query(), live=False)}"
        f'<main class="place" data-csrf="{esc(csrf)}"><p><a class="button" href="/console">'
        f"{h['c_back']}</a></p><h2>{esc(title)}</h2>{content}</main>"
    )
    return page(f"{title} · {site}", body, lang=html_lang(lang), cls="console", head=_ICON)
