"""Storage on the gateway's own disk: the durable outbox and the SQLite machinery.

Lives here: `outbox` (the durable, ordered queue of every message until the broker has
it) and its parts: `outbox_types` (values and writer requests), `outbox_writer` (the
writer thread), `outbox_batch` (the commit policy), `outbox_reader`, `outbox_recovery`
(a damaged file rebuilt), `outbox_room` (a full disk), `outbox_sql` and `outbox_memory`
(its SQL and its in-memory spill); `sqlitestore` (the base of every store: checked
open, WAL and `SyncMode`, schema versions, the transaction helper, a writer thread);
`dbrecovery` and `sqlitepages` (a damaged SQLite file moved aside and salvaged),
`diskspace` (room left, the reserve for events).

May import: `gateway.sdk` only.
"""
