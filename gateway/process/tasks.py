"""Running the gateway's tasks: a crashed driver or service restarted, all of them stopped for sure."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

__all__ = ["cancel_all", "supervise"]

log = logging.getLogger(__name__)


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    pause_s: float,
    crashed: Callable[[Exception], None] | None = None,
) -> None:
    """Run `run` until it returns; if it crashes, log it and start it again after `pause_s`.

    `crashed` hears of each crash (a remote configuration trial judges its drivers by it).
    """
    # A driver or service that crashes is restarted after a pause; the others keep
    # running.
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s crashed; restarting it in %g s", name, pause_s)
            if crashed is not None:
                crashed(exc)
            await asyncio.sleep(pause_s)


async def cancel_all(tasks: list[asyncio.Task[None]], patience_s: float = 10.0) -> None:
    """Cancel the tasks and wait for them; cancel again those that swallowed it.

    Python 3.11's asyncio.timeout can turn a cancellation that arrives as its own
    deadline expires into a TimeoutError, which a poller then treats as a failed read
    and goes on: without a second cancel, SIGTERM would wait for it forever.
    """
    pending = {t for t in tasks if not t.done()}
    deadline = time.monotonic() + patience_s
    while pending and time.monotonic() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    for task in pending:
        log.error(
            "task %s did not stop within %g s of being cancelled", task.get_name(), patience_s
        )
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.debug("task %s ended with %r", task.get_name(), task.exception())
