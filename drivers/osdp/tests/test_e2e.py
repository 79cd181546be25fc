"""The real `gateway run` with an OSDP reader: card to MQTT, and a clean stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.osdp.pseudonym import card_pseudonym
from drivers.osdp.wiegand import encode
from tests.harness import GatewayProc, Subscriber, topic_base, write_config
from tests.peers import Mosquitto, PtyPair

from .peer import ReaderPeer, SharedLine

pytestmark = pytest.mark.broker

SECRET = "e2e-site-secret-0123456789abcdef"
KEY = bytes(range(16, 32))


def test_card_read_reaches_the_broker_pseudonymised(
    tmp_path: Path, broker: Mosquitto, ptys: PtyPair
) -> None:
    gw = tmp_path / "gw"
    gw.mkdir()
    (gw / "site.secret").write_text(SECRET + "\n")
    (gw / "lobby.scbk").write_text(KEY.hex() + "\n")
    reader = {
        "id": "reader-lobby",
        "kind": "door",
        "location": {"building": "1", "floor": "0", "unit": "lobby"},
        "driver": {
            "type": "osdp",
            "port": str(ptys.a),
            "baudrate": 115200,
            "address": 1,
            "scbk": {"file": "lobby.scbk"},
            "site_secret": {"file": "site.secret"},
        },
    }
    config = write_config(gw / "site.yaml", broker.url, [reader])
    base = topic_base(config)
    sub = Subscriber(broker.port, f"{base}/#").start()
    line = SharedLine(ptys.b)
    peer = ReaderPeer(line, 1, KEY)
    peer.start()
    proc = GatewayProc(config).start()
    card = encode(12, 34567)
    try:
        assert sub.wait(
            lambda ms: any(
                m.topic.endswith("/devices/reader-lobby/availability")
                and m.json()["state"] == "online"
                for m in ms
            )
        ), proc.log()
        peer.card(card)
        assert sub.wait(lambda ms: any(m.topic.endswith("/reader-lobby/events") for m in ms))
        assert proc.terminate() == 0  # libosdp's thread stops with the service
    finally:
        if proc.running():
            proc.kill()
        peer.stop()
        line.close()
        sub.stop()
    (event,) = [m.json() for m in sub.matching("/devices/reader-lobby/events")]
    assert event["event"] == {
        "type": "access.card_read",
        "data": {
            "card": card_pseudonym(SECRET.encode(), card, 26),
            "format": "wiegand",
            "bits": 26,
            "reader_no": 0,
            "parity_ok": True,
        },
    }
    assert event["device"]["kind"] == "door"
    everything = b"".join(m.payload for m in sub.snapshot()) + proc.log().encode()
    assert b"34567" not in everything and card.hex().encode() not in everything
