"""The test suite's own rules: fixtures come from the plugin, never from importing a conftest."""

from __future__ import annotations

import ast
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import cpureport, plugin
from tests.peers import Mosquitto, clear_dead_faketime, wait_for

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("tests", "drivers", "central", "protocol")


def _test_sources() -> list[Path]:
    return [
        path
        for folder in FOLDERS
        if (ROOT / folder).is_dir()
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "tests" in path.relative_to(ROOT).parts
    ]


def _imported_modules(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def test_no_test_module_imports_a_conftest() -> None:
    # A conftest imported as a module registers its fixtures twice and hides where they
    # come from: shared fixtures live in tests/plugin.py, helpers in ordinary modules.
    found = [
        f"{path.relative_to(ROOT)}: imports {name}"
        for path in _test_sources()
        for name in _imported_modules(path)
        if name.rsplit(".", 1)[-1] == "conftest"
    ]
    assert _test_sources(), "no test sources found"
    assert not found, "\n".join(found)


def test_the_plugin_is_registered_once_in_the_root_conftest() -> None:
    registering = [
        str(path.relative_to(ROOT))
        for path in [ROOT / "conftest.py", *_test_sources()]
        if path.name == "conftest.py" and "pytest_plugins" in path.read_text("utf-8")
    ]
    assert registering == ["conftest.py"]


def _pytest_in(
    tmp_path: Path, files: dict[str, str], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """pytest in a subprocess on `files` written to tmp_path, with only the plugins `-p` names.

    No other installed plugin (hypothesis, typeguard): each interpreter otherwise spent
    a second or more of CPU importing them.
    """
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **(env or {})},
    )


def test_xdist_groups_keep_their_tests_on_one_worker(tmp_path: Path) -> None:
    # ./scripts/test relies on `--dist loadgroup` for modules whose expensive fixtures
    # must be built once; pytest 9.2 with pytest-xdist 3.8 silently ignored the groups.
    grouped = (
        "import os, pytest\n"
        "@pytest.mark.xdist_group('one')\n"
        "@pytest.mark.parametrize('i', range(8))\n"
        "def test_where(i):\n"
        "    print('worker', os.environ['PYTEST_XDIST_WORKER'])\n"
    )
    ran = _pytest_in(
        tmp_path,
        {"pytest.ini": "[pytest]\n", "test_grouped.py": grouped},
        *("-p", "xdist.plugin", "-n", "2", "--dist", "loadgroup", "-v"),
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    workers = {line.split()[0] for line in ran.stdout.splitlines() if " PASSED " in line}
    assert len(workers) == 1 and ran.stdout.count(" PASSED ") == 8, ran.stdout


def _processes_naming(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(
                errors="replace"
            ):
                found.append(int(proc.name))
    return found


@pytest.mark.skipif(shutil.which("faketime") is None, reason="needs faketime")
def test_a_broker_run_through_a_wrapper_is_gone_after_the_test(tmp_path: Path) -> None:
    # faketime runs mosquitto as its child: ending only faketime left the broker running
    # (and its port taken) after every run of tests/test_check.py.
    broker = Mosquitto(tmp_path / "late", command=("faketime", "-f", "+5d", "mosquitto"))
    broker.start()
    conf = str(tmp_path / "late" / "mosquitto.conf")
    assert _processes_naming(conf)
    broker.remove()
    assert not _processes_naming(conf)


def test_an_mqtt_client_a_test_leaves_running_is_stopped_and_named(tmp_path: Path) -> None:
    # Tests that never stopped a Subscriber left paho threads reconnecting to dead
    # brokers for the rest of the worker's life; tests/plugin.py stops them.
    left = (
        "import threading\n"
        "import paho.mqtt.client as mqtt\n"
        "from tests.harness import Subscriber\n"
        "from tests.peers import free_port\n"
        "def test_leaves_one(broker):\n"
        "    Subscriber(broker.port, 'x/#', client_id='a-subscriber').start()\n"
        "    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id='left-behind')\n"
        "    c.connect_async('127.0.0.1', free_port())\n"
        "    c.loop_start()\n"
        "def test_none_left():\n"
        "    assert not [t for t in threading.enumerate() if t.name.startswith('paho')]\n"
    )
    conftest = "pytest_plugins = ['tests.plugin']\n"
    ran = _pytest_in(
        tmp_path, {"conftest.py": conftest, "test_left.py": left}, env={"PYTHONPATH": str(ROOT)}
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "2 passed" in ran.stdout, ran.stdout
    # A Subscriber may rely on it (tests/harness.py); another client is named.
    assert "test_leaves_one left MQTT clients running (left-behind)" in ran.stdout, ran.stdout


def test_the_cpu_report_charges_a_child_once(tmp_path: Path) -> None:
    # The meter reads a live child from /proc, then (once waited for) from rusage:
    # what it charged while the child ran must not be charged again at its end.
    meter = cpureport._Meter()
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nt = time.process_time()\n"
         "while time.process_time() - t < 0.6: pass\n"]
    )  # fmt: skip
    wait_for(lambda: cpureport._descendants_cpu(os.getpid()).get(child.pid, (0, 0))[0] > 0.2)
    while_running = meter.take()
    child.wait()
    after = meter.take()
    assert while_running > 0.2, while_running
    assert 0.55 < while_running + after < 1.0, (while_running, after)


def test_the_recorded_durations_name_files_that_exist() -> None:
    # tests/plugin.py orders the suite by them; a renamed file would silently lose its
    # place (refresh: PYTEST_CPU_REPORT=run.json, then jq as tests/cpureport.py says).
    files, long = plugin._durations()
    assert files and long, "tests/durations.json is missing or unreadable"
    assert [name for name in files if not (ROOT / name).is_file()] == []
    assert {nodeid.split("::")[0] for nodeid in long} <= set(files)


def test_what_a_killed_faketime_left_in_dev_shm_is_cleared_before_the_next_one() -> None:
    # A wrapper killed with SIGKILL leaves its semaphore named after its pid; a later
    # wrapper with that pid failed to start ("sem_open: File exists", a stress-ng run).
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = Path(f"/dev/shm/sem.faketime_sem_{dead.pid}")
    alive = Path(f"/dev/shm/sem.faketime_sem_{os.getpid()}")
    stale.write_bytes(b"")
    alive.write_bytes(b"")
    try:
        clear_dead_faketime()
        assert not stale.exists() and alive.exists()
    finally:
        stale.unlink(missing_ok=True)
        alive.unlink(missing_ok=True)
