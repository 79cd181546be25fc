"""The gateway process: the runtime that wires everything, and its life under systemd.

Lives here: `runtime` (the `Gateway`: drivers, outbox, uplink and features in one
event loop; the `gateway.host.Host` of the features), `drivers` (what a driver sees of
it), `outboxes` (the outbox built with every consumer, its fault events), `health` (the
health message), `tasks` (crashed tasks restarted, all stopped for sure), `service`
(signals, READY, watchdog), `instance` (one gateway process per outbox), `supervision`
(a dying thread stops the process), `sdnotify`, `logsetup`.

May import: every `gateway` package except `gateway.cli` and `gateway.install`.
"""
