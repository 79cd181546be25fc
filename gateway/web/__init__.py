"""The local web: staff console and resident kiosk, served by the gateway process.

Only the config model is imported here, so that `gateway.config` can use it without
importing aiohttp; `gateway.web.service.attach` wires the web into a running gateway.
"""

from gateway.web.settings import KioskConfig, Lang, SigninLimit, WebConfig, WebTls

__all__ = ["KioskConfig", "Lang", "SigninLimit", "WebConfig", "WebTls"]
