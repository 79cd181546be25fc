"""Start-up and memory benchmark: `gateway --help`, `gateway run` to READY, RSS under load.

Every figure is measured twice in the same run, on this tree and on a baseline tree
(`--baseline-rev`, default 5139b1c: the commit before lazy loading), extracted with
`git archive` into a temporary folder and run with the same interpreter and packages
(PYTHONPATH first, so its `gateway` and `drivers` are the ones imported).

Printed, one line per figure:
- (T1) `gateway --help`: wall time and peak RSS of the process (medians of `--runs`);
- (T2) `gateway run` to READY=1 (sd_notify, on a socket of ours) with the demo's 26
  simulated devices, alarms and wellness, web off: wall time and RSS at READY
  (medians of `--runs`; the two trees take turns, run by run);
- (M1) RSS after `--rss-seconds` of 32 Modbus TCP meters (eastron_sdm630, 1 s poll),
  each its own endpoint of a pymodbus server in a child process.  Target < 40 MB;
- (M2) RSS after `--rss-seconds` with 500 simulated devices at their normal rates
  (the devices of bench_core's peak RSS).  Target < 50 MB;
- (M0) the floor under both: an interpreter that imports only the libraries such a
  gateway process imports (click, pydantic with one model built, PyYAML, paho,
  pymodbus, sqlite3, asyncio) and no code of this repository.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import yaml

from scripts.bench_core import rss_devices
from scripts.bench_storage import SERVER, _listening, modbus_meters
from tests.harness import write_config
from tests.peers import Mosquitto, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
MAIN = "from gateway.cli import main; main(prog_name='gateway')"
# The child's own peak RSS, reported at exit: a forked child's ru_maxrss starts at its
# parent's (this benchmark's) size, so wait4() would report ours.
PEAK_AT_EXIT = """
import atexit, sys
def _peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("peak-kb " + line.split()[1] + "\\n")
atexit.register(_peak)
"""


@dataclass(frozen=True)
class Tree:
    """A source tree to run `gateway` from: this one, or the baseline's extracted copy."""

    label: str
    path: Path

    def command(self, *args: str, prelude: str = "") -> list[str]:
        """`gateway ARGS` from this tree (run it with `cwd=self.path`: `-c` puts the
        current folder first on sys.path)."""
        return [sys.executable, "-c", prelude + MAIN, *args]

    def env(self, **extra: str) -> dict[str, str]:
        # Its own protocol package too, when it has one: `community_protocol` moved
        # between releases.
        protocol = self.path / "protocol"
        own = [str(self.path), *([str(protocol)] if protocol.is_dir() else [])]
        path = os.pathsep.join(p for p in (*own, os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path, **extra}


@contextlib.contextmanager
def baseline_tree(rev: str, work: Path) -> Iterator[Tree | None]:
    """The tree at `rev` in a folder of `work`, or None when git cannot give it."""

    def archive(*paths: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, *paths], capture_output=True, timeout=120
        )

    out = archive("gateway", "drivers", "protocol")
    if out.returncode != 0:  # a tree from before the protocol package
        out = archive("gateway", "drivers")
    if out.returncode != 0:
        print(f"baseline {rev}: not available ({out.stderr.decode().strip()})")
        yield None
        return
    folder = work / f"baseline-{rev}"
    with tarfile.open(fileobj=BytesIO(out.stdout)) as tar:
        tar.extractall(folder, filter="data")
    yield Tree(rev, folder)


FLOOR = """
import asyncio, sqlite3, click, yaml, pydantic, paho.mqtt.client, pymodbus.client
class One(pydantic.BaseModel):
    x: int
One(x=1)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmRSS:")))
"""


def floor_mb() -> float:
    """RSS of an interpreter holding only the third-party libraries (see M0)."""
    out = subprocess.run(
        [sys.executable, "-c", FLOOR], capture_output=True, text=True, timeout=120, cwd="/"
    )
    return int(out.stdout.split()[-1]) / 1024


