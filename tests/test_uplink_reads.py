"""How often the uplink asks the outbox for rows: once per commit, not once per PUBACK.

Each query of an empty outbox is a SQLite transaction on two files and a trip of the
uplink thread for nothing; at a 1 s poll it was most of what a second burst of readings
cost (docs/benchmarks.md, issue 16).  New rows always come with the writer's wake-up,
so a PUBACK (room in the window) is no reason to look again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.mqtt.connect import connect
from gateway.process.runtime import Gateway
from gateway.storage.outbox_reader import OutboxReader
from tests.harness import Subscriber, simulated_meter, topic_base, write_config
from tests.peers import Mosquitto, wait_for


def test_the_uplink_reads_the_outbox_once_per_commit_not_once_per_puback(
    tmp_path: Path, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(
        tmp_path / "gw.yaml",
        broker.url,
        [simulated_meter("meter-1", 10), simulated_meter("meter-2", 10)],
    )
    loaded = load_config(config)
    sub = Subscriber(broker.port, f"{topic_base(config)}/devices/+/telemetry").start()
    reads = {"rows": 0, "empty": 0}
    lock = threading.Lock()
    original = OutboxReader.next_batch

    def counted(self: OutboxReader, consumer: str, after: Any, limit: int) -> Any:
        rows = original(self, consumer, after, limit)
        if consumer == "mqtt":
            with lock:
                reads["rows" if rows else "empty"] += 1
        return rows

    monkeypatch.setattr(OutboxReader, "next_batch", counted)

    async def scenario() -> None:
        gw = Gateway(loaded)
        stop = asyncio.Event()
        run = asyncio.create_task(gw.run(stop))
        await asyncio.to_thread(lambda: wait_for(lambda: len(sub.messages) >= 60, timeout=30))
        stop.set()
        await run

    try:
        asyncio.run(scenario())
    finally:
        sub.stop()
    # Every wake-up reads what was committed and then finds the outbox empty once;
    # a read per PUBACK on top made it two or three empty reads per read with rows.
    assert reads["rows"] >= 10, reads
    assert reads["empty"] <= reads["rows"] * 1.5 + 3, reads


def test_a_connection_is_one_socket_so_that_a_publish_is_one_write(
    tmp_path: Path, broker: Mosquitto
) -> None:
    # paho's client.loop() makes a socket pair to wake a loop thread, and then writes a
    # byte to it at every publish: a system call per message for nothing, since the
    # uplink runs its own loop (issue 16).  Connecting must leave the broker's socket only.
    cfg = load_config(
        write_config(tmp_path / "gw.yaml", broker.url, [simulated_meter("meter-1", 1)])
    ).config.broker
    before = _sockets()
    client = connect(
        cfg,
        "one-socket",
        will=("test/will", b""),
        on_message=lambda *_: None,
        stop=threading.Event(),
        report=lambda message: pytest.fail(message),
        track=lambda _client: None,
    )
    assert client is not None and client.is_connected()
    try:
        assert len(_sockets() - before) == 1, "the broker's socket, and nothing else"
    finally:
        client.disconnect()
        client.loop_write()


def _sockets() -> set[str]:
    """The sockets this process holds open ("socket:[inode]")."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
            if (target := os.readlink(f"/proc/self/fd/{fd}")).startswith("socket:"):
                found.add(target)
    return found
