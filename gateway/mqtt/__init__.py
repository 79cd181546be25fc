"""The MQTT side: the uplink to the broker, the topic tree, commands and their replies.

Lives here: `uplink` (publishes the outbox, subscribes to commands, reconnects),
`client` (the paho adapter), `commands` (the command router and reply documents),
`topics` (the topic tree), `schemas` (the JSON Schemas of the payloads).

May import: `gateway.sdk`, `gateway.config`, `gateway.storage`.
"""
