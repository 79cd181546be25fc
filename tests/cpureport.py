"""Opt-in report of the suite's CPU consumers, per test and per file (PYTEST_CPU_REPORT=1).

The suite is CPU-bound on a 2-core machine, so wall time (which depends on whatever
else runs) says little about what to make cheaper. With `PYTEST_CPU_REPORT=1` (or
`--cpu-report`) every test phase is charged with the CPU its worker spent in it:

- the worker itself, every thread (getrusage RUSAGE_SELF): paho loops and event loops
  a test leaves running are charged to the tests that run while they spin;
- processes the worker waited for (RUSAGE_CHILDREN): a `gateway`, broker or socat the
  test started and stopped, with every descendant they waited for;
- descendants still alive at the end of the phase, read from /proc/PID/stat (their own
  and their waited children's time), so a server a fixture keeps for a whole module or
  session is charged while it works, not all at once when it is stopped. What was
  already charged for a process is taken off again when it ends and shows up in the
  waited children's time, so nothing is counted twice.

Not seen: a daemon that leaves the worker's process tree (pg_ctl's postmaster is
re-parented to init). The summary prints, per worker, the CPU of its start and
collection and the sum over its tests next to its whole CPU, so such gaps show.

The terminal summary lists the top consumers by CPU (user + system seconds) and by wall
time, per test and per file; `PYTEST_CPU_REPORT=path.json` also writes every figure
there, its "files" part in the form of tests/durations.json, which orders the suite
(tests/plugin.py): refresh that with
`jq '{files, long: (.wall | with_entries(select(.value >= 8)))}' path.json`. Works with and without pytest-xdist (the figures ride on the test reports).
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections import defaultdict
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "pytest_addoption",
    "pytest_configure",
]

_KEY = "cpu_report"
_TICK = os.sysconf("SC_CLK_TCK")
_TOP = 25


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-report",
        action="store_true",
        default=False,
        help="report the CPU each test and file used (also PYTEST_CPU_REPORT=1 or =path.json)",
    )


def pytest_configure(config: pytest.Config) -> None:
    env = os.environ.get("PYTEST_CPU_REPORT", "")
    if config.getoption("--cpu-report") or env not in ("", "0"):
        json_path = Path(env) if env.endswith(".json") else None
        config.pluginmanager.register(CpuReport(config, json_path), "cpu-report")


def _descendants_cpu(root: int) -> dict[int, tuple[float, float]]:
    """CPU seconds (own, of its waited children) of every live descendant of `root`."""
    parent: dict[int, int] = {}
    cpu: dict[int, tuple[float, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # ended while we looked
            continue
        # The command name (field 2) may hold spaces and parentheses: split after it.
        fields = stat[stat.rindex(b")") + 2 :].split()
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        # utime, stime, cutime, cstime are fields 14-17 (1-based) of the whole line.
        ticks = [int(x) for x in fields[11:15]]
        cpu[pid] = ((ticks[0] + ticks[1]) / _TICK, (ticks[2] + ticks[3]) / _TICK)
    found: dict[int, tuple[float, float]] = {}
    for pid in cpu:
        p, seen = parent.get(pid, 0), 0
        while p > 1 and seen < 64:
            if p == root:
                found[pid] = cpu[pid]
                break
            p, seen = parent.get(p, 0), seen + 1
    return found


def _own_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class _Meter:
    """CPU of this process tree since the last `take()`."""

    pid: int = field(default_factory=os.getpid)
    own: float = field(default_factory=_own_cpu)
    live: dict[int, tuple[float, float]] = field(default_factory=dict)

    def total(self) -> float:
        return _own_cpu() + sum(a + b for a, b in _descendants_cpu(self.pid).values())

    def take(self) -> float:
        own, live = _own_cpu(), _descendants_cpu(self.pid)
        spent = own - self.own
        waited = own - self.own  # where the time of a process that ended shows up
        for pid, (mine, kids) in live.items():
            was_mine, was_kids = self.live.get(pid, (0.0, 0.0))
            spent += (mine - was_mine) + (kids - was_kids)
            waited += kids - was_kids
        # A process charged before and gone now: its whole time is in `waited` if we or
        # a live descendant waited for it; then take off what was charged already. One
        # nobody waited for (re-parented to init, as Chromium's helpers are) is not.
        gone = sum(a + b for pid, (a, b) in self.live.items() if pid not in live)
        spent -= min(gone, max(waited, 0.0))
        self.own, self.live = own, live
        return spent


class CpuReport:
    """Charges each test phase its CPU on the worker; sums and prints on the controller."""

    def __init__(self, config: pytest.Config, json_path: Path | None) -> None:
        self.config = config
        self.json_path = json_path
        self.meter = _Meter()
        self.started = time.monotonic()
        self.wall_mark = self.started
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self.workers: dict[str, dict[str, float]] = {}
        self.collect_cpu = 0.0

    # -- on the process that runs the tests (an xdist worker, or the only one) --------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # Interpreter start, plugin and test module imports, collection.
        self.collect_cpu = self.meter.total()
        self.meter.take()

    def pytest_runtest_logstart(self) -> None:
        self.wall_mark = time.monotonic()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        cpu = self.meter.take()
        now = time.monotonic()
        wall, self.wall_mark = now - self.wall_mark, now
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        report.user_properties.append((_KEY, (round(cpu, 4), round(wall, 4))))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        out = getattr(session.config, "workeroutput", None)
        if out is not None:  # an xdist worker: hand the totals to the controller
            out[_KEY] = {
                "collect": self.collect_cpu,
                "total": self.meter.total(),
                "wall": time.monotonic() - self.started,
            }

    # -- on the controller (or the only process) ---------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key == _KEY:
                cpu, wall = value
                self.cpu[report.nodeid] += cpu
                self.wall[report.nodeid] += wall

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        figures = getattr(node, "workeroutput", {}).get(_KEY)
        if figures:
            self.workers[getattr(getattr(node, "gateway", None), "id", "?")] = figures

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        write = terminalreporter.write_line
        if not self.workers:  # no xdist: this process ran everything
            self.workers["main"] = {
                "collect": self.collect_cpu,
                "total": self.meter.total(),
                "wall": time.monotonic() - self.started,
            }
        files_cpu: dict[str, float] = defaultdict(float)
        files_wall: dict[str, float] = defaultdict(float)
        for nodeid, cpu in self.cpu.items():
            files_cpu[nodeid.split("::")[0]] += cpu
            files_wall[nodeid.split("::")[0]] += self.wall[nodeid]
        tests = sum(self.cpu.values())
        terminalreporter.section("CPU report (user + system seconds)")
        for name, w in sorted(self.workers.items()):
            write(
                f"worker {name}: {w['total']:.1f} s CPU in {w['wall']:.1f} s wall, "
                f"start and collection {w['collect']:.1f} s"
            )
        whole = sum(w["total"] for w in self.workers.values())
        write(f"all tests: {tests:.1f} s CPU over {len(self.cpu)} tests; workers: {whole:.1f} s")
        for title, table, other in (
            ("files", files_cpu, files_wall),
            ("tests", self.cpu, self.wall),
        ):
            write(f"-- top {_TOP} {title} by CPU (cpu s, wall s)")
            for name, cpu in sorted(table.items(), key=lambda kv: -kv[1])[:_TOP]:
                write(f"{cpu:8.2f} {other[name]:8.2f}  {name}")
        write(f"-- top {_TOP} tests by wall time (wall s, cpu s)")
        for name, wall in sorted(self.wall.items(), key=lambda kv: -kv[1])[:_TOP]:
            write(f"{wall:8.2f} {self.cpu[name]:8.2f}  {name}")
        if self.json_path is not None:
            files = {
                name: {"cpu": round(cpu, 2), "wall": round(files_wall[name], 2)}
                for name, cpu in sorted(files_cpu.items())
            }
            doc = {"workers": self.workers, "files": files, "tests": self.cpu, "wall": self.wall}
            self.json_path.write_text(json.dumps(doc, indent=1))
            write(f"figures written to {self.json_path}")
