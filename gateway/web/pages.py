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

from gateway.model import format_ts
from gateway.web.i18n import CONSOLE_JS_KEYS, TEXT, t, t_or
from gateway.web.live import DeviceState
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
    "kiosk_filed_page",
    "kiosk_form_page",
    "kiosk_home_page",
    "kiosk_status_page",
    "message_page",
    "place",
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
    return f'<a class="lang" href="{esc(path)}?lang={other}">{esc(t("other_lang", lang))}</a>'


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


def _alarm_row(doc: dict[str, Any], csrf: str, lang: Lang, zone: tzinfo, now: datetime) -> str:
    device = doc.get("device") or {}
    ack = doc.get("ack") or {}
    acked = f"{ack.get('by', '')}: {ack.get('note', '')}".rstrip(": ") if ack else ""
    form = ""
    if not doc.get("acknowledged") and doc.get("state") != "closed":
        form = (
            f'<form class="ack" method="post" action="/console/alarms/{esc(doc["alarm_id"])}/ack">'
            f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
            f'<input name="note" maxlength="500" placeholder="{esc(t("c_note", lang))}"'
            f' aria-label="{esc(t("c_note", lang))}">'
            f"<button>{esc(t('c_ack', lang))}</button></form>"
        )
    return (
        f'<tr data-alarm="{esc(doc["alarm_id"])}" class="sev-{esc(doc.get("severity"))} '
        f'state-{esc(doc.get("state"))}">'
        f"<td>{esc(_word('type', doc.get('type'), lang))}</td>"
        f"<td>{esc(_word('sev', doc.get('severity'), lang))}</td>"
        f"<td>{esc(_word('state', doc.get('state'), lang))}</td>"
        f"<td>{esc(device.get('name') or device.get('id'))}<br><small>"
        f"{esc(place(device.get('location'), lang))}</small></td>"
        f'<td class="when">{when_html(doc.get("raised_at"), zone, lang, now)}</td>'
        f"<td>{esc(doc.get('escalation'))}</td>"
        f"<td>{esc(acked)}</td><td>{form}</td></tr>"
    )


