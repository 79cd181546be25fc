"""The tree keeps its shape: no import cycles, each package imports only what it may, short files.

Imports are read with `ast` from the source, every one of them: at module level, inside
functions (lazy imports) and under `if TYPE_CHECKING:`, because a cycle hidden behind
either is still a cycle in the design.  The import rules below are the ones each
package's docstring states (gateway/*/__init__.py, gateway/host.py, drivers/__init__.py,
central/src/community_central/__init__.py and its fleet/__init__.py,
protocol/community_protocol/__init__.py).

The three import roots are checked together: the gateway (`gateway`, `drivers`), the
central distribution (`community_central`, in central/src) and the contract both
import (`community_protocol`, in protocol/).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 450

# Features: what the runtime plugs in through `gateway.host.Host`.
FEATURES = frozenset({"alarms", "fleet", "notify", "security", "sinks", "web", "wellness"})
CORE = frozenset({"sdk", "config", "storage", "mqtt", "host"})
ALL = CORE | FEATURES | {"process", "install", "cli"}
# The `settings` module of each feature: the config section's model, which
# `gateway.config` imports to validate the whole file.
FEATURE_SETTINGS = frozenset(f"gateway.{f}.settings" for f in FEATURES)

# Package of gateway/ -> the packages it may import (besides itself and `gateway`).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "sdk": frozenset(),
    "config": frozenset({"sdk"}),  # and the modules in CONFIG_MODULES
    "storage": frozenset({"sdk"}),
    "mqtt": frozenset({"sdk", "config", "storage"}),
    "host": frozenset({"sdk", "config", "storage", "mqtt"}),
    **{f: CORE | FEATURES for f in FEATURES},
    # Remote configuration checks a candidate with `gateway check`'s offline checks.
    "fleet": CORE | FEATURES | {"install"},
    "process": ALL - {"cli", "install"},
    "install": ALL - {"cli"},
    "cli": ALL,
}
# Single modules `gateway.config` may import from packages it otherwise may not.
CONFIG_MODULES = FEATURE_SETTINGS | {"gateway.storage.sqlitestore"}
# Driver code (drivers/<family>/, not its tests) is written against the driver kit
# (which reads YAML profiles with file:line); it may also add CLI commands that take
# `--config`.
DRIVER_MODULES = ("gateway.sdk", "gateway.config.cli")


# Top-level package -> the folder its folder is in (what its module names start from).
BASES = {
    "gateway": ROOT,
    "drivers": ROOT,
    "community_central": ROOT / "central" / "src",
    "community_protocol": ROOT / "protocol",
}
# Whose modules make the import graph (drivers only import; their tests are not code).
GRAPHED = ("gateway", "community_central", "community_protocol")

# community_central.fleet may import, of community_central, only these (its docstring);
# and of community_central only `cli` imports the fleet.
FLEET_MAY_IMPORT = frozenset(
    f"community_central.{m}" for m in ("broker", "database", "options", "yamlfile")
)
FLEET_IMPORTED_BY = frozenset({"community_central.cli"})
# What each distribution's code must never import: the other product.
NEVER = {
    "gateway": ("community_central",),
    "drivers": ("community_central",),
    "community_central": ("gateway", "drivers"),
    "community_protocol": ("gateway", "drivers", "community_central"),
}


def _module_name(path: Path) -> str:
    base = next((f for n, f in BASES.items() if path.is_relative_to(f / n)), ROOT)
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(top: str) -> list[Path]:
    return sorted((BASES.get(top, ROOT) / top).rglob("*.py"))


MODULES = frozenset(_module_name(p) for top in GRAPHED for p in _sources(top))


def _imports(path: Path, module: str | None = None) -> set[str]:
    """Every name `path` imports from, anywhere in the file, as absolute dotted names.

    `module`: the file's dotted name (default: from its place in the tree), which
    relative imports are resolved against.
    """
    tree = ast.parse(path.read_text(), str(path))
    here = (module or _module_name(path)).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            # `from pkg import mod` imports the module pkg.mod when there is one.
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def _resolve(name: str) -> str | None:
    """The module of ours `name` (a module, or a name in one) comes from; None if outside."""
    parts = name.split(".")
    for i in range(len(parts), 1, -1):
        if ".".join(parts[:i]) in MODULES:
            return ".".join(parts[:i])
    return None


def _graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (a package counts as its __init__)."""
    graph: dict[str, set[str]] = {}
    for path in (p for top in GRAPHED for p in _sources(top)):
        name = _module_name(path)
        edges: set[str] = set()
        own_packages = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        for target in filter(None, map(_resolve, _imports(path))):
            edges.add(target)
            # Importing a.b.c runs a/b/__init__ first: the packages on the way count
            # too, but for the module's own packages, which Python loads before it anyway.
            parts = target.split(".")
            edges.update({".".join(parts[:i]) for i in range(2, len(parts))} - own_packages)
        graph[name] = {e for e in edges if e in MODULES and e != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _loop(graph: dict[str, set[str]], component: list[str]) -> str:
    """One concrete loop through a cycle's modules, for the failure message."""
    members = set(component)
    start = component[0]
    # Breadth-first from start back to start, inside the component.
    paths = {n: [start, n] for n in sorted(graph[start] & members)}
    frontier = list(paths)
    while frontier and start not in paths:
        nxt = []
        for node in frontier:
            for m in sorted(graph[node] & members):
                if m not in paths:
                    paths[m] = [*paths[node], m]
                    nxt.append(m)
        frontier = nxt
    return " -> ".join(paths.get(start, component))


def _package(module: str) -> str:
    return module.split(".")[1]


def test_no_import_cycle_between_modules() -> None:
    graph = _graph()
    loops = [_loop(graph, c) for c in _cycles(graph)]
    assert not loops, "import cycles (imports under TYPE_CHECKING and in functions count):\n" + (
        "\n".join(loops)
    )


def test_a_cycle_behind_type_checking_is_seen(tmp_path: Path) -> None:
    # The rule must be able to fail: an import only for type checking is an edge, and
    # two modules importing each other are a cycle.
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from gateway.process.runtime import Gateway\n"
        "def f():\n"
        "    from . import commands\n"
    )
    found = {_resolve(n) for n in _imports(src, "gateway.mqtt.m")}
    assert {"gateway.process.runtime", "gateway.mqtt.commands"} <= found
    graph = {"gateway.a": {"gateway.b"}, "gateway.b": {"gateway.a"}, "gateway.c": {"gateway.a"}}
    assert _cycles(graph) == [["gateway.a", "gateway.b"]]
    assert _loop(graph, ["gateway.a", "gateway.b"]) == "gateway.a -> gateway.b -> gateway.a"


