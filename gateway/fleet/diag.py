"""Remote diagnostics: `cmd/diag/...` answers what an installer on site would look at.

`diag/check` runs `gateway check` (config, outbox folder, clock, broker, serial ports,
one read of each device), `diag/outbox` and `diag/health` return the outbox's figures
and the health message, `diag/logs` the last log lines (redacted, gateway/fleet/logring.py),
`diag/read` reads one device now (`gateway read`) and `diag/restart` restarts one
driver.  docs/fleet.md, "Remote diagnostics", and docs/mqtt-api.md have the contract.

What keeps it safe:

- authorised like remote configuration: every request must be signed by one of the
  keys that may reconfigure the gateway (`security.config_keys`; `diag/#` is always
  a signed family, gateway/security/signing.py, and the ticket service's command keys
  do not sign it); a gateway without such a key answers every request `unauthorized`;
- each command takes a fixed set of arguments, each checked (a device or driver must
  be one the config names, a count lies in its range); nothing here starts a process
  or touches a path from a request, so no argument can become a shell command;
- a rate per requester (signing key and `by`) and one for all of them, with the
  number of requesters remembered bounded; the slow commands (check, read, restart)
  run one at a time; every result is bounded in size.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from community_protocol.topics import CommandPath
from gateway.host import Host
from gateway.mqtt.commands import Command, CommandFailed
from gateway.sdk.driver import DeviceSpec, ReadResult
from gateway.sdk.registry import available_drivers

from .logring import LEVELS, LogRing

if TYPE_CHECKING:
    from gateway.install.checks import CheckResult

__all__ = ["MAX_LOG_LINES", "Diagnostics", "RequestLimits", "attach", "process_ring"]

log = logging.getLogger(__name__)

MAX_LOG_LINES = 500
MAX_LOG_BYTES = 48 * 1024  # of one diag/logs reply: well within an MQTT packet
MAX_RESULTS = 200  # check results in one reply
MAX_TEXT = 500  # characters of one detail, hint or problem line
DEVICE_READ_S = 5.0  # one device's read in diag/read and diag/check
DEVICES_BUDGET_S = 15.0  # all device reads of one diag/check (the router allows 30 s)
_ID_MAX = 64

Work = Coroutine[Any, Any, Any]


class RequestLimits:
    """Token buckets: one per requester, one for everybody; remembers `max_requesters`.

    A requester unseen for longest is forgotten first when the table is full; it then
    starts with a full bucket again, which the shared bucket still bounds.
    """

    def __init__(
        self,
        per_requester: tuple[float, int] = (0.2, 5),
        total: tuple[float, int] = (1.0, 10),
        max_requesters: int = 256,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.burst = per_requester
        self.total_rate, self.total_burst = total
        self.max_requesters = max_requesters
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._total = (float(self.total_burst), clock())

    def admit(self, requester: str) -> float:
        """0 when the request may run (and is counted); else the seconds to wait."""
        now = self._clock()
        tokens, at = self._buckets.pop(requester, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        total, total_at = self._total
        total = min(float(self.total_burst), total + (now - total_at) * self.total_rate)
        wait = 0.0
        if tokens < 1:
            wait = (1 - tokens) / self.rate
        elif total < 1:
            wait = (1 - total) / self.total_rate
        else:
            tokens, total = tokens - 1, total - 1
        self._buckets[requester] = (tokens, now)
        self._total = (total, now)
        while len(self._buckets) > self.max_requesters:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _result_doc(r: CheckResult) -> dict[str, str]:
    doc = {"name": _cut(r.name, 100), "status": str(r.status), "detail": _cut(r.detail)}
    if r.hint:
        doc["hint"] = _cut(r.hint)
    return doc


def _arguments(cmd: Command, allowed: Mapping[str, type]) -> dict[str, Any]:
    """The command's arguments, each of its type; `by` (who asks) is always allowed."""
    out: dict[str, Any] = {}
    for key, value in cmd.args.items():
        if key == "by":
            continue
        kind = allowed.get(key)
        if kind is None:
            known = ", ".join(sorted(allowed)) or "none"
            raise CommandFailed(f"{cmd.path}: unknown argument {key[:40]!r} (known: {known})")
        if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
            raise CommandFailed(f"{cmd.path}: argument {key!r} must be a {kind.__name__}")
        out[key] = value
    return out


def _requester(cmd: Command) -> str:
    """Who asks, as signed: the key id, and the `by` field when there is one."""
    kid = cmd.auth.get("key_id", "?") if isinstance(cmd.auth, Mapping) else "?"
    by = cmd.args.get("by")
    if by is not None and not (isinstance(by, str) and 1 <= len(by) <= _ID_MAX):
        raise CommandFailed(f"field 'by' must be a string of 1 to {_ID_MAX} characters")
    return f"{kid}/{by}" if by else str(kid)


