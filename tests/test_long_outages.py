"""A day of a failing peer, simulated with a short maximum delay: both retries survive it.

At the default delays a day of failures is about 1,440 attempts of the InfluxDB sink
(60 s) and 10,800 of the uplink (8 s); before, the 1,025th attempt raised OverflowError
in the backoff and ended the thread.  Here the maximum delay is a millisecond or so, so
the same number of attempts takes seconds; then the peer returns, and everything stored
meanwhile must arrive within about one maximum delay, nothing lost.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.process.runtime import Gateway
from gateway.sinks.influx import InfluxSink
from gateway.sinks.settings import RetryConfig
from tests.harness import Subscriber, topic_base, write_config
from tests.peers import Mosquitto, free_port, wait_for
from tests.test_delivery import assert_nothing_lost, data_messages, meters, outbox_seqs
from tests.test_influx_faults import fill
from tests.test_influx_sink import VictoriaMetrics, open_outbox, pending_for, sink_config

pytestmark = [pytest.mark.slow]

# Connecting once the peer listens takes a moment of its own (a TCP and an HTTP or
# MQTT round trip, and the writes): allowed on top of the maximum delay.  3 s keeps a
# 2-core machine that other jobs load within it, and still tells a capped delay from an
# uncapped one (after a day of doubling, hours) or the default 8 s cap.
CONNECT_ALLOWANCE_S = 3.0


def test_a_day_of_failing_influx_then_it_writes_within_one_max_delay(tmp_path: Path) -> None:
    port = free_port()
    retry = RetryConfig(min_delay_s=0.001, max_delay_s=0.005)
    sink = InfluxSink(sink_config(f"http://127.0.0.1:{port}", retry=retry, batch_size=100))
    box = open_outbox(tmp_path, sink)
    vm = VictoriaMetrics(tmp_path / "vm", port=port)
    try:
        fill(box, 300)
        sink.start(box)
        assert wait_for(lambda: int(sink.health()["errors_total"]) >= 1500, timeout=40)
        vm.start()  # returns once it answers /health
        back = time.monotonic()
        assert wait_for(lambda: not pending_for(tmp_path / "outbox.db", "influx"), timeout=10)
        took = time.monotonic() - back
        sink.stop(2.0)
        assert wait_for(lambda: len(vm.samples()) == 300, timeout=10, interval=0.3)
        samples = len(vm.samples())
    finally:
        box.close()
        vm.stop()
    assert took < retry.max_delay_s + CONNECT_ALLOWANCE_S, took
    assert sink.health()["written_total"] == 300
    assert samples == 300


# About 20 s: slow, so it starts first.
@pytest.mark.slow
@pytest.mark.broker
def test_a_day_of_an_unreachable_broker_then_back_within_one_max_delay(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    max_delay = 0.002
    config = write_config(
        tmp_path / "gw.yaml",
        broker.url,
        meters(2, 5.0),
        broker={"url": broker.url, "reconnect": {"min_delay_s": 0.001, "max_delay_s": max_delay}},
    )
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    broker.stop()
    gw = Gateway(load_config(config))
    took: list[float] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        run = asyncio.create_task(gw.run(stop))
        # 10,800 attempts: a day of a broker down at the default 8 s maximum delay.
        while gw.uplink.attempts < 10_800:
            assert not run.done()
            await asyncio.sleep(0.2)
        await asyncio.to_thread(broker.start)
        back = time.monotonic()
        while not gw.uplink.stats().connected:
            await asyncio.sleep(0.001)
        took.append(time.monotonic() - back)
        # The day's backlog (here: what the meters read meanwhile) goes out.  Depth never
        # reaches 0 while the meters keep reading (acknowledgements ride on the next
        # commit), so wait until nothing older than a second is left.
        while (age := gw.outbox.stats().oldest_age_s) is not None and age > 1.0:
            await asyncio.sleep(0.05)
        stop.set()
        await run

    try:
        # 30 s on a quiet machine; the attempts take CPU, so a loaded one needs longer.
        asyncio.run(asyncio.wait_for(scenario(), 400))
        assert gw.failure is None
        assert took[0] < max_delay + CONNECT_ALLOWANCE_S, took
        # Every seq stored during the outage and after reached the subscriber.
        assert not outbox_seqs(config)
        assert sub.wait(lambda _ms: _received_all(sub), timeout=20)
        assert_nothing_lost(sub, config)
    finally:
        sub.stop()
        broker.remove()


def _received_all(sub: Subscriber) -> bool:
    seqs = {d["seq"] for d in data_messages(sub)}
    return bool(seqs) and seqs == set(range(1, max(seqs) + 1))
