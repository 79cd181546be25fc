"""The HTML shell every page of the console and the kiosk shares; every value goes through `esc`.

Pages work without JavaScript for signing in, acknowledging and filing a request;
the small scripts in static/ only add live updates.  No inline script or style: the
Content-Security-Policy forbids both.
"""

from __future__ import annotations

from html import escape

from gateway.web.i18n import t
from gateway.web.settings import Lang

__all__ = ["esc", "html_lang", "message_page", "page"]


def esc(value: object) -> str:
    """`value` as HTML text or attribute value (None as empty)."""
    return escape("" if value is None else str(value), quote=True)


def page(
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


def html_lang(lang: Lang) -> str:
    return "zh-CN" if lang is Lang.ZH else "en"


def message_page(title: str, text: str, back: str, lang: Lang = Lang.EN) -> str:
    body = f'<main class="narrow"><h1>{esc(title)}</h1><p>{esc(text)}</p>'
    body += f'<p><a class="button" href="{esc(back)}">{esc(t("c_ok", lang))}</a></p></main>'
    return page(title, body, lang=html_lang(lang), cls="console")
