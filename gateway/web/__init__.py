"""The local web: staff console and resident kiosk, served by the gateway process.

Lives here: `settings` (the `web:` section), `service` (`attach(host, alarms)` wires the
web into a `gateway.host.Host`), `server` and `pages` (routes and HTML), `auth`, `staff`,
`guard` (limits), `live` (devices and alarms as the screens see them), `building`,
`meters`, `requests` (kiosk service requests), `i18n`, `timefmt`, `cli`.  Only the
config model is imported here, so that `gateway.config` can use it without importing
aiohttp.

May import: `gateway.sdk`, `gateway.config`, `gateway.storage`, `gateway.mqtt`,
`gateway.host` and the other feature packages; `settings` imports only `gateway.sdk`.
"""

from gateway.web.settings import KioskConfig, Lang, SigninLimit, WebConfig, WebTls

__all__ = ["KioskConfig", "Lang", "SigninLimit", "WebConfig", "WebTls"]