def _status_kb(pid: int, *keys: str) -> tuple[int, ...]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return tuple(int(fields[k].split()[0]) for k in keys)


def rss_kb(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM (peak) of a running process, in kB."""
    rss, peak = _status_kb(pid, "VmRSS", "VmHWM")
    return rss, peak


def loaded_split_mb(pid: int) -> tuple[float, float]:
    """RSS in anonymous memory (Python's objects, malloc) and in mapped files (the
    interpreter, shared libraries, extension modules), MB: what a change can move."""
    anon, files = _status_kb(pid, "RssAnon", "RssFile")
    return anon / 1024, files / 1024


def help_once(tree: Tree) -> tuple[float, float]:
    """Wall seconds of one `gateway --help`, and its peak RSS in MB."""
    start = time.monotonic()
    out = subprocess.run(
        tree.command("--help", prelude=PEAK_AT_EXIT),
        env=tree.env(),
        cwd=tree.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    wall = time.monotonic() - start
    if out.returncode != 0:
        raise RuntimeError(f"{tree.label}: gateway --help exited {out.returncode}")
    return wall, int(out.stderr.split("peak-kb ")[-1].split()[0]) / 1024


def interleaved(
    trees: Sequence[Tree], runs: int, once: Callable[[Tree, int], tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    """Median of each figure per tree, the trees taking turns so that a change of the
    machine's load during the run weighs on both alike."""
    got: dict[str, list[tuple[float, float]]] = {t.label: [] for t in trees}
    for i in range(runs):
        for t in trees:
            got[t.label].append(once(t, i))
    return {
        label: (statistics.median(a for a, _ in rows), statistics.median(b for _, b in rows))
        for label, rows in got.items()
    }


class ReadyGateway:
    """`gateway run` with NOTIFY_SOCKET on a socket of ours, so READY=1 can be timed."""

    def __init__(self, tree: Tree, config: Path, work: Path) -> None:
        self.address = str(work / f"notify-{time.monotonic_ns()}")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self.log = (work / "gateway.log").open("ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            tree.command("run", "-c", str(config)),
            env=tree.env(NOTIFY_SOCKET=self.address),
            cwd=tree.path,
            stdout=self.log,
            stderr=self.log,
        )

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from the spawn to READY=1; raises when it does not come."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(min(left, 1.0))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                if self.proc.poll() is not None:
                    break
                continue
            if b"READY=1" in data.split(b"\n"):
                return time.monotonic() - self.started
        raise RuntimeError(f"no READY=1 within {timeout:g} s; see {self.log.name}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()
        self.log.close()


def demo_config(work: Path, broker: Mosquitto) -> Path:
    """config/demo.yaml on our broker, its outbox in `work`, the web console off."""
    doc: dict[str, Any] = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    doc["broker"] = {"url": broker.url, "topic_prefix": f"bench{free_port()}/v1"}
    doc["outbox"]["path"] = str(work / "outbox.db")
    doc.pop("web", None)  # a fixed port, and a browser feature: not the gateway's start
    work.mkdir(parents=True, exist_ok=True)
    path = work / "demo.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def ready_once(tree: Tree, work: Path, broker: Mosquitto) -> tuple[float, float]:
    """Seconds from the spawn to READY=1 with the demo config, and the RSS then (MB)."""
    folder = work / f"ready-{time.monotonic_ns()}"
    gw = ReadyGateway(tree, demo_config(folder, broker), folder)
    try:
        return gw.wait_ready(), rss_kb(gw.proc.pid)[0] / 1024
    finally:
        gw.stop()


def loaded_rss(
    tree: Tree, work: Path, broker: Mosquitto, devices: list[dict[str, Any]], seconds: float
) -> tuple[float, float, float, float]:
    """RSS, peak RSS, and RSS anonymous and file-backed (MB) of `gateway run` after
    `seconds` at READY with `devices`."""
    # Shipped defaults, but for the broker, the outbox's folder and a fast health report.
    config = write_config(work / "gw.yaml", broker.url, devices, outbox={"commit_interval_ms": 50})
    gw = ReadyGateway(tree, config, work)
    try:
        gw.wait_ready()
        wait_for(lambda: gw.proc.poll() is not None, timeout=seconds)
        if gw.proc.poll() is not None:
            raise RuntimeError(f"{tree.label}: the gateway exited; see {work}/gateway.log")
        rss, peak = rss_kb(gw.proc.pid)
        anon, files = loaded_split_mb(gw.proc.pid)
    finally:
        gw.stop()
    return rss / 1024, peak / 1024, anon, files


def _versus(figure: float, base: float | None, unit: str, fmt: str = ".2f") -> str:
    if base is None:
        return f"{figure:{fmt}} {unit}"
    return f"{figure:{fmt}} {unit} (baseline {base:{fmt}} {unit}, {figure / base:.2f}x)"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-rev", default="5139b1c", help="git revision to compare with")
    parser.add_argument("--runs", type=int, default=5, help="runs of --help and to READY")
    parser.add_argument("--rss-seconds", type=float, default=20.0)
    parser.add_argument("--skip-rss", action="store_true", help="only the start-up figures")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp,
        baseline_tree(args.baseline_rev, Path(tmp)) as base,
    ):
        work = Path(tmp)
        trees = [t for t in (base, Tree("this tree", ROOT)) if t is not None]
        print(f"start-up and memory: {', '.join(t.label for t in trees)}; load {_load()}")
        helps = interleaved(trees, args.runs, lambda t, _: help_once(t))
        broker = Mosquitto(work / "broker", persistence=False)
        broker.start()
        server = None
        try:
            ready = interleaved(trees, args.runs, lambda t, _: ready_once(t, work, broker))
            m1: dict[str, tuple[float, float, float, float]] = {}
            m2: dict[str, tuple[float, float, float, float]] = {}
            if not args.skip_rss:
                port = free_port()
                server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
                wait_for(lambda: _listening("127.0.0.33", port), timeout=20)
                for t in trees:
                    slug = t.label.replace(" ", "-")
                    m1[t.label] = loaded_rss(
                        t, work / f"m1-{slug}", broker, modbus_meters(port, 1.0), args.rss_seconds
                    )
                    m2[t.label] = loaded_rss(
                        t, work / f"m2-{slug}", broker, rss_devices(), args.rss_seconds
                    )
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=10)
            broker.kill()
        now = "this tree"
        b = base.label if base is not None else None
        (h, hm), (r, rm) = helps[now], ready[now]
        print(
            f"(T1) gateway --help: {_versus(h, helps[b][0] if b else None, 's')},"
            f" peak RSS {_versus(hm, helps[b][1] if b else None, 'MB', '.1f')}"
        )
        print(
            f"(T2) gateway run to READY, demo's 26 devices: {_versus(r, ready[b][0] if b else None, 's')},"
            f" RSS at READY {_versus(rm, ready[b][1] if b else None, 'MB', '.1f')}"
        )
        figures.update(help_s=round(h, 3), help_mb=round(hm, 1), ready_s=round(r, 3))
        if not args.skip_rss:
            floor = floor_mb()
            figures["floor_mb"] = round(floor, 1)
            print(f"(M0) RSS floor, the libraries alone (no gateway code): {floor:.1f} MB")
        for key, name, table, target in (
            ("m1", "32 Modbus TCP meters, 1 s poll", m1, 40),
            ("m2", "500 simulated devices", m2, 50),
        ):
            if now in table:
                rss, peak, anon, files = table[now]
                base_rss = table[b][0] if b in table else None
                print(
                    f"({key.upper()}) RSS, {name}, after {args.rss_seconds:g} s:"
                    f" {_versus(rss, base_rss, 'MB', '.1f')}, peak {peak:.1f} MB"
                    f" (anonymous {anon:.1f} MB, files {files:.1f} MB)  [target < {target} MB]"
                )
                figures[f"{key}_rss_mb"] = round(rss, 1)
    return figures


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
