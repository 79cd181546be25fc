"""Wellness: an elderly resident's quiet home raises an alarm (no movement for hours).

Lives here: `settings` (the `wellness:` section; imports only `gateway.sdk`), `monitor`
(watches activity events and raises the inactivity events; `attach(host)` wires it into
a `gateway.host.Host`).

May import: `gateway.sdk`, `gateway.config`, `gateway.storage`, `gateway.mqtt`,
`gateway.host` and the other feature packages.
"""
