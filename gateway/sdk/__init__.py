"""The driver kit: what a driver is written against, and nothing else.

Lives here: `model` (the normalised message: readings, events, device refs), `driver`
(the driver contract, `DeviceSpec`, device problems), `registry` (drivers by entry
point), `profiles` (device profiles as data, file:line errors), `yamlsource` and
`problems` (YAML read with the line of every key, hostile files refused; problems as
file:line key path: re-exported from `community_protocol`, shared with central),
`backoff`, `pacing` (when a driver's devices are polled), `serialport` (a serial
line read from the event loop), `secrets`, `files`, `clock` (wall and monotonic run
clock), `capacity` and `devicechecks` (what `validate` and
`check` ask of a driver).

May import: the standard library, third-party packages and `community_protocol` (the
contract's enums, ids and builders, which `model` re-exports); no other `gateway` package.
Drivers (`drivers/*`) import this package (and `gateway.config` in their tests).
"""
