"""Real peers for tests: a Mosquitto broker and socat pty pairs, each on its own port/path."""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Mosquitto", "PtyPair", "clear_dead_faketime", "free_port", "pty_pair", "wait_for"]


# Ports for the peers and gateways tests start come from below the kernel's ephemeral
# range (32768-60999 on Linux), a slice per xdist worker, handed out in turn.  A port
# the kernel picked (bind to 0) could be taken, between a test's stop and restart of a
# server on it, by any outgoing connection of another test: "Address already in use"
# on the restart (seen: test_requests_and_statuses_survive_a_restart).
_PORTS_LOW, _PORTS_HIGH = 20_000, 32_000
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
_SLICES = 8
_slice = (_PORTS_HIGH - _PORTS_LOW) // _SLICES
_first = _PORTS_LOW + (int(_WORKER) % _SLICES if _WORKER.isdigit() else 0) * _slice
_next_port = itertools.cycle(range(_first, _first + _slice))


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range (see above)."""
    for _ in range(_slice):
        port = next(_next_port)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_first}-{_first + _slice - 1}")


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll `predicate()` until true or timeout; returns the last result's truth."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


@dataclass
class Mosquitto:
    """A Mosquitto broker of the test's own, on a free loopback port.

    `stop()` sends SIGTERM (the broker saves its persistence file, as a real service stop
    does); `kill()` sends SIGKILL. `start()` again reuses the port and persistence.
    """

    workdir: Path
    port: int = field(default_factory=free_port)
    persistence: bool = True
    extra: str = ""
    preamble: str = ""  # global options that must come before the first listener
    # e.g. ("faketime", "-f", "+5d", "mosquitto"): a broker whose clock is wrong
    command: tuple[str, ...] = ("mosquitto",)
    anonymous: bool = True  # False: only users of password_file (or client certificates)
    password_file: Path | None = None
    acl_file: Path | None = None
    # 0 (unbounded) keeps delivery-count tests exact; but mosquitto 2.0.11 then drops the
    # connection of a client whose QoS 1 publish the ACL denies: ACL tests give 1000.
    max_queued: int = 0
    proc: subprocess.Popen[bytes] | None = None
    # Started as root, mosquitto drops to its own user, which cannot enter pytest's
    # 0700 tmp tree: its persistence lives in a folder of its own under /tmp instead,
    # kept across restarts of this broker so sessions survive them.
    store: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mosquitto-test-")))

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_conf(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(KeyError, PermissionError, LookupError):
            shutil.chown(self.store, "mosquitto")
        conf = self.workdir / "mosquitto.conf"
        lines = [
            self.preamble,
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            *([f"password_file {self.password_file}"] if self.password_file else []),
            *([f"acl_file {self.acl_file}"] if self.acl_file else []),
            f"max_queued_messages {self.max_queued}",
            "max_inflight_messages 0",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.store}/",
            "log_dest none",
            self.extra,
        ]
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        conf = self._write_conf()
        if self.command[0] == "faketime":
            clear_dead_faketime()
        # A session of its own: a wrapper (faketime) runs mosquitto as its child, and
        # ending only the wrapper left that broker running after the tests.
        self.proc = subprocess.Popen(
            [*self.command, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        if not wait_for(self._accepts, timeout=10):
            err = (
                self.proc.stderr.read().decode()
                if self.proc.poll() is not None and self.proc.stderr
                else ""
            )
            raise RuntimeError(f"mosquitto did not start on port {self.port}: {err}")

    def _accepts(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def _end(self, sig: int) -> None:
        if self.proc is not None:
            # The whole group: the broker too when the command is a wrapper around it.
            group = self.proc.pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
            self.proc.wait(timeout=10)
            wait_for(lambda: not _group_alive(group), timeout=10)
        self.proc = None

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def remove(self) -> None:
        """Kill the broker and delete its persistence folder."""
        self.kill()
        shutil.rmtree(self.store, ignore_errors=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class PtyPair:
    """Two linked pseudo-terminals from socat: what one end writes, the other reads."""

    a: Path
    b: Path
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def pty_pair(workdir: Path) -> Iterator[PtyPair]:
    a, b = workdir / "ttyA", workdir / "ttyB"
    proc = subprocess.Popen(
        ["socat", "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not wait_for(lambda: a.exists() and b.exists(), timeout=5):
            raise RuntimeError("socat did not create the pty pair")
        # socat makes its ptys raw, but may do so just after the links appear: a test
        # that writes at once would see '\n' go out as '\r\n' (seen under load: 40 extra
        # bytes for 40 newlines). Make both ends raw here before anyone uses them.
        for end in (a, b):
            fd = os.open(end, os.O_RDWR | os.O_NOCTTY)
            try:
                tty.setraw(fd)
            finally:
                os.close(fd)
        yield PtyPair(a, b, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=5)
        for p in (a, b):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


def clear_dead_faketime() -> None:
    """Remove what killed `faketime` wrappers left in /dev/shm.

    The wrapper names its semaphore and shared memory after its own pid and removes
    them when it ends; one killed with SIGKILL (`Mosquitto.kill()`) leaves them, and a
    later wrapper that gets the same pid fails with "sem_open: File exists".
    """
    for leftover in glob.glob("/dev/shm/sem.faketime_sem_*") + glob.glob("/dev/shm/faketime_shm_*"):
        pid = leftover.rsplit("_", 1)[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                os.unlink(leftover)
