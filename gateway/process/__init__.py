"""The gateway process: the runtime that wires everything, and its life under systemd.

Lives here: `runtime` (the `Gateway`: drivers, outbox, uplink and features in one
event loop), `service` (signals, READY, watchdog), `supervision` (a dying thread stops
the process), `sdnotify`, `logsetup`.

May import: every `gateway` package except `gateway.cli` and `gateway.install`.
"""
