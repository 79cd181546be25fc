"""Server-rendered HTML of the staff console and the kiosk; every value goes through `esc`.

Pages work without JavaScript for signing in, acknowledging and filing a request;
the small scripts in static/ only add live updates.  No inline script or style: the
Content-Security-Policy forbids both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from html import escape
from typing import Any
from urllib.parse import urlencode

from gateway.sdk.model import format_ts
from gateway.web.building import Place, building_html, place_states, usage_svg
from gateway.web.i18n import CONSOLE_JS_KEYS, TEXT, t, t_or
from gateway.web.live import DeviceState
from gateway.web.meters import Usage
from gateway.web.requests import (
    CODE_ALPHABET,
    MAX_FLAT,
    MAX_PHONE,
    MAX_TEXT,
    Category,
    ServiceRequest,
    StatusEntry,
)
from gateway.web.settings import Lang
from gateway.web.timefmt import ago, local_time, zone_label

__all__ = [
    "banner_lines",
    "console_page",
    "device_value",
    "kiosk_filed_page",
    "kiosk_form_page",
    "kiosk_home_page",
    "kiosk_status_page",
    "message_page",
    "place",
    "place_page",
    "signin_page",
    "when_html",
]


def esc(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _page(
    title: str, body: str, *, lang: str = "en", cls: str = "", script: str = "", head: str = ""
) -> str:
    js = f'<script src="/static/{esc(script)}" defer></script>' if script else ""
    return (
        f'<!doctype html><html lang="{esc(lang)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)}</title><link rel="stylesheet" href="/static/style.css">'
        f"{head}{js}</head>"
        f'<body class="{esc(cls)}">{body}</body></html>'
    )


def _html_lang(lang: Lang) -> str:
    return "zh-CN" if lang is Lang.ZH else "en"


def message_page(title: str, text: str, back: str, lang: Lang = Lang.EN) -> str:
    body = f'<main class="narrow"><h1>{esc(title)}</h1><p>{esc(text)}</p>'
    body += f'<p><a class="button" href="{esc(back)}">{esc(t("c_ok", lang))}</a></p></main>'
    return _page(title, body, lang=_html_lang(lang), cls="console")


# ---- staff console -------------------------------------------------------------------


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
    return _page(t("c_signin_title", lang), body, lang=_html_lang(lang), cls="console")


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
    engine_running: bool,
    site: str,
    lang: Lang,
    zone: tzinfo,
    now: datetime | None = None,
) -> str:
    now = now or datetime.now(UTC)
    devices = list(devices)
    notice = "" if engine_running else f'<p class="error">{esc(t("c_no_engine", lang))}</p>'
    cards = "".join(_alarm_card(a, csrf, lang, zone, now) for a in alarms)
    words = json.dumps({k: t(k, lang) for k in CONSOLE_JS_KEYS}, ensure_ascii=False)
    h = {k: esc(t(k, lang)) for k in TEXT}
    grid = building_html(place_states(devices, alarms), lang)
    body = f"""{_console_header(site, staff_name, csrf, lang, "/console")}{_stale_overlay(lang)}
<main data-csrf="{esc(csrf)}" data-lang="{lang}" data-now="{esc(format_ts(now))}"
 data-site="{esc(site)}" data-words="{esc(words)}">{notice}
<h2>{h["c_alarms"]}</h2><p id="no-alarms"{" hidden" if alarms else ""}>{h["c_no_alarms"]}</p>
<div id="alarms" class="cards">{cards}</div>
{grid}
<h2>{h["c_devices"]}</h2><p class="zone">{esc(t("times_in", lang).format(zone=zone_label(zone)))}</p>
{_devices_table(devices, lang, zone, now)}</main>"""
    return _page(
        f"{site} · {t('c_title', lang)}",
        body,
        lang=_html_lang(lang),
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
    return _page(f"{title} · {site}", body, lang=_html_lang(lang), cls="console", head=_ICON)


# ---- kiosk ---------------------------------------------------------------------------


def banner_lines(banner: list[dict[str, Any]], lang: Lang) -> list[str]:
    """The kiosk's alarm banner as text lines in `lang` (empty: no banner), advice last."""
    lines = []
    for b in banner:
        where = t("building", lang).format(v=b["building"])
        if b.get("floor") is not None:
            where += (" " if lang is Lang.ZH else ", ") + t("floor", lang).format(v=b["floor"])
        lines.append(f"{t('alarm_' + b['type'], lang)}{t('banner_sep', lang)}{where}")
    if lines:
        lines.append(t("alarm_advice", lang))
    return lines


