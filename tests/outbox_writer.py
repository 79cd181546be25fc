"""A child process for the outbox crash tests: writes messages, reports what committed.

    python -m tests.outbox_writer DB stream
        Puts messages until killed, 20 in flight; after each future resolves, writes
        `{"seq": N}` on stdout and flushes, so the parent knows N was committed.

    python -m tests.outbox_writer DB stream RAM_DIR
        The same with the memory tier (gateway.storage.outbox_ram) in RAM_DIR, and a
        spill delay longer than the test: telemetry stays in the RAM file.

    python -m tests.outbox_writer DB diskfull
        Commits one message, then lowers RLIMIT_FSIZE so the next batch (two small
        messages and a large one) cannot be written, reports each future's outcome,
        raises the limit again and commits one more message: every step one JSON line.

stdout is the protocol with the parent; logs go to stderr.  `start` and
`kill_9_streaming` are the parent's side.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

from gateway.config import SyncMode
from gateway.sdk.model import Priority
from gateway.storage.outbox import Consumer, Outbox, OutboxItem

CONSUMER = "mqtt"
ROOT = Path(__file__).resolve().parent.parent


def start(*args: str | Path) -> subprocess.Popen[str]:
    """This module as a child process with `args` (DB MODE [RAM_DIR]); its stdout a pipe."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.outbox_writer", *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def kill_9_streaming(db: Path, at_least: int, ram_dir: Path | None = None) -> list[int]:
    """Stream into `db` (with the memory tier in `ram_dir`) in a child killed with SIGKILL
    once it reported `at_least` commits; the seqs it reported, also those it flushed
    while dying."""
    db.parent.mkdir(parents=True, exist_ok=True)
    child = start(db, "stream", *([ram_dir] if ram_dir is not None else []))
    assert child.stdout is not None
    reported: list[int] = []
    try:
        for line in child.stdout:
            reported.append(json.loads(line)["seq"])
            if len(reported) >= at_least:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        rest = child.communicate(timeout=10)[0]
    reported += [json.loads(line)["seq"] for line in rest.splitlines() if line.endswith("}")]
    assert len(reported) >= at_least
    return reported


def _report(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _item(n: int, size: int = 100) -> OutboxItem:
    prio = Priority.EVENT if n % 7 == 0 else Priority.TELEMETRY
    return OutboxItem(
        priority=prio,
        channel="events" if prio is Priority.EVENT else "telemetry",
        device_kind="meter",
        topic=f"test/{n}",
        build_payload=lambda seq: json.dumps({"seq": seq, "n": n}).encode().ljust(size),
    )


def _open(db: Path, interval_ms: int, ram_dir: Path | None = None) -> Outbox:
    outbox = Outbox(
        db,
        max_messages=1_000_000,
        commit_interval_ms=interval_ms,
        sync=SyncMode.FULL,
        consumers=[Consumer(CONSUMER)],
        quiet_ms=interval_ms,  # a fixed linger: the puts of each step form one batch
        ram_dir=ram_dir,
        spill_after_s=600,
    )
    outbox.open()
    return outbox


def stream(db: Path, ram_dir: Path | None = None) -> None:
    outbox = _open(db, interval_ms=5, ram_dir=ram_dir)
    n = 0
    while True:
        futures = [outbox.put(_item(n + i)) for i in range(20)]
        n += 20
        for fut in futures:
            _report(seq=fut.result())


def _outcome(fut: object) -> dict[str, object]:
    try:
        return {"seq": fut.result(timeout=30)}  # type: ignore[attr-defined]
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def diskfull(db: Path) -> None:
    # Writing past RLIMIT_FSIZE fails with EFBIG, as on a full disk, once SIGXFSZ (which
    # would kill the process) is ignored.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    outbox = _open(db, interval_ms=300)  # long linger: the three puts form one batch
    _report(step="before", **_outcome(outbox.put(_item(1))))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    used = max(p.stat().st_size for p in db.parent.iterdir() if p.name.startswith(db.name))
    resource.setrlimit(resource.RLIMIT_FSIZE, (used + 32 * 1024, hard))
    futures = [outbox.put(_item(2)), outbox.put(_item(3, size=500_000)), outbox.put(_item(4))]
    for fut in futures:
        _report(step="full", **_outcome(fut))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    _report(step="after", **_outcome(outbox.put(_item(5))))
    outbox.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    db, mode = Path(sys.argv[1]), sys.argv[2]
    if mode == "stream" and len(sys.argv) > 3:
        stream(db, Path(sys.argv[3]))
        return
    {"stream": stream, "diskfull": diskfull}[mode](db)


if __name__ == "__main__":
    main()
