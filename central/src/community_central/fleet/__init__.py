"""Fleet operations (central side of remote configuration): list, push, rollout, audit, diag.

`community-central fleet` and its Python API (`Fleet`).  The contract comes from the
protocol package (config-desired.json, config-reported.json, the `gateway.config`
event, the signed bytes and Ed25519 keys); the gateway side is `gateway.fleet` of the
gateway distribution, which this package never imports.  docs/fleet.md has the model.

- `link`: one short broker connection per operation (bounded queue);
- `inventory`: gateways folded from their status, health and reported documents;
- `desired`: a YAML config file checked and made into a signed document per gateway;
- `audit`: the audit trail in central's database (SQLite or PostgreSQL);
- `api`: `Fleet` (list, push, rollout, watch, audit);
- `diag`: `diagnose`, one signed remote-diagnostics request and its checked reply;
- `cli`: the `fleet` command group; `show`: how it prints results.

May import: `community_protocol`, `community_central.broker`, `.database`,
`.options`, `.yamlfile`.  Imported by `community_central.cli` only.
"""

from __future__ import annotations

from .api import Fleet, PushOutcome, RolloutReport, audit_trail
from .audit import AuditError, AuditRow, AuditStore
from .desired import desired_for, load_config_file
from .diag import DiagError, diag_fields, diagnose
from .inventory import GatewayView, Inventory, Selector
from .link import FleetLink, LinkError

__all__ = [
    "AuditError",
    "AuditRow",
    "AuditStore",
    "DiagError",
    "Fleet",
    "FleetLink",
    "GatewayView",
    "Inventory",
    "LinkError",
    "PushOutcome",
    "RolloutReport",
    "Selector",
    "audit_trail",
    "desired_for",
    "diag_fields",
    "diagnose",
    "load_config_file",
]
