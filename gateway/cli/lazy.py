"""Command groups whose commands are imported only when one of them runs.

`gateway --help` and every installer command would otherwise import every driver
(pymodbus, libosdp), the alarm engine and the web console first: over a second on a
busy 2-core box, on each call.  A `LazyGroup` holds a table of name -> "module:attr"
and imports a command when it is asked to run; `--help` reads each command's help from
its function's docstring in the source, so it imports none of them.

Drivers add commands through entry points (`community_gateway.commands` for top-level
commands, `community_gateway.scan` under `gateway scan`), listed the same way: no
driver is imported to print its command's help.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Mapping
from importlib.machinery import PathFinder
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import click

__all__ = [
    "COMMANDS_GROUP",
    "SCAN_GROUP",
    "LazyGroup",
    "listed_help",
    "load_command",
    "source_help",
]

COMMANDS_GROUP = "community_gateway.commands"
SCAN_GROUP = "community_gateway.scan"


class LazyGroup(click.Group):
    """A click group that imports each of its `lazy` commands on first use.

    `lazy` maps a command name to "package.module:attr"; `plugins` names an entry-point
    group whose commands join the table (read from the metadata when a name is not in
    `lazy`, or for `--help`).  A name in both stays the group's own.
    """

    def __init__(
        self,
        *args: Any,
        lazy: Mapping[str, str] | None = None,
        plugins: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, str] = dict(lazy or {})
        self.plugins = plugins
        self._plugin_table: dict[str, str] | None = None

    def table(self, *, with_plugins: bool = True) -> dict[str, str]:
        """Every lazy command's name and target, the plugins' included when asked."""
        if with_plugins and self.plugins is not None and self._plugin_table is None:
            # Here, not at the top: importlib.metadata brings email, zipfile and csv
            # (about 30 ms), which a command found in `lazy` never needs.
            from importlib.metadata import entry_points

            self._plugin_table = {ep.name: ep.value for ep in entry_points(group=self.plugins)}
        return {**(self._plugin_table or {}), **self.lazy}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.table()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None:
            table = self.table(with_plugins=False)
            if cmd_name not in table:
                table = self.table()
            if cmd_name in table:
                command = self.commands[cmd_name] = load_command(table[cmd_name])
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        table = self.table()
        rows = []
        for name in names:
            loaded = self.commands.get(name)
            if loaded is None:
                rows.append((name, listed_help(name, table[name], limit)))
            elif not loaded.hidden:
                rows.append((name, loaded.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def listed_help(name: str, target: str, limit: int) -> str:
    """The short help of the command at `target`, as click would show it, not imported."""
    module, _, attr = target.partition(":")
    # A stand-in command with the same docstring: click's own shortening, no import.
    return click.Command(name, help=source_help(module, attr)).get_short_help_str(limit)


def load_command(target: str) -> click.Command:
    """Import "package.module:attr"; a target that names no click command fails loudly."""
    module, _, attr = target.partition(":")
    command = getattr(importlib.import_module(module), attr)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command


def source_help(module: str, attr: str) -> str:
    """The docstring of function `attr` in `module`, read from its source without importing.

    Importing `drivers.modbus.cli` would import `drivers.modbus`, and with it pymodbus,
    only to print a line of help.  Empty when the source cannot be found or read.
    """
    path = _source_path(module)
    if path is None:
        return ""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return ""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == attr:
            return inspect.cleandoc(ast.get_docstring(node, clean=False) or "")
    return ""


def _source_path(module: str) -> Path | None:
    # Only the top-level package is looked up through the import system (which may
    # import it: cheap, `drivers` is a namespace); below it, the path finder, which
    # never imports the parents.
    top, *rest = module.split(".")
    spec = find_spec(top)
    if spec is None:
        return None
    name = top
    for part in rest:
        if spec is None or spec.submodule_search_locations is None:
            return None
        name = f"{name}.{part}"
        spec = PathFinder.find_spec(name, list(spec.submodule_search_locations))
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)
