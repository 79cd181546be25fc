"""The central side is its own product: what installing it pulls in, and what it imports.

Offline: the requirements are read from each pyproject.toml and followed through the
metadata of the distributions installed in this venv (the same versions pip would pick
here), so no index is asked.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
CENTRAL = ROOT / "central"
HARDWARE = {"pymodbus", "libosdp", "gpiod", "pyserial", "influxdb-client"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(pyproject: Path, extras: tuple[str, ...] = ()) -> set[str]:
    """Every distribution installing this project with `extras` brings in, by name."""
    project = tomllib.loads(pyproject.read_text())["project"]
    todo = [Requirement(r) for r in project.get("dependencies", [])]
    for extra in extras:
        todo += [Requirement(r) for r in project["optional-dependencies"][extra]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(req.name)  # missing here: the venv is incomplete
        for text in dist.requires or []:
            sub = Requirement(text)
            env = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(e) for e in env):
                todo.append(sub)
    return seen


@pytest.mark.parametrize("extras", [(), ("postgres",)], ids=["sqlite", "postgres"])
def test_installing_central_brings_no_gateway_and_no_hardware_library(
    extras: tuple[str, ...],
) -> None:
    needed = _closure(CENTRAL / "pyproject.toml", extras)
    assert "paho-mqtt" in needed and "jsonschema" in needed  # the closure is real
    assert not needed & (HARDWARE | {"community-gateway"}), sorted(needed)
    if extras:
        assert "psycopg" in needed


def test_installing_the_gateway_does_not_bring_the_ticket_service() -> None:
    needed = _closure(ROOT / "pyproject.toml", ("test",))
    assert "community-central" not in needed
    # Nor does the gateway's own package list include the central code.
    from setuptools import find_packages

    found = find_packages(ROOT, include=["gateway*", "drivers*"])
    assert not [p for p in found if "ticket" in p or "central" in p], found


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_central_code_never_imports_the_gateway() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in sorted((CENTRAL / "src").rglob("*.py"))
        if _imports(p) & {"gateway", "drivers"}
    ]
    assert offenders == []


def test_the_command_runs_without_the_gateway_importable(tmp_path: Path) -> None:
    # A gateway package that explodes when imported: central must never touch it.
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "__init__.py").write_text("raise ImportError('gateway imported')\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import community_central.cli, community_central.service, community_central.store"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_every_command_that_connects_takes_the_same_broker_options() -> None:
    import click
    from community_central.cli import main

    def commands(group: click.Group) -> list[click.Command]:
        # As click finds them (`fleet` is loaded on demand, not in `group.commands`).
        ctx = click.Context(group)
        found: list[click.Command] = []
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None, name
            found += commands(command) if isinstance(command, click.Group) else [command]
        return found

    names = ("broker_url", "prefix", "username", "password_file", "ca_file")
    shapes: dict[str, list[tuple[object, ...]]] = {}
    for command in commands(main):
        params = {p.name: p for p in command.params}
        if "broker_url" in params:
            shapes[str(command.name)] = [
                (params[n].opts, getattr(params[n], "help", None), params[n].default) for n in names
            ]
    assert "serve" in shapes and "push" in shapes and len(shapes) > 5, sorted(shapes)
    first = shapes.pop("serve")
    assert all(shape == first for shape in shapes.values()), shapes


@pytest.mark.parametrize("command", [["list"], ["stats"], ["ack", "T-000001", "--by", "li"]])
def test_what_staff_type_loads_neither_mqtt_nor_schemas(tmp_path: Path, command: list[str]) -> None:
    # Staff and operators type these by hand: 0.4-0.6 s each when they loaded the
    # service's MQTT client, schemas and psycopg, 0.12 s without.
    from community_central.store import TicketStore

    TicketStore(tmp_path / "t.db").close()
    code = (
        "import sys; from community_central.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "heavy = ('paho', 'pydantic', 'jsonschema', 'psycopg', 'community_central.service')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)"
    )
    args = [*command, "--db", str(tmp_path / "t.db")] + (
        ["--wait", "0"] if "ack" in command else []
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr  # (an unknown ticket is said, not raised)
    assert done.stderr.splitlines()[-1] == "[]", done.stderr
