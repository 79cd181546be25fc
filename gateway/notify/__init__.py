"""Notifiers that reach staff who are not looking at a screen (SMS through a modem).

Lives here: `settings` (the `notify:` section), `sms` (the notifier;
`attach(host, ...)` wires it into a `gateway.host.Host`), `modem`, `at`, `pdu`, `text`
(the modem and the messages), `store` (what was sent), `cli`.  Only the config model is
imported here, so that `gateway.config` can use it without importing pyserial's modem
code.

May import: `gateway.sdk`, `gateway.config`, `gateway.storage`, `gateway.mqtt`,
`gateway.host` and the other feature packages (`settings` imports `gateway.alarms.rules`).
"""

from gateway.notify.settings import NotifyConfig, Recipient, SmsConfig

__all__ = ["NotifyConfig", "Recipient", "SmsConfig"]
