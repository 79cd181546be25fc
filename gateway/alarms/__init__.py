"""The gateway-side alarm engine: rules turn events into alarms, staff acknowledge them.

Lives here: `settings` (the `alarms:` section; imported by `gateway.config`), `rules`
and `model` (alarm types, states, documents), `book` and `store` (the open alarms, in
memory and on disk), `engine` (`AlarmEngine`: `snapshot()`, `acknowledge()`,
`listen()`), `publisher` (documents to the outbox and the
listeners), `commands` (the `alarms` command family), `wiring` (`attach(host)`: the
engine built on a `gateway.host.Host` and registered with it), `cli`.  The contract is in
docs/mqtt-api.md.  Import from the submodules; this file imports nothing, so that
`gateway.config` can load `settings` without the engine.

May import: `gateway.sdk`, `gateway.config`, `gateway.storage`, `gateway.mqtt`,
`gateway.host`; `settings`, `rules` and `model` import only `gateway.sdk`.
"""
