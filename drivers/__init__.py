"""Device drivers: one folder per device family, each registered by an entry point.

A folder holds its README, config model, pure protocol code, thin I/O glue, profiles
as data and a sample config.

May import: `gateway.sdk` (the driver kit), and `gateway.config.cli` for a driver's own
CLI commands that take `--config`.  A driver's tests (`drivers/*/tests`) may import any
of `gateway`: they run the driver inside the whole gateway.
"""
