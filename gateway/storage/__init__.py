"""Storage on the gateway's own disk: the durable outbox and the SQLite machinery.

Lives here: `outbox` (the durable, ordered queue of every message until the broker has
it), `outbox_sql` and `outbox_memory` (its SQL and its in-memory spill), `dbrecovery`
and `sqlitepages` (a damaged SQLite file moved aside and salvaged), `diskspace` (room
left, the reserve for events).

May import: `gateway.sdk` only.
"""
