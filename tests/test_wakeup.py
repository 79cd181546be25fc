"""The uplink's wake-up pipe: any number of wake-ups never block the thread that sends them."""

from __future__ import annotations

import os
import select
import threading

import pytest

from gateway.mqtt.wakeup import WakePipe


def test_wakeups_past_a_full_pipe_return_at_once_and_one_drain_clears_them() -> None:
    pipe = WakePipe()
    try:
        # 200,000 one-byte wake-ups overflow the pipe's 64 KiB: a blocking write would
        # hang here (the outbox writer waking an uplink that waits for the writer).
        sender = threading.Thread(target=lambda: [pipe.wake() for _ in range(200_000)], daemon=True)
        sender.start()
        sender.join(timeout=10)
        assert not sender.is_alive()
        assert select.select([pipe], [], [], 0)[0] == [pipe]
        pipe.drain()
        assert select.select([pipe], [], [], 0)[0] == []
        pipe.wake()
        assert select.select([pipe], [], [], 0)[0] == [pipe]
    finally:
        pipe.close()
    # The freed numbers go to the next file opened (here a pipe): a late wake-up at
    # shutdown must not write into it.
    r, w = os.pipe()
    try:
        pipe.wake()
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            os.read(r, 1)
    finally:
        os.close(r)
        os.close(w)
