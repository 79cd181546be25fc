"""Fleet operations, gateway side: remote configuration and software updates, each tried,
then committed or rolled back, and remote diagnostics.

The platform publishes a desired configuration (config-desired.json, retained) for one
gateway; the gateway reports what it runs (config-reported.json, retained) and records
every apply, refusal and rollback as a `gateway.config` event.  docs/fleet.md has the
model; in short:

- `state`: the files beside the config (what runs, the last result, a trial in
  progress), each written atomically (fsync, rename, fsync of the folder);
- `check`: signature, identity, version and the candidate config, checked as
  `gateway validate` and `gateway check`'s offline parts do, with problems at their
  paths in the document;
- `trial`: switching to a candidate, and at the next start either trying it or
  restoring the previous config (a trial that was already started once and not
  committed is rolled back before anything else);
- `service`: the feature plugged into the running gateway through `gateway.host.Host`
  (watches `config/desired`, publishes `config/reported`, commits a trial once the
  broker echoes the gateway's own report, rolls back at the deadline);
- `devicechange`: whether a candidate differs from the running config in devices only
  (then it is tried in process, restarting only the drivers concerned);
- `cli`: `gateway config status`.
- `diag`: remote diagnostics, the `cmd/diag/...` commands (`gateway check`, outbox,
  health, the last log lines, one device read, one driver restarted), signed,
  rate-limited, bounded;
- `logring`: the last log lines in memory, redacted as they arrive.

Software updates (docs/fleet.md, "Software updates"):

- `update`: the signed update manifest, its checks, and the database guard;
- `update_install`: fetching, building a release beside the running one, switching,
  committing or rolling back;
- `update_front`: what every running gateway holds of the feature (the command route,
  the health part), loading `update_service` only when an update is at hand;
- `update_service`: the `update` command and the health gate in the running gateway;
- `events`: the `gateway.config` and `gateway.update` audit events as outbox items;
- `launch`: the service's launcher (standard library only, imports no release), which
  switches back a release that keeps failing before any of it is imported.

May import: `gateway.sdk`, `gateway.config`, `gateway.storage`, `gateway.mqtt`,
`gateway.host`, the other feature packages, `gateway.install.checks` and `checkall` (the
checks of `gateway check`), and `community_protocol`.  Imported by `gateway.process`
and `gateway.cli`.
"""
