"""Run the service in a thread of its own until SIGTERM or SIGINT; stop in bounded time.

Python runs a signal handler in the main thread only, between two bytecodes, so a
service working in the main thread hears SIGTERM only when its current C call
returns: SQLite waits up to its busy timeout (30 s) for a peer's write lock, a
PostgreSQL statement waits on a peer's row lock without end.  So the main thread only
waits for the signal, then gives the service thread `grace_s` seconds for its own
orderly stop (disconnect keeping the MQTT session, close the database).  A thread
still busy after that is abandoned: its stack goes to the log, and the process exits
at once with `os._exit`, because a normal interpreter exit could itself hang,
finalizing a connection the stuck thread is using.  Abandoning loses nothing the
service promised: an alarm is acknowledged to the broker only after its commit, so
one being applied is delivered again at the next start.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable

__all__ = ["EXIT_ABANDONED", "run_until_signalled"]

log = logging.getLogger(__name__)

EXIT_ABANDONED = 1  # stopped, but the service thread had to be abandoned
POLL_S = 0.5  # how often the main thread checks that the service thread still runs


def run_until_signalled(run: Callable[[threading.Event], None], *, grace_s: float) -> None:
    """Call `run(stop)` in a thread; SIGTERM or SIGINT sets `stop`.

    Returns when `run` returns; re-raises what `run` raised.  If `run` has not returned
    `grace_s` seconds after the signal, logs where it is stuck and exits the process
    with EXIT_ABANDONED.
    """
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    failed: list[BaseException] = []

    def body() -> None:
        try:
            run(stop)
        except BaseException as exc:  # re-raised in the main thread
            failed.append(exc)

    # A daemon: an abandoned thread must not hold the process open.
    worker = threading.Thread(target=body, name="service", daemon=True)
    worker.start()
    while worker.is_alive() and not stop.is_set():
        worker.join(POLL_S)
    if worker.is_alive():
        asked = time.monotonic()
        worker.join(grace_s)
        if worker.is_alive():
            _abandon(worker, time.monotonic() - asked)
    if failed:
        raise failed[0]


def _abandon(worker: threading.Thread, waited_s: float) -> None:
    frame = sys._current_frames().get(worker.ident or 0)
    stack = traceback.extract_stack(frame) if frame is not None else traceback.StackSummary()
    where = f"{stack[-1].filename}:{stack[-1].lineno} in {stack[-1].name}" if stack else "?"
    log.error(
        "stopping: the service thread is still busy %.1f s after the stop request (%s); "
        "abandoned: what it was applying is not acknowledged to the broker and comes "
        "again at the next start\n%s",
        waited_s,
        where,
        "".join(stack.format()).rstrip(),
    )
    logging.shutdown()  # flush the log: os._exit skips every cleanup
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_ABANDONED)