def _device_row(d: DeviceState, lang: Lang, zone: tzinfo, now: datetime) -> str:
    avail = {True: "online", False: "offline", None: "unknown"}[d.available]
    return (
        f'<tr data-device="{esc(d.id)}" class="avail-{avail}">'
        f"<td>{esc(d.name or d.id)}<br><small>{esc(d.id)}</small></td><td>{esc(d.kind)}</td>"
        f"<td>{esc(place(d.location, lang))}</td><td>{esc(t('avail_' + avail, lang))}"
        f"{'<br><small>' + esc(d.reason) + '</small>' if d.reason else ''}</td>"
        f'<td>{esc(d.last_value)}</td><td class="when">{when_html(d.last_at, zone, lang, now)}'
        "</td></tr>"
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
    notice = "" if engine_running else f'<p class="error">{esc(t("c_no_engine", lang))}</p>'
    alarm_rows = "".join(_alarm_row(a, csrf, lang, zone, now) for a in alarms)
    device_rows = "".join(_device_row(d, lang, zone, now) for d in devices)
    words = json.dumps({k: t(k, lang) for k in CONSOLE_JS_KEYS}, ensure_ascii=False)
    h = {k: esc(t(k, lang)) for k in TEXT}
    body = f"""<header><h1>{esc(site)} — {h["c_title"]}</h1>
<span id="live" class="live off">{h["c_connecting"]}</span>
<span>{esc(t("c_signed_in_as", lang).format(name=staff_name))}</span>
{_switch(lang, "/console")}
<form method="post" action="/signout"><input type="hidden" name="csrf" value="{esc(csrf)}">
<button>{h["c_signout"]}</button></form></header>
<main data-csrf="{esc(csrf)}" data-lang="{lang}" data-now="{esc(format_ts(now))}"
 data-words="{esc(words)}">{notice}
<p class="zone">{esc(t("times_in", lang).format(zone=zone_label(zone)))}</p>
<h2>{h["c_alarms"]}</h2><table id="alarms"><thead><tr><th>{h["c_type"]}</th>
<th>{h["c_severity"]}</th><th>{h["c_state"]}</th><th>{h["c_device_place"]}</th>
<th>{h["c_since"]}</th><th>{h["c_escalation"]}</th><th>{h["c_acked"]}</th><th></th>
</tr></thead><tbody>{alarm_rows}</tbody></table>
<h2>{h["c_devices"]}</h2><table id="devices"><thead><tr><th>{h["c_device"]}</th>
<th>{h["c_kind"]}</th><th>{h["c_location"]}</th><th>{h["c_availability"]}</th>
<th>{h["c_last_value"]}</th><th>{h["c_at"]}</th></tr></thead>
<tbody>{device_rows}</tbody></table></main>"""
    return _page(
        t("c_title", lang), body, lang=_html_lang(lang), cls="console", script="console.js"
    )


# ---- kiosk ---------------------------------------------------------------------------


def banner_lines(banner: list[dict[str, Any]], lang: Lang) -> list[str]:
    """The kiosk's alarm banner as text lines in `lang` (empty: no banner), advice last."""
    lines = []
    for b in banner:
        if lang is Lang.ZH:
            place = f"{b['building']}{t('building', lang)}"
            if b.get("floor") is not None:
                place += f" {b['floor']}{t('floor', lang)}"
        else:
            place = f"{t('building', lang)} {b['building']}"
            if b.get("floor") is not None:
                place += f", {t('floor', lang)} {b['floor']}"
        lines.append(f"{t('alarm_' + b['type'], lang)}: {place}")
    if lines:
        lines.append(t("alarm_advice", lang))
    return lines


def _banner(banner: list[dict[str, Any]], lang: Lang) -> str:
    lines = banner_lines(banner, lang)
    items = "".join(f"<p>{esc(line)}</p>" for line in lines)
    hidden = "" if lines else " hidden"
    return f'<div id="banner" class="banner" role="alert"{hidden}>{items}</div>'


def _kiosk(
    kiosk: str,
    lang: Lang,
    title: str,
    body: str,
    banner: list[dict[str, Any]],
    *,
    head: str = "",
    keep: str = "",
) -> str:
    # `keep`: the rest of the query string the language switch must not lose (a code).
    other = Lang.EN if lang is Lang.ZH else Lang.ZH
    switch = f"?lang={other}" + (f"&{keep}" if keep else "")
    top = (
        f'<header><a class="home" href="/kiosk/{esc(kiosk)}?lang={lang}">{esc(t("title", lang))}'
        f'</a><a class="lang" href="{esc(switch)}">{esc(t("other_lang", lang))}</a></header>'
    )
    return _page(
        title,
        f'{top}{_banner(banner, lang)}<main data-kiosk="{esc(kiosk)}" data-lang="{lang}">'
        f"{body}</main>",
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
    return _kiosk(kiosk, lang, t("title", lang), body, banner)


def _back_home(kiosk: str, lang: Lang) -> str:
    # Back to the start after a while, so the next resident never sees this page.
    return f'<meta http-equiv="refresh" content="120;url=/kiosk/{esc(kiosk)}?lang={lang}">'


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
    return _kiosk(kiosk, lang, t(str(category), lang), body, banner, head=_back_home(kiosk, lang))


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
    return _kiosk(kiosk, lang, t("your_code", lang), body, banner, head=_back_home(kiosk, lang))


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
    body = f"""<h1>{esc(t("enter_code", lang))}</h1>
<form method="get" action="/kiosk/{esc(kiosk)}/status" class="lookup">
<input type="hidden" name="lang" value="{lang}">
<input name="code" id="code-input" value="{esc(code)}" maxlength="12" autocomplete="off"
 autocapitalize="characters" spellcheck="false" aria-label="{esc(t("enter_code", lang))}">
<div class="keypad" hidden>{keys}<button type="button" class="key del" data-key="del">
{esc(t("delete", lang))}</button></div>
<button type="submit" class="big">{esc(t("show", lang))}</button></form>
<div id="result">{result}</div>
<a class="button" href="/kiosk/{esc(kiosk)}?lang={lang}">{esc(t("back", lang))}</a>"""
    keep = urlencode({"code": code}) if code else ""
    return _kiosk(
        kiosk, lang, t("check", lang), body, banner, head=_back_home(kiosk, lang), keep=keep
    )