def _rule_breaks() -> list[str]:
    breaks = []
    for path in _sources("gateway"):
        name = _module_name(path)
        if name == "gateway":
            continue
        own = _package(name)
        allowed = MAY_IMPORT.get(own)
        if allowed is None:
            breaks.append(f"{name}: gateway.{own} has no import rule in this test")
            continue
        for target in sorted(set(filter(None, map(_resolve, _imports(path))))):
            if target == "gateway" or not target.startswith("gateway."):
                continue  # the version; the other roots have rules of their own
            other = _package(target)
            if other == own or other in allowed:
                continue
            if own == "config" and target in CONFIG_MODULES:
                continue
            breaks.append(f"{path.relative_to(ROOT)}: gateway.{own} imports {target}")
    return breaks


def test_each_gateway_package_imports_only_what_its_docstring_allows() -> None:
    breaks = _rule_breaks()
    assert not breaks, "imports against the package rules:\n" + "\n".join(breaks)


def _central_breaks() -> list[str]:
    breaks = []
    for top, never in NEVER.items():
        for path in _sources(top):
            name = _module_name(path)
            for target in sorted(_imports(path)):
                if target.split(".")[0] in never:
                    breaks.append(f"{path.relative_to(ROOT)}: {top} code imports {target}")
                    continue
                module = _resolve(target)
                if module is None or not module.startswith("community_central."):
                    continue
                fleet = "community_central.fleet"
                if name.startswith(fleet + ".") or name == fleet:
                    if not module.startswith(fleet) and module not in FLEET_MAY_IMPORT:
                        breaks.append(f"{path.relative_to(ROOT)}: the fleet imports {module}")
                elif module.startswith(fleet) and name not in FLEET_IMPORTED_BY:
                    breaks.append(f"{path.relative_to(ROOT)}: imports {module}")
    return breaks


def test_central_and_protocol_import_only_what_their_docstrings_allow() -> None:
    breaks = _central_breaks()
    assert not breaks, "imports against the package rules:\n" + "\n".join(breaks)


def test_every_package_states_what_it_may_import() -> None:
    rules = [
        *(ROOT / "gateway").glob("*/__init__.py"),
        ROOT / "gateway" / "host.py",
        ROOT / "drivers" / "__init__.py",
        *(ROOT / "central" / "src").glob("community_central/**/__init__.py"),
        ROOT / "protocol" / "community_protocol" / "__init__.py",
    ]
    missing = [
        str(p.relative_to(ROOT))
        for p in rules
        if "May import" not in (ast.get_docstring(ast.parse(p.read_text())) or "")
    ]
    assert not missing, f"no 'May import' rule in the docstring of {missing}"


def test_driver_code_imports_only_the_driver_kit() -> None:
    breaks = []
    for path in _sources("drivers"):
        if "tests" in path.relative_to(ROOT).parts:
            continue  # a driver's tests run it inside the whole gateway
        for target in sorted(set(filter(None, map(_resolve, _imports(path))))):
            if not target.startswith("gateway.") or target.startswith(DRIVER_MODULES):
                continue  # the contract (community_protocol) is every driver's to use
            breaks.append(f"{path.relative_to(ROOT)}: imports {target}")
    assert not breaks, "driver code beyond the driver kit:\n" + "\n".join(breaks)


_SAYS_WHY = re.compile(r"over 450 lines", re.IGNORECASE)


def _long_files() -> list[str]:
    long = []
    for top in ("gateway", "drivers", "community_central", "community_protocol"):
        for path in _sources(top):
            lines = path.read_text().splitlines()
            if len(lines) > MAX_LINES and not _SAYS_WHY.search("\n".join(lines[:15])):
                long.append(f"{path.relative_to(ROOT)}: {len(lines)} lines")
    return long


def test_no_file_over_450_lines_unless_it_says_why() -> None:
    long = _long_files()
    assert not long, (
        f"over {MAX_LINES} lines (split by concern, or say in the first 15 lines why the "
        f"file is 'over {MAX_LINES} lines'):\n" + "\n".join(long)
    )


def test_no_asyncio_wait_for_in_code_that_runs_in_the_gateway_or_central() -> None:
    # Python 3.11's asyncio.wait_for returns the result and drops a cancellation that
    # arrives in the same moment: a loop around it then never ends, and the gateway hung
    # at stop (an OSDP bus under load, found by a stress run). asyncio.timeout() keeps the
    # cancellation; use it.
    found = []
    for folder in ("gateway", "drivers", "central/src", "protocol"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "tests" in path.relative_to(ROOT).parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr == "wait_for"
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "asyncio"
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "asyncio.wait_for (use `async with asyncio.timeout(...)`): " + ", ".join(
        found
    )
