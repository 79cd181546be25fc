"""The resident kiosk's pages: home, request form, filed request, status by code."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any
from urllib.parse import urlencode

from gateway.web.i18n import t
from gateway.web.page import esc, html_lang, page
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
from gateway.web.timefmt import local_time

__all__ = [
    "banner_lines",
    "kiosk_filed_page",
    "kiosk_form_page",
    "kiosk_home_page",
    "kiosk_status_page",
]


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
    return page(
        title,
        f"{top}{_banner(banner, lang)}<main {attrs}>{body}</main>{dialog}",
        lang=html_lang(lang),
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