def _banner(banner: list[dict[str, Any]], lang: Lang) -> str:
    lines = banner_lines(banner, lang)
    items = "".join(f"<p>{esc(line)}</p>" for line in lines)
    hidden = "" if lines else " hidden"
    return f'<div id="banner" class="banner" role="alert"{hidden}>{items}</div>'


# A kiosk page other than the start goes back to it after this long without a touch, so
# the next resident never sees the previous one's code or typing; a warning with a
# "more time" button comes this long before.
IDLE_S = 120
IDLE_WARN_S = 20
# Without JavaScript there is no way to tell typing from leaving: the page goes home
# after a fixed time, long enough to type a few words on a form.
_NO_JS_FORM_S = 600


def _kiosk(
    kiosk: str,
    lang: Lang,
    title: str,
    body: str,
    banner: list[dict[str, Any]],
    *,
    keep: str = "",
    idle: bool = True,
    no_js_s: int = IDLE_S,
    poll: str = "",
) -> str:
    # `keep`: the rest of the query string the language switch must not lose (a code).
    # `poll`: the page the script re-reads for a request's progress while it is shown.
    other = Lang.EN if lang is Lang.ZH else Lang.ZH
    switch = f"?lang={other}" + (f"&{keep}" if keep else "")
    home = f"/kiosk/{esc(kiosk)}?lang={lang}"
    top = (
        f'<header><a class="home" href="{home}">{esc(t("title", lang))}'
        f'</a><a class="lang" href="{esc(switch)}">{esc(t("other_lang", lang))}</a></header>'
    )
    head = ""
    attrs = f'data-kiosk="{esc(kiosk)}" data-lang="{lang}"'
    dialog = ""
    if idle:
        head = f'<noscript><meta http-equiv="refresh" content="{no_js_s};url={home}"></noscript>'
        attrs += (
            f' data-idle="{IDLE_S}" data-warn="{IDLE_WARN_S}" data-home="{home}"'
            f' data-idle-text="{esc(t("k_timeout", lang))}"'
        )
        dialog = (
            '<div id="idle" class="idle" role="alertdialog" aria-live="assertive" hidden>'
            '<p id="idle-text"></p><button type="button" id="idle-more" class="big send">'
            f"{esc(t('k_more_time', lang))}</button></div>"
        )
    if poll:
        attrs += f' data-poll="{esc(poll)}"'
    return _page(
        title,
        f"{top}{_banner(banner, lang)}<main {attrs}>{body}</main>{dialog}",
        lang=_html_lang(lang),
        cls="kiosk",
        script="kiosk.js",
        head=head,
    )


def kiosk_home_page(kiosk: str, lang: Lang, banner: list[dict[str, Any]]) -> str:
    buttons = "".join(
        f'<a class="big cat-{c}" href="/kiosk/{esc(kiosk)}/new/{c}?lang={lang}">'
        f"{esc(t(str(c), lang))}</a>"
        for c in Category
    )
    body = (
        f'<h1>{esc(t("choose", lang))}</h1><nav class="grid">{buttons}</nav>'
        f'<a class="big check" href="/kiosk/{esc(kiosk)}/status?lang={lang}">'
        f"{esc(t('check', lang))}</a>"
    )
    return _kiosk(kiosk, lang, t("title", lang), body, banner, idle=False)


def kiosk_form_page(
    kiosk: str,
    lang: Lang,
    category: Category,
    csrf: str,
    banner: list[dict[str, Any]],
    *,
    error: str = "",
    values: dict[str, str] | None = None,
) -> str:
    v = values or {}
    err = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    body = f"""<h1>{esc(t(str(category), lang))}</h1>{err}
<form method="post" action="/kiosk/{esc(kiosk)}/requests" class="request">
<input type="hidden" name="csrf" value="{esc(csrf)}">
<input type="hidden" name="category" value="{category}">
<input type="hidden" name="lang" value="{lang}">
<button type="submit" class="big send">{esc(t("send", lang))}</button>
<label>{esc(t("flat", lang))}<input name="flat" maxlength="{MAX_FLAT}"
 value="{esc(v.get("flat", ""))}" autocomplete="off"></label>
<label>{esc(t("phone", lang))}<input name="phone" type="tel" inputmode="tel"
 maxlength="{MAX_PHONE}" value="{esc(v.get("phone", ""))}" autocomplete="off"></label>
<label>{esc(t("text", lang))}<textarea name="text" maxlength="{MAX_TEXT}" rows="3"
>{esc(v.get("text", ""))}</textarea></label>
<button type="submit" class="big send">{esc(t("send", lang))}</button>
</form><a class="button" href="/kiosk/{esc(kiosk)}?lang={lang}">{esc(t("back", lang))}</a>"""
    return _kiosk(kiosk, lang, t(str(category), lang), body, banner, no_js_s=_NO_JS_FORM_S)


