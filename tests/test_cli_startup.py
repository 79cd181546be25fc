"""The `gateway` command imports only what the command it runs needs.

An installer's every `gateway ...` call, and every gateway start, pays for what the
command line imports: `--help` must import no command, and a config names the only
drivers `validate` and `devices` import.  Each check runs the command in a fresh
interpreter and looks at `sys.modules` afterwards; the last one looks at what a running
gateway's garbage collector still has to visit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gateway.cli import COMMANDS, main
from gateway.cli.lazy import (
    COMMANDS_GROUP,
    SCAN_GROUP,
    LazyGroup,
    listed_help,
    load_command,
    source_help,
)
from gateway.sdk.registry import DriverRegistry, available_drivers
from tests.harness import simulated_meter, write_config
from tests.peers import free_port

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "config" / "demo.yaml"

# What no command may import unless it is the one that needs it.
HEAVY = (
    "drivers.",
    "pymodbus",
    "osdp",
    "gpiod",
    "serial",
    "paho",
    "aiohttp",
    "cryptography",
    "gateway.alarms",
    "community_central",
    "gateway.web",
    "gateway.notify",
    "gateway.sinks",
    "gateway.config",
    "gateway.mqtt",
    "gateway.process.runtime",
    "pydantic",
)

_RUN = """
import json, sys
from gateway.cli import main
try:
    main(sys.argv[1:], prog_name="gateway")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("\\n" + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def imported_by(*args: str) -> tuple[int, str, list[str]]:
    """Run `gateway ARGS` in a fresh interpreter: exit code, output, modules it imported."""
    out = subprocess.run(
        [sys.executable, "-c", _RUN, *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    head, _, last = out.stdout.rstrip("\n").rpartition("\n")
    result = json.loads(last)
    return result["code"], head + out.stderr, result["modules"]


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h.rstrip(".") or m.startswith(h) for h in HEAVY)]


def test_help_lists_every_command_and_imports_none() -> None:
    code, text, modules = imported_by("--help")
    assert code == 0
    listed = {line.split()[0] for line in text.split("Commands:")[1].splitlines() if line.strip()}
    drivers_commands = {ep.name for ep in _entry_points(COMMANDS_GROUP)}
    assert listed == {*COMMANDS, *drivers_commands, "scan"}
    assert "plan" in listed and "osdp" in listed  # drivers' commands, not imported
    assert heavy(modules) == []


def test_run_takes_its_stop_signals_before_importing_the_gateway() -> None:
    # `run` installs its SIGTERM/SIGINT handlers first thing: its module must be light,
    # or a stop during the imports would kill the process (tests/test_run_signals.py).
    code, text, modules = imported_by("run", "--help")
    assert code == 0 and "--broker-url" in text
    assert "gateway.process.stopsignal" in modules
    assert heavy(modules) == []


def test_scan_help_lists_the_drivers_scans_without_importing_a_driver() -> None:
    code, text, modules = imported_by("scan", "--help")
    assert code == 0
    assert "modbus" in text and "dlt645" in text
    assert heavy(modules) == []


def test_validate_imports_only_the_drivers_the_config_names(tmp_path: Path) -> None:
    code, text, modules = imported_by("validate", "-c", str(DEMO))
    assert code == 0, text
    assert "drivers.simulated" in modules
    assert [
        m for m in modules if m.startswith(("drivers.modbus", "drivers.osdp", "pymodbus"))
    ] == []
    assert [m for m in modules if m.startswith(("gateway.alarms.engine", "paho", "aiohttp"))] == []
    # No TLS file and no command key to check: cryptography (about 8 MB) stays out.
    assert [m for m in modules if m.startswith("cryptography")] == []


def _entry_points(group: str) -> list[EntryPoint]:
    from importlib.metadata import entry_points

    return list(entry_points(group=group))


def _every_lazy_command() -> list[tuple[str, str]]:
    table = [(name, target) for name, target in COMMANDS.items()]
    for group in (COMMANDS_GROUP, SCAN_GROUP):
        table += [(f"{group}:{ep.name}", ep.value) for ep in _entry_points(group)]
    return table


@pytest.mark.parametrize(("name", "target"), _every_lazy_command())
def test_every_listed_command_loads_and_its_help_is_the_one_listed(name: str, target: str) -> None:
    command = load_command(target)
    module, _, attr = target.partition(":")
    assert source_help(module, attr), f"{target} has no docstring to list"
    # The help `--help` reads from the source is the help the command shows when run.
    for limit in (45, 60, 200):
        assert listed_help(name, target, limit) == command.get_short_help_str(limit)


def test_a_driver_command_never_hides_a_built_in_one() -> None:
    assert not {ep.name for ep in _entry_points(COMMANDS_GROUP)} & {*COMMANDS, "scan"}


def test_a_driver_command_runs_through_the_lazy_table() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["scan", "modbus", "--help"])
    assert result.exit_code == 0, result.output
    assert "--port" in result.output
    assert isinstance(main, LazyGroup) and "plan" in main.list_commands(click.Context(main))


