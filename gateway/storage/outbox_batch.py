"""The outbox's commit policy: which queued requests the writer commits together.

Each commit is an fsync and a few pages on the SD card, so requests share commits; but
a reading waiting for company that is not coming only gets older.  The policy adapts
to the load (issue 16):

- an event, a `meta_increment` or a rebuild request commits at once (alarm latency),
  with whatever is queued behind it;
- telemetry gathers while more keeps arriving, each within the quiet gap of the
  previous one, for at most the commit interval after the first: a lone reading
  commits within the gap, a burst (many meters polled at once) shares one commit;
- acknowledgements alone wait up to `ACK_DELAY_S` for a message to ride along with:
  an ack lost in a crash costs one duplicate, which at-least-once delivery allows,
  while an ack committed on its own costs an fsync.
"""

from __future__ import annotations

import queue
import time

from gateway.sdk.model import Priority
from gateway.storage.outbox_types import STOP, Ack, Increment, Put, Recover, Request

__all__ = ["ACK_DELAY_S", "MAX_BATCH", "QUIET_MS", "gather", "urgent"]

MAX_BATCH = 2000  # requests per transaction: bounds the time a commit holds the writer
# Telemetry keeps gathering while requests arrive closer together than this: readings
# of a burst come well within it, a lone reading waits no longer.
QUIET_MS = 2.0
ACK_DELAY_S = 1.0


def urgent(request: Request) -> bool:
    """True for a request that must not wait for the commit interval."""
    if isinstance(request, Put):
        return request.item.priority == Priority.EVENT
    return isinstance(request, Increment | Recover)


def gather(
    requests: queue.SimpleQueue[Request | None],
    first: Request,
    interval_s: float,
    quiet_s: float,
) -> tuple[list[Request], bool]:
    """The batch that starts with `first`, and whether `close()`'s STOP was seen."""
    batch = [first]
    hurry = urgent(first)
    acks_only = isinstance(first, Ack)
    last = time.monotonic()
    deadline = last + (ACK_DELAY_S if acks_only else interval_s)
    while len(batch) < MAX_BATCH:
        if hurry:
            remaining = 0.0
        elif acks_only:
            remaining = deadline - time.monotonic()
        else:
            remaining = min(deadline, last + quiet_s) - time.monotonic()
        try:
            request = requests.get(timeout=remaining) if remaining > 0 else requests.get_nowait()
        except queue.Empty:
            break
        if request is STOP:
            return batch, True
        batch.append(request)
        hurry = hurry or urgent(request)
        if isinstance(request, Ack):
            continue  # an ack says nothing about more readings coming
        last = time.monotonic()
        if acks_only:  # a message: from now on the telemetry rule applies
            acks_only = False
            deadline = last + interval_s
    return batch, False
