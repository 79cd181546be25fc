"""The ticket service's per-gateway alarm budget: the queue alone, then the real service."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from community_central.fair import Budget, FairQueue

from central.tests.tickets_harness import (
    Publisher,
    TicketServiceProc,
    alarm_doc,
    tickets_cli,
    tickets_in,
)
from tests.peers import Mosquitto, wait_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_gateway_over_budget_is_deferred_coalesced_and_released_in_turn() -> None:
    clock = FakeClock()
    q: FairQueue[str] = FairQueue(
        Budget(rate_per_s=10, burst=2, per_gateway=3, total=5), clock=clock
    )
    noisy, quiet = ("s", "noisy"), ("s", "quiet")
    assert q.admit(noisy, "t1", "n1-rev1") and q.admit(noisy, "t2", "n2-rev1")
    assert not q.admit(noisy, "t1", "n1-rev2")  # out of tokens: deferred
    assert not q.admit(noisy, "t1", "n1-rev3")  # the same alarm again: replaces it
    assert not q.admit(noisy, "t3", "n3-rev1") and not q.admit(noisy, "t4", "n4-rev1")
    assert not q.admit(noisy, "t5", "n5-rev1")  # a fourth alarm id: over per_gateway
    assert q.admit(quiet, "q1", "q1-rev1"), "another gateway has its own budget"
    assert q.counts == {"deferred": 3, "coalesced": 1, "dropped": 1}
    assert q.release() == []  # no token yet
    clock.now = 0.1  # one token back
    assert q.release() == ["n1-rev3"]
    clock.now = 1.0
    assert q.release() == ["n3-rev1", "n4-rev1"]
    assert q.deferred_now == 0
    # Once its queue is empty and it has tokens again, a gateway is admitted directly.
    assert not q.admit(noisy, "t1", "n1-rev4")
    clock.now = 2.0
    assert q.release() == ["n1-rev4"] and q.admit(noisy, "t1", "n1-rev5")


def test_release_takes_turns_between_gateways_and_the_total_is_bounded() -> None:
    clock = FakeClock()
    q: FairQueue[str] = FairQueue(
        Budget(rate_per_s=1, burst=1, per_gateway=10, total=4), clock=clock
    )
    for gw in ("a", "b"):
        assert q.admit(("s", gw), "x", f"{gw}0")
        for i in range(1, 4):
            q.admit(("s", gw), f"t{i}", f"{gw}{i}")
    assert q.deferred_now == 4 and q.counts["dropped"] == 2  # the total bound
    clock.now = 1.0
    assert q.release() == ["a1", "b1"]  # one each per token, in turn
    clock.now = 2.0
    assert q.release() == ["a2"]  # b2 and b3 came when the total was full: dropped


@pytest.mark.slow
def test_a_flooding_gateway_does_not_delay_another_gateways_ticket(
    broker: Mosquitto, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}/v1"
    svc = TicketServiceProc(
        broker.url,
        tmp_path / "tickets.db",
        prefix,
        extra=["--gateway-rate", "50", "--gateway-burst", "20"],
    ).start()
    pub = Publisher(broker.port)
    try:
        ids = [f"n-{i}" for i in range(40)]
        payloads = [
            (f"{prefix}/site-a/noisy/alarms/{a}", json.dumps(alarm_doc("site-a", "noisy", a, rev)))
            for rev in range(1, 26)
            for a in ids
        ]
        for topic, payload in payloads:  # 1,000 alarm documents as fast as QoS 1 goes
            pub.client.publish(topic, payload, qos=1, retain=False)
        victim = alarm_doc("site-b", "quiet", "v-1")
        pub.publish(f"{prefix}/site-b/quiet/alarms/v-1", json.dumps(victim), retain=False)
        assert wait_for(lambda: any(t.gateway == "quiet" for t in tickets_in(svc.db)), timeout=10)
        [ticket] = [t for t in tickets_in(svc.db) if t.gateway == "quiet"]
        # Without the budget it waits behind the whole flood: 2.5 s here.
        assert ticket.open_latency_s < 1.5, ticket.open_latency_s
        # The flood is worked off at the gateway's rate, each alarm at its latest state.
        assert wait_for(
            lambda: (
                sorted(t.alarm_rev for t in tickets_in(svc.db) if t.gateway == "noisy") == [25] * 40
            ),
            timeout=30,
        ), sorted(t.alarm_rev for t in tickets_in(svc.db) if t.gateway == "noisy")

        def counters() -> dict[str, int]:
            out = tickets_cli("stats", "--db", str(svc.db), "--json").stdout
            got: dict[str, int] = json.loads(out)["counters"]
            return got

        assert wait_for(lambda: counters().get("deferred", 0) > 0, timeout=5)
        c = counters()
        assert c["coalesced"] > 0 and c.get("dropped", 0) == 0, c
        assert svc.running()
    finally:
        pub.stop()
        svc.terminate()