class Diagnostics:
    """The `diag` command family of one host."""

    def __init__(self, host: Host, ring: LogRing, limits: RequestLimits | None = None) -> None:
        self.host = host
        self.ring = ring
        self.limits = limits or RequestLimits()
        self._slow = asyncio.Lock()
        self.counts = {"run": 0, "refused": 0, "limited": 0}
        # Each parses its arguments (CommandFailed for a bad one) and returns the work.
        self._commands: dict[str, Callable[[Command], Work]] = {
            CommandPath.DIAG_CHECK: self._check,
            CommandPath.DIAG_OUTBOX: self._outbox,
            CommandPath.DIAG_HEALTH: self._health,
            CommandPath.DIAG_LOGS: self._logs,
            CommandPath.DIAG_READ: self._read,
            CommandPath.DIAG_RESTART: self._restart,
        }

    async def handle(self, cmd: Command) -> tuple[str, Any]:
        """The router's handler of `cmd/diag/...`."""
        run = self._commands.get(cmd.path)
        if run is None:
            self.counts["refused"] += 1
            raise CommandFailed(f"unknown command {cmd.path[:100]!r}: {CommandPath.DIAG_FORM}")
        # The router's guard verified any `auth` there is; without a trusted key there is
        # no guard, and a diag request must then not run at all.
        if cmd.auth is None or not self.host.config.security.config_keys:
            self.counts["refused"] += 1
            raise CommandFailed(
                f"{cmd.path} must be signed by a fleet key this gateway trusts"
                " (security.config_keys); not run",
                status="unauthorized",
            )
        requester = _requester(cmd)
        work = run(cmd)  # a malformed request is refused before it costs a token
        wait = self.limits.admit(requester)
        if wait > 0:
            self.counts["limited"] += 1
            work.close()
            raise CommandFailed(
                f"too many diagnostics requests; try again in {math.ceil(wait)} s", status="busy"
            )
        self.counts["run"] += 1
        log.info("diagnostics %s for %s", cmd.path, requester)
        return "done", await work

    # ---- cheap ---------------------------------------------------------------------

    def _outbox(self, cmd: Command) -> Work:
        _arguments(cmd, {})
        return self._outbox_doc()

    async def _outbox_doc(self) -> dict[str, Any]:
        path = self.host.config.outbox.path
        stats = dataclasses.asdict(self.host.outbox.stats())
        files = {}
        for suffix in ("", "-wal"):
            f = path.with_name(path.name + suffix)
            files[f.name] = f.stat().st_size if f.exists() else None
        return {"path": str(path), "files": files, "stats": stats}

    def _health(self, cmd: Command) -> Work:
        _arguments(cmd, {})
        return self._health_doc()

    async def _health_doc(self) -> dict[str, Any]:
        return {"health": self.host.health_doc(), "diagnostics": dict(self.counts)}

    def _logs(self, cmd: Command) -> Work:
        args = _arguments(cmd, {"lines": int, "level": str})
        n = args.get("lines", 100)
        if not 1 <= n <= MAX_LOG_LINES:
            raise CommandFailed(f"{cmd.path}: 'lines' must be 1 to {MAX_LOG_LINES}")
        level = args.get("level", "debug")
        if level not in LEVELS:
            raise CommandFailed(f"{cmd.path}: 'level' must be one of {', '.join(LEVELS)}")
        return self._log_lines(n, level)

    async def _log_lines(self, n: int, level: str) -> dict[str, Any]:
        lines = self.ring.last(n, level=level, max_bytes=MAX_LOG_BYTES)
        return {
            "lines": lines,
            "held": len(self.ring),
            "dropped": self.ring.dropped,
            "truncated": len(lines) < n and len(lines) < len(self.ring),
        }

    # ---- slow: one at a time ---------------------------------------------------------

    async def _one_at_a_time(self, work: Work) -> Any:
        if self._slow.locked():
            work.close()
            raise CommandFailed("another diagnostics command is running; try again", "busy")
        async with self._slow:
            return await work

    def _spec(self, cmd: Command, device_id: str) -> DeviceSpec:
        try:
            return self.host.device(device_id)
        except KeyError:
            known = ", ".join(d.id for d in self.host.devices[:20])
            raise CommandFailed(
                f"{cmd.path}: no device {device_id[:_ID_MAX]!r} (devices: {known})"
            ) from None

    def _read(self, cmd: Command) -> Work:
        args = _arguments(cmd, {"device": str})
        if "device" not in args:
            raise CommandFailed(f"{cmd.path}: argument 'device' is required")
        return self._read_device(cmd, self._spec(cmd, args["device"]))

    async def _read_device(self, cmd: Command, spec: DeviceSpec) -> dict[str, Any]:
        result = await self._one_at_a_time(_read_one(spec))
        if isinstance(result, str):
            raise CommandFailed(f"{cmd.path}: {spec.id}: {result}")
        return result

    def _restart(self, cmd: Command) -> Work:
        args = _arguments(cmd, {"driver": str})
        name = args.get("driver")
        if name is None:
            raise CommandFailed(f"{cmd.path}: argument 'driver' is required")
        drivers = sorted({d.driver for d in self.host.devices})
        if name not in drivers:
            raise CommandFailed(
                f"{cmd.path}: no driver {name[:_ID_MAX]!r} in this config"
                f" (drivers: {', '.join(drivers)})"
            )

        return self._restart_driver(cmd, name)

    async def _restart_driver(self, cmd: Command, name: str) -> dict[str, Any]:
        async def restart() -> None:
            try:
                await self.host.restart_driver(name)
            except KeyError as exc:
                raise CommandFailed(f"{cmd.path}: {exc.args[0]}") from None

        await self._one_at_a_time(restart())
        return {"driver": name, "restarted": True}

    def _check(self, cmd: Command) -> Work:
        args = _arguments(cmd, {"devices": bool})
        return self._one_at_a_time(self._run_checks(args.get("devices", True)))

    async def _run_checks(self, devices: bool) -> dict[str, Any]:
        # `gateway check`'s code (about 0.5 MB with what it imports) loads on the first
        # diag/check: most gateways never get one (docs/benchmarks.md, issue 16).
        from gateway.install.checkall import run_before_devices
        from gateway.install.checks import CheckResult, Status

        host = self.host
        # On the config file the gateway runs; blocking (sockets, files): in a thread.
        results, _, problems = await asyncio.to_thread(run_before_devices, host.config_path)
        if devices and not problems:
            deadline = time.monotonic() + DEVICES_BUDGET_S
            for spec in host.devices:
                name = f"device {spec.id}"
                if time.monotonic() >= deadline:
                    results.append(
                        CheckResult(name, Status.SKIP, f"not read: {DEVICES_BUDGET_S:g} s used up")
                    )
                    continue
                read = await _read_one(spec)
                if isinstance(read, str):
                    results.append(CheckResult(name, Status.SKIP, read))
                elif read["ok"]:
                    results.append(CheckResult(name, Status.OK, f"{len(read['points'])} points"))
                else:
                    results.append(CheckResult(name, Status.FAIL, read["fault"], read["hint"]))
        shown = results[:MAX_RESULTS]
        return {
            "ok": not any(r.failed for r in results),
            "results": [_result_doc(r) for r in shown],
            "omitted": len(results) - len(shown),
            "problems": [_cut(p) for p in problems[:50]],
        }


