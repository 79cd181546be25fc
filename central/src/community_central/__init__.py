"""The community ticket service (central side): one ticket per gateway alarm, routed to a team.

Its own distribution (`community-central`), installed next to the central broker, not
on gateways: it imports the shared contract (`contract.py`), never the gateway.  It
reads the alarm contract (docs/mqtt-api.md, "Alarms"); see central/docs/tickets.md.

May import: `community_protocol` and third-party packages; never `gateway` or
`drivers` (tests/test_architecture.py).  Only `cli` imports the `fleet` package.

Nothing is imported here: `community-central list` and `ack`, what staff type, load the
ticket store alone, not the service's MQTT client and schemas.  Import from the modules
(`community_central.store`, `.service`, `.documents`, `.routing`).
"""
