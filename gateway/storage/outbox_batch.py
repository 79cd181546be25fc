"""The outbox's commit policy: which queued requests the writer commits together.

The writer waits for the first request, then takes what follows it: telemetry lingers
up to the commit interval to gather more (fewer writes to the SD card); an event, a
`meta_increment` or a rebuild request commits at once (alarm latency).
"""

from __future__ import annotations

import queue
import time

from gateway.sdk.model import Priority
from gateway.storage.outbox_types import STOP, Increment, Put, Recover, Request

__all__ = ["MAX_BATCH", "gather", "urgent"]

MAX_BATCH = 2000  # requests per transaction: bounds the time a commit holds the writer


def urgent(request: Request) -> bool:
    """True for a request that must not wait for the commit interval."""
    if isinstance(request, Put):
        return request.item.priority == Priority.EVENT
    return isinstance(request, Increment | Recover)


def gather(
    requests: queue.SimpleQueue[Request | None], first: Request, interval_s: float
) -> tuple[list[Request], bool]:
    """The batch that starts with `first`, and whether `close()`'s STOP was seen."""
    batch = [first]
    hurry = urgent(first)
    deadline = time.monotonic() + interval_s
    while len(batch) < MAX_BATCH:
        remaining = 0.0 if hurry else deadline - time.monotonic()
        try:
            request = requests.get(timeout=remaining) if remaining > 0 else requests.get_nowait()
        except queue.Empty:
            break
        if request is STOP:
            return batch, True
        batch.append(request)
        hurry = hurry or urgent(request)
    return batch, False