def test_an_unknown_command_is_one_clear_error() -> None:
    code, text, _ = imported_by("nosuch")
    assert code == 2 and "No such command 'nosuch'" in text


def test_a_target_that_is_no_command_fails_loudly() -> None:
    with pytest.raises(TypeError, match="is not a click command"):
        load_command("gateway.cli.lazy:SCAN_GROUP")


def test_registry_names_drivers_without_importing_and_loads_on_lookup() -> None:
    registry = DriverRegistry(
        {
            "simulated": EntryPoint("simulated", "drivers.simulated:DRIVER", "g"),
            "wrong": EntryPoint("wrong", "gateway.sdk.model:Kind", "g"),
            "renamed": EntryPoint("renamed", "drivers.simulated:DRIVER", "g"),
        }
    )
    assert sorted(registry) == ["renamed", "simulated", "wrong"]
    assert "wrong" in registry and "nosuch" not in registry
    assert registry["simulated"].name == "simulated"
    with pytest.raises(TypeError, match="is not a DriverInfo"):
        registry.get("wrong")
    with pytest.raises(TypeError, match="names a driver called 'simulated'"):
        registry["renamed"]
    assert registry.get("nosuch") is None
    assert available_drivers()["simulated"] is available_drivers()["simulated"]


_DUMP_AT_EXIT = """
import atexit, json, sys
atexit.register(lambda: json.dump(sorted(sys.modules), open(sys.argv.pop(), "w")))
"""


def run_until_ready(tmp_path: Path, prelude: str, dump: Path) -> None:
    """`gateway run` of one simulated meter (no web console, SMS, sink, TLS file or
    command key) in a fresh interpreter that runs `prelude` first; stopped with SIGTERM
    once it told systemd READY.  `dump` is the prelude's last argument.
    """
    config = write_config(tmp_path / "gw.yaml", "mqtt://127.0.0.1:1", [simulated_meter("m1", 1.0)])
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    code = prelude + "from gateway.cli import main; main(sys.argv[1:-1], prog_name='gateway')"
    broker = f"mqtt://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "run", "-c", str(config), "--broker-url", broker, str(dump)],
        env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while b"READY=1" not in notify.recv(4096).split(b"\n"):
            pass  # STATUS lines; recv's timeout bounds the wait
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        notify.close()
    assert proc.returncode == 0, err


def test_a_running_gateway_imports_only_what_its_config_uses(tmp_path: Path) -> None:
    dump = tmp_path / "modules.json"
    run_until_ready(tmp_path, _DUMP_AT_EXIT, dump)
    modules = json.loads(dump.read_text())
    assert "drivers.simulated" in modules and "gateway.process.runtime" in modules
    unused = (
        "drivers.modbus",
        "drivers.osdp",
        "drivers.gpio",
        "drivers.dlt645",
        "drivers.serial_line",
        "drivers.zigbee2mqtt",
        "pymodbus",
        "osdp",
        "aiohttp",
        "influxdb_client",
        "cryptography",
        "gateway.web.service",
        "gateway.web.server",
        "gateway.notify.sms",
        "gateway.notify.modem",
        "gateway.sinks.influx",
        "gateway.tickets",
        # Loaded by the request that needs them (diag/check, an update's bundle), not at
        # start: about 0.7 MB of a running gateway (docs/benchmarks.md, issue 16).
        "gateway.install",
        "tarfile",
        "gateway.wellness.monitor",
        # The update machinery, with no update at hand (gateway.fleet.update_front).
        "gateway.fleet.update_service",
        "gateway.fleet.update_install",
        "gateway.fleet.update_chunks",
        "gateway.fleet.update_transfer",
    )
    assert [m for m in modules if m.startswith(unused)] == []
    assert "gateway.fleet.update" not in modules


_COUNT_AT_EXIT = """
import atexit, gc, json, sys
atexit.register(lambda: json.dump(
    {"frozen": gc.get_freeze_count(), "collected": len(gc.get_objects())},
    open(sys.argv.pop(), "w"),
))
"""


def test_a_full_collection_once_running_visits_only_what_was_made_since(tmp_path: Path) -> None:
    # A full pass of the cyclic collector holds the GIL for as long as it visits
    # objects: 20 to 35 ms for the whole start-up heap, every 10 to 20 s under load,
    # which an alarm arriving then waited for (gateway.process.service.settle_heap).
    dump = tmp_path / "heap.json"
    run_until_ready(tmp_path, _COUNT_AT_EXIT, dump)
    heap = json.loads(dump.read_text())
    assert heap["frozen"] > 10_000  # modules, config, the runtime: frozen at READY
    assert heap["collected"] < heap["frozen"] / 4, heap
