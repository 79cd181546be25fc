"""The MQTT side: the uplink to the broker, commands and their replies.

Lives here: `uplink` (publishes the outbox, subscribes to commands, reconnects), with
`connect` (one connection), `sessions` (session numbers), `inbound` (commands in,
replies out), `retained` (status and availability documents, features' retained
documents and watched topics), `stats` (publishing figures) and `wakeup` (the
self-pipe other threads wake it with); `client` (the paho
adapter), `commands` (the command router).  The contract itself
(topic tree, schemas, reply document) is the protocol package, `community_protocol`.

May import: `gateway.sdk`, `gateway.config`, `gateway.storage`, `community_protocol`.
"""