async def _read_one(spec: DeviceSpec) -> dict[str, Any] | str:
    """One read of `spec` through its driver's `read_once`, or why it cannot be read."""
    info = available_drivers().get(spec.driver)
    if info is None or info.read_once is None:
        return f"driver {spec.driver} cannot read a device on demand"
    ports = info.serial_ports(spec) if info.serial_ports is not None else ()
    if ports:
        # The running driver holds the port: a second opener would fail or garble the
        # bus.  Its readings are in the telemetry; diag/restart re-opens it.
        return f"on serial port {ports[0].path}, held by the running driver {spec.driver}"
    try:
        async with asyncio.timeout(DEVICE_READ_S):
            result: ReadResult = await info.read_once(spec)
    except TimeoutError:
        return f"no result within {DEVICE_READ_S:g} s"
    except Exception as exc:
        return _cut(f"{type(exc).__name__}: {exc}")
    return {
        "device": spec.id,
        "ok": result.ok,
        "fault": _cut(result.fault),
        "hint": _cut(result.hint),
        "points": [
            {"name": p.name, "value": p.value, "unit": p.unit, "raw": _cut(p.raw, 200)}
            for p in result.points[:MAX_RESULTS]
        ],
    }


_RING: LogRing | None = None


def process_ring() -> LogRing:
    """The process's one ring of log lines, on the root logger from the first call on."""
    global _RING
    # One per process, however many hosts it builds (tests build many): the handler is
    # installed once and its memory bound holds for the process.
    if _RING is None:
        _RING = LogRing()
    root = logging.getLogger()
    if _RING not in root.handlers:  # setup_logging may have replaced the handlers
        root.addHandler(_RING)
    return _RING


def attach(host: Host, ring: LogRing | None = None) -> Diagnostics:
    """Answer `cmd/diag/...` on `host`; keeps the last log lines from now on."""
    diag = Diagnostics(host, process_ring() if ring is None else ring)
    host.add_command_route(CommandPath.DIAG, diag.handle)
    return diag