def _history(history: list[StatusEntry], lang: Lang, zone: tzinfo) -> str:
    # Local time to the minute for residents; the UTC instant stays in the attributes.
    items = "".join(
        f'<li class="st-{e.status}"><span class="status">{esc(t(str(e.status), lang))}</span>'
        f' <time datetime="{esc(e.at)}" title="{esc(e.at)}">'
        f"{esc(local_time(e.at, zone, seconds=False))}</time>"
        f"{' — ' + esc(e.note) if e.note else ''}</li>"
        for e in history
    )
    return f'<h2>{esc(t("status", lang))}</h2><ol id="history">{items}</ol>'


def kiosk_filed_page(
    kiosk: str,
    lang: Lang,
    req: ServiceRequest,
    history: list[StatusEntry],
    banner: list[dict[str, Any]],
    zone: tzinfo,
) -> str:
    body = f"""<h1>{esc(t("your_code", lang))}</h1>
<p class="code" id="code">{esc(req.code)}</p><p>{esc(t("keep_code", lang))}</p>
<p>{esc(t(str(req.category), lang))}</p>{_history(history, lang, zone)}
<a class="big" href="/kiosk/{esc(kiosk)}?lang={lang}">{esc(t("home", lang))}</a>"""
    poll = f"/kiosk/{kiosk}/filed/{req.code}?lang={lang}"
    return _kiosk(kiosk, lang, t("your_code", lang), body, banner, poll=poll)


def kiosk_status_page(
    kiosk: str,
    lang: Lang,
    banner: list[dict[str, Any]],
    zone: tzinfo,
    *,
    code: str = "",
    found: tuple[ServiceRequest, list[StatusEntry]] | None = None,
    not_found: bool = False,
) -> str:
    keys = "".join(
        f'<button type="button" class="key" data-key="{c}">{c}</button>' for c in CODE_ALPHABET
    )
    result = ""
    if found is not None:
        req, history = found
        result = (
            f'<p class="code">{esc(req.code)}</p><p>{esc(t(str(req.category), lang))}</p>'
            f"{_history(history, lang, zone)}"
        )
    elif not_found:
        result = f'<p class="error" role="alert">{esc(t("no_such_code", lang))}</p>'
    form = f"""<form method="get" action="/kiosk/{esc(kiosk)}/status" class="lookup">
<input type="hidden" name="lang" value="{lang}">
<input name="code" id="code-input" value="{esc(code)}" maxlength="12" autocomplete="off"
 autocapitalize="characters" spellcheck="false" aria-label="{esc(t("enter_code", lang))}">
<div class="keypad" hidden>{keys}<button type="button" class="key del" data-key="del">
{esc(t("delete", lang))}</button></div>
<button type="submit" class="big">{esc(t("show", lang))}</button></form>"""
    back = f'<a class="button" href="/kiosk/{esc(kiosk)}?lang={lang}">{esc(t("back", lang))}</a>'
    title = f"<h1>{esc(t('another_code' if result else 'enter_code', lang))}</h1>"
    # The answer first, the keypad for another code below it: with the fire banner on
    # top, a resident still sees the progress without scrolling.
    body = (
        f'<div id="result">{result}</div>{title}{form}{back}'
        if result
        else f'{title}{form}<div id="result"></div>{back}'
    )
    keep = urlencode({"code": code}) if code else ""
    poll = ""
    if found is not None:
        poll = f"/kiosk/{kiosk}/status?{urlencode({'lang': str(lang), 'code': code})}"
    return _kiosk(kiosk, lang, t("check", lang), body, banner, keep=keep, poll=poll)
