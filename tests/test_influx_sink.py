"""The InfluxDB sink: the documented mapping, and delivery to a real v2 write endpoint.

The server is VictoriaMetrics (Debian's `victoria-metrics`), which speaks the InfluxDB
v2 write API: series are named `<measurement>_<field>`, timestamps are kept to the
millisecond, and points are read back with `/api/v1/export`.  End-to-end tests run the
real `gateway` process with a real Mosquitto, and compare what VictoriaMetrics stored
with what the MQTT subscriber received.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from community_protocol.schemas import validator
from gateway.config import ConfigError, SyncMode, load_config
from gateway.sdk.model import (
    ClockState,
    DeviceRef,
    Event,
    EventType,
    Identity,
    Kind,
    Location,
    Message,
    Reading,
    Telemetry,
    Unit,
    ValueType,
    encode,
)
from gateway.sinks.influx import InfluxSink
from gateway.sinks.influx_mapping import InvalidPayload, to_points
from gateway.sinks.settings import InfluxConfig, RetryConfig
from gateway.sinks.sink import build_sinks
from gateway.storage.outbox import Consumer, Outbox, OutboxItem
from gateway.storage.outbox_ram import ram_file
from tests.harness import GATEWAY, GatewayProc, Subscriber, topic_base, write_config
from tests.peers import Mosquitto, free_port, wait_for

IDENTITY = Identity("sunrise", "gw-1")
TS = datetime(2026, 11, 26, 23, 58, 21, 123456, tzinfo=UTC)
TS_MS = 1795737501123  # TS cut to the millisecond, as the envelope carries it
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ---- a real VictoriaMetrics ----------------------------------------------------------


@dataclass
class VictoriaMetrics:
    """`victoria-metrics` on a free loopback port, its storage in the test's folder."""

    workdir: Path
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "victoria-metrics.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                "victoria-metrics",
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.workdir / 'data'}",
                "-retentionPeriod=1d",
                "-search.latencyOffset=0s",
                *self.args,
            ],
            stdout=log,
            stderr=log,
        )
        if not wait_for(self._healthy, timeout=15, interval=0.05):
            raise RuntimeError(f"victoria-metrics did not start on port {self.port}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self.proc = None

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every stored series matching a selector, as `/api/v1/export` returns them."""
        # Without a flush, a query made before new series are searchable caches "none"
        # for about 10 s; the flush makes everything received so far searchable at once.
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).close()
        query = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=10) as resp:
            return [json.loads(line) for line in resp.read().splitlines() if line.strip()]

    def samples(self, match: str = '{__name__=~"meter_.*"}') -> dict[tuple[str, int], float]:
        """(series name with its labels, timestamp in ms) -> value."""
        out: dict[tuple[str, int], float] = {}
        for series in self.export(match):
            key = _series_key(series["metric"])
            for ts, value in zip(series["timestamps"], series["values"], strict=True):
                out[(key, ts)] = value
        return out


def _series_key(labels: dict[str, str]) -> str:
    name = labels["__name__"]
    rest = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    server = VictoriaMetrics(tmp_path / "vm")
    server.start()
    yield server
    server.stop()


def expected_samples(doc: dict[str, Any]) -> dict[tuple[str, int], float]:
    """What one MQTT telemetry message must have become in VictoriaMetrics."""
    dev = doc["device"]
    labels = {
        "site": doc["site"],
        "gateway": doc["gateway"],
        "device": dev["id"],
        "kind": dev["kind"],
        **dev["location"],
    }
    ts = (datetime.fromisoformat(doc["ts"]) - EPOCH) // timedelta(milliseconds=1)
    return {
        (_series_key({"__name__": f"meter_{name}", **labels}), ts): float(r["value"])
        for name, r in doc["values"].items()
    }


# ---- the mapping: bytes in, line protocol out -------------------------------------------


def meter_ref(location: Location | None = None) -> DeviceRef:
    return DeviceRef("meter-101", Kind.METER, location or Location("1", "3", "101"))


def payload(msg: Message, seq: int = 7) -> bytes:
    return encode(msg, IDENTITY, seq, ClockState.SYNCED)


def test_one_telemetry_message_is_one_point_with_every_tag_and_float_fields() -> None:
    msg = Telemetry(
        meter_ref(),
        TS,
        (
            Reading("energy_import", 1234.5, Unit.KWH, ValueType.COUNTER),
            Reading("power", 230, Unit.W),  # an int: still a float field, no type conflict
            Reading("relay_closed", True),
            Reading("tariff", "peak"),  # text: left out
        ),
    )
    assert to_points(payload(msg), "meter") == [
        "meter,building=1,device=meter-101,floor=3,gateway=gw-1,kind=meter,site=sunrise,unit=101"
        f" energy_import=1234.5,power=230,relay_closed=1 {TS_MS}"
    ]


def test_the_documented_example_is_what_the_mapping_writes() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "influxdb.md").read_text("utf-8")
    found = re.search(r"```json\n(.*?)\n```\s*is written as\s*```\n(.*?)\n```", doc, re.S)
    assert found, "docs/influxdb.md lost its example"
    example, line = found.groups()
    assert to_points(example.encode(), "meter") == [line]


def test_measurement_is_configurable_and_false_is_zero() -> None:
    msg = Telemetry(meter_ref(), TS, (Reading("relay_closed", False),))
    (line,) = to_points(payload(msg), "energy")
    assert line.startswith("energy,") and " relay_closed=0 " in line


def test_device_without_floor_and_unit_has_no_such_tags_and_odd_names_are_escaped() -> None:
    msg = Telemetry(
        meter_ref(Location("Block A, east")), TS, (Reading("flow rate", 0.25, Unit.M3_PER_H),)
    )
    assert to_points(payload(msg), "meter") == [
        r"meter,building=Block\ A\,\ east,device=meter-101,gateway=gw-1,kind=meter,site=sunrise"
        rf" flow\ rate=0.25 {TS_MS}"
    ]


def test_telemetry_with_only_text_readings_gives_no_point() -> None:
    msg = Telemetry(meter_ref(), TS, (Reading("tariff", "peak"), Reading("firmware", "1.2")))
    assert to_points(payload(msg), "meter") == []


def test_time_is_the_envelope_ts_to_the_millisecond() -> None:
    ts = datetime(2024, 2, 29, 0, 0, 0, 999999, tzinfo=UTC)  # format_ts cuts to .999
    msg = Telemetry(meter_ref(), ts, (Reading("power", 1.0),))
    (line,) = to_points(payload(msg), "meter")
    assert line.endswith(" 1709164800999")


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        payload(Event(meter_ref(), TS, EventType.METER_COUNTER_ANOMALY)),  # no values
        payload(Telemetry(meter_ref(), TS, (Reading("power", 1.0),))).replace(
            b'"ts":"2026-11-26T23:58:21.123Z"', b'"ts":"yesterday"'
        ),
    ],
    ids=["not json", "not an object", "an event", "a bad ts"],
)
def test_payloads_that_are_not_telemetry_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidPayload):
        to_points(raw, "meter")


# ---- config -----------------------------------------------------------------------------

CONFIG = """\
version: 1
site: {id: sunrise}
gateway: {id: gw-1}
broker: {url: "mqtt://127.0.0.1:1883"}
sinks:
  influxdb:
    url: http://127.0.0.1:8086
    org: community
    bucket: meters
    token: {file: influx.token}
"""


def load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "gw.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(path, drivers={})


def test_config_with_an_influx_sink_loads_with_defaults_and_a_resolved_token_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "influx.token").write_text("s3cret\n")
    cfg = load(tmp_path, CONFIG).config.sinks.influxdb
    assert cfg.token.read() == "s3cret"
    assert (cfg.measurement, cfg.batch_size, cfg.flush_interval_s) == ("meter", 500, 1.0)
    assert [s.name for s in build_sinks(load(tmp_path, CONFIG).config)] == ["influx"]


def test_config_without_sinks_builds_none(tmp_path: Path) -> None:
    text = CONFIG.split("sinks:")[0]
    assert build_sinks(load(tmp_path, text).config) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("token: {file: influx.token}", "token: s3cret"),
            "sinks.influxdb.token: secrets are never written inline",
        ),
        (
            ("token: {file: influx.token}", "token: {file: nope}"),
            "sinks.influxdb.token.file: secret file",
        ),
        (("url: http://", "url: udp://"), "sinks.influxdb.url: must look like http://host:8086"),
        (("  influxdb:", "  influx:"), "sinks.influx: unknown key"),
        (("bucket: meters", "bucket: meters\n    batch_size: 0"), "sinks.influxdb.batch_size:"),
        (
            ("bucket: meters", "bucket: meters\n    measurement: my-meters"),
            "sinks.influxdb.measurement:",
        ),
    ],
    ids=["inline token", "missing token file", "url scheme", "typo", "batch size", "measurement"],
)
def test_bad_sink_config_is_refused_with_its_key_path(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    (tmp_path / "influx.token").write_text("s3cret\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, CONFIG.replace(*change))
    assert any(message in str(p) for p in info.value.problems), info.value


# ---- the sink in process, against a real outbox and a real server ----------------------


def item(msg: Message, build: Any = None) -> OutboxItem:
    return OutboxItem(
        priority=msg.priority,
        channel=msg.channel,
        device_kind=str(msg.device.kind),
        topic=f"t/{msg.device.id}/{msg.channel}",
        build_payload=build or (lambda seq: payload(msg, seq)),
    )


def open_outbox(tmp_path: Path, sink: InfluxSink) -> Outbox:
    box = Outbox(
        tmp_path / "outbox.db",
        max_messages=100_000,
        commit_interval_ms=5,
        sync=SyncMode.NORMAL,
        consumers=[Consumer("mqtt"), sink.consumer()],
    )
    box.open()
    return box


def sink_config(url: str, **changes: Any) -> InfluxConfig:
    base: dict[str, Any] = {
        "url": url,
        "org": "o",
        "bucket": "b",
        "flush_interval_s": 0.2,
        "retry": RetryConfig(min_delay_s=0.1, max_delay_s=0.5),
    }
    return InfluxConfig(**{**base, **changes})


def pending_for(db: Path, consumer: str) -> list[tuple[int, str, str]]:
    """(seq, channel, device_kind) of every row still pending for `consumer`.

    On the card and in the outbox's memory tier (the readings of the last second). The
    memory tier is read first: a row only ever moves from it to the card (card row
    committed, then the memory row deleted), so a move between the two reads shows the
    row once or twice, never not at all; card first could miss it (a run with eight
    workers did).
    """
    ram = ram_file(db, db.parent / "run")  # tests.harness.GatewayProc's runtime directory
    with sqlite3.connect(db) as conn:
        (bit,) = conn.execute("SELECT bit FROM consumers WHERE name = ?", (consumer,)).fetchone()
        query = "SELECT seq, channel, device_kind FROM {db}messages WHERE pending & ?"
        rows = []
        if ram.exists():
            conn.execute("ATTACH DATABASE ? AS ram", (str(ram),))
            rows += conn.execute(query.format(db="ram."), (1 << bit,)).fetchall()
        rows += conn.execute(query.format(db=""), (1 << bit,)).fetchall()
        return sorted(set(rows))


def test_only_meter_telemetry_is_queued_for_the_sink(tmp_path: Path) -> None:
    sink = InfluxSink(sink_config("http://127.0.0.1:9"))
    box = open_outbox(tmp_path, sink)
    smoke = DeviceRef("smoke-1", Kind.SMOKE, Location("2"))
    messages: list[Message] = [
        Telemetry(meter_ref(), TS, (Reading("power", 1.0),)),
        Event(meter_ref(), TS, EventType.METER_COUNTER_ANOMALY),
        Event(smoke, TS, EventType.SMOKE_ALARM),
        Telemetry(smoke, TS, (Reading("battery", 80, Unit.PERCENT),)),
        Telemetry(meter_ref(), TS, (Reading("power", 2.0),)),
    ]
    try:
        seqs = [box.put(item(m)).result(timeout=5) for m in messages]
    finally:
        box.close()
    assert pending_for(tmp_path / "outbox.db", "influx") == [
        (seqs[0], "telemetry", "meter"),
        (seqs[4], "telemetry", "meter"),
    ]
    assert len(pending_for(tmp_path / "outbox.db", "mqtt")) == 5


def test_sink_writes_in_batches_and_a_bad_row_does_not_block_it(
    tmp_path: Path, vm: VictoriaMetrics
) -> None:
    sink = InfluxSink(sink_config(vm.url, batch_size=100))
    box = open_outbox(tmp_path, sink)
    start = int(time.time() * 1000) - 60_000
    futures: list[Future[int]] = []
    try:
        for i in range(250):
            if i == 10:  # a payload that should never exist: logged and acknowledged
                futures.append(
                    box.put(item(Telemetry(meter_ref(), TS, (Reading("x", 1),)), lambda s: b"{"))
                )
            ts = datetime.fromtimestamp((start + i) / 1000, UTC)
            msg = Telemetry(meter_ref(), ts, (Reading("power", float(i)),))
            futures.append(box.put(item(msg)))
        for f in futures:
            f.result(timeout=5)
        sink.start(box)
        assert wait_for(lambda: not pending_for(tmp_path / "outbox.db", "influx"), timeout=15)
        health = sink.health()
        sink.stop(2.0)
    finally:
        box.close()
    assert health["written_total"] == 250 and health["acked_total"] == 251
    assert health["invalid_total"] == 1 and health["errors_total"] == 0
    assert wait_for(lambda: len(vm.samples()) == 250, timeout=10, interval=0.3), len(vm.samples())
    got = {ts: v for (_, ts), v in vm.samples().items()}
    assert got == {start + i: float(i) for i in range(250)}


def test_points_the_server_refuses_are_logged_once_and_do_not_block_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # VictoriaMetrics answers 400 to a line over its limit, as InfluxDB does to a point
    # with a field type conflict: sending it again can never succeed.
    vm = VictoriaMetrics(tmp_path / "vm", args=["-influx.maxLineSize=400"])
    vm.start()
    sink = InfluxSink(sink_config(vm.url, batch_size=1))
    box = open_outbox(tmp_path, sink)
    start = int(time.time() * 1000) - 60_000
    try:
        many = tuple(Reading(f"register_{i}", float(i)) for i in range(40))
        box.put(item(Telemetry(meter_ref(), TS, many))).result(5)
        for i in range(5):
            ts = datetime.fromtimestamp((start + i) / 1000, UTC)
            box.put(item(Telemetry(meter_ref(), ts, (Reading("power", float(i)),)))).result(5)
        sink.start(box)
        assert wait_for(lambda: not pending_for(tmp_path / "outbox.db", "influx"), timeout=15)
        health = sink.health()
        sink.stop(2.0)
        assert wait_for(lambda: len(vm.samples()) == 5, timeout=10, interval=0.3)
    finally:
        box.close()
        vm.stop()
    assert (health["refused_total"], health["written_total"], health["acked_total"]) == (1, 5, 6)
    refusals = [r for r in caplog.records if "not retried" in r.getMessage()]
    assert len(refusals) == 1 and "HTTP 400" in refusals[0].getMessage()


def test_sink_stops_promptly_during_an_outage_and_keeps_its_rows(tmp_path: Path) -> None:
    sink = InfluxSink(sink_config(f"http://127.0.0.1:{free_port()}"))
    box = open_outbox(tmp_path, sink)
    try:
        for i in range(20):
            box.put(item(Telemetry(meter_ref(), TS, (Reading("power", float(i)),)))).result(5)
        sink.start(box)
        assert wait_for(lambda: int(sink.health()["errors_total"]) >= 2, timeout=10)
        assert "Connection refused" in str(sink.health()["last_error"])
        began = time.monotonic()
        sink.stop(2.0)
        assert time.monotonic() - began < 1.0
    finally:
        box.close()
    assert len(pending_for(tmp_path / "outbox.db", "influx")) == 20


# ---- end to end: the gateway process, Mosquitto and VictoriaMetrics --------------------


def devices(n_meters: int, rate_hz: float) -> list[dict[str, Any]]:
    meters = [
        {
            "id": f"m{i}",
            "kind": "meter",
            "location": {"building": "1", "floor": 1, "unit": f"10{i}"},
            "driver": {
                "type": "simulated",
                "profile": "household_electricity",
                "rate_hz": rate_hz,
                "seed": i,
                # Meter events take the same outbox; they must never reach InfluxDB.
                "events": [{"type": "meter.counter_anomaly", "every_s": 0.5}],
            },
        }
        for i in range(n_meters)
    ]
    smoke = {
        "id": "smoke-1",
        "kind": "smoke",
        "location": {"building": "2", "floor": 3, "unit": "stairwell"},
        "driver": {"type": "simulated", "events": [{"type": "smoke.alarm", "every_s": 0.3}]},
    }
    return [*meters, smoke]


def gateway_config(tmp_path: Path, broker: Mosquitto, influx_url: str) -> Path:
    return write_config(
        tmp_path / "gw.yaml",
        broker.url,
        devices(3, 5),
        broker={"url": broker.url, "reconnect": {"min_delay_s": 0.2, "max_delay_s": 1}},
        sinks={
            "influxdb": {
                "url": influx_url,
                "org": "community",
                "bucket": "meters",
                "flush_interval_s": 0.2,
                "retry": {"min_delay_s": 0.2, "max_delay_s": 1},
                "timeout_s": 2,
            }
        },
    )


def meter_telemetry(sub: Subscriber) -> dict[int, dict[str, Any]]:
    """seq -> document of every meter reading the subscriber received."""
    docs = (m.json() for m in sub.snapshot() if m.topic.endswith("/telemetry"))
    return {d["seq"]: d for d in docs if d["device"]["kind"] == "meter"}


def healths(sub: Subscriber) -> list[dict[str, Any]]:
    return [m.json() for m in sub.snapshot() if m.topic.endswith("/health")]


def all_in(vm: VictoriaMetrics, docs: list[dict[str, Any]]) -> bool:
    stored = vm.samples()
    for doc in docs:
        for key, value in expected_samples(doc).items():
            if key not in stored or stored[key] != pytest.approx(value, rel=1e-9):
                return False
    return True


@pytest.mark.broker
@pytest.mark.slow
def test_meter_readings_reach_influx_as_mqtt_delivered_them_and_nothing_else_does(
    tmp_path: Path, broker: Mosquitto, vm: VictoriaMetrics
) -> None:
    config = gateway_config(tmp_path, broker, vm.url)
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    gw = GatewayProc(config).start()
    try:
        assert sub.wait(lambda ms: len(meter_telemetry(sub)) >= 40), gw.log()
        docs = list(meter_telemetry(sub).values())
        assert wait_for(lambda: all_in(vm, docs), timeout=15, interval=0.5), gw.log()
        assert sub.wait(lambda ms: any("sinks" in h for h in healths(sub)))
    finally:
        assert gw.terminate() == 0
    # Same series, timestamps and values as the MQTT messages, for every reading.
    stored = vm.samples()
    for doc in docs:
        for key, value in expected_samples(doc).items():
            assert stored[key] == pytest.approx(value, rel=1e-9), key
    # Nothing but meter telemetry was written: every series is a meter's reading.
    everything = vm.export('{__name__=~".+"}')
    assert everything
    for series in everything:
        labels = series["metric"]
        assert labels["kind"] == "meter" and labels["device"] in {"m0", "m1", "m2"}, labels
        assert labels["__name__"] in {
            "meter_energy_import",
            "meter_power",
            "meter_voltage",
            "meter_current",
        }
    assert any(m.topic.endswith("/smoke-1/events") for m in sub.snapshot())
    health = [h for h in healths(sub) if "sinks" in h][-1]
    validator("health").validate(health)
    influx = health["sinks"]["influx"]
    assert influx["written_total"] > 0 and influx["invalid_total"] == 0
    assert influx["errors_total"] == 0 and influx["last_error"] == ""


@pytest.mark.broker
@pytest.mark.slow
def test_influx_outage_holds_up_nothing_and_loses_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    vm = VictoriaMetrics(tmp_path / "vm")  # its port is in the config; not started yet
    config = gateway_config(tmp_path, broker, vm.url)
    db = config.parent / "outbox.db"
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    gw = GatewayProc(config).start()
    try:
        # MQTT keeps delivering while InfluxDB is down.
        assert sub.wait(lambda ms: len(meter_telemetry(sub)) >= 40), gw.log()
        assert sub.wait(
            lambda ms: any(
                h.get("sinks", {}).get("influx", {}).get("errors_total") for h in healths(sub)
            )
        )
        # Every meter reading MQTT delivered is still held for InfluxDB, and only those.
        delivered = set(meter_telemetry(sub))
        held = pending_for(db, "influx")
        assert delivered <= {seq for seq, _, _ in held}
        assert {(channel, kind) for _, channel, kind in held} == {("telemetry", "meter")}
        vm.start()
        docs = list(meter_telemetry(sub).values())
        assert wait_for(lambda: all_in(vm, docs), timeout=20, interval=0.5), gw.log()
        assert wait_for(lambda: len(pending_for(db, "influx")) < 30, timeout=10)
    finally:
        assert gw.terminate() == 0
        vm.stop()
    log = gw.log()
    # The same failure at every retry is reported once, and the recovery once.
    assert log.count("Connection refused; retrying with backoff") == 1, log
    assert log.count("writing again") == 1, log


@pytest.mark.broker
@pytest.mark.slow
def test_rows_held_for_influx_survive_a_restart_and_the_outbox_command(
    tmp_path: Path, broker: Mosquitto
) -> None:
    vm = VictoriaMetrics(tmp_path / "vm")
    config = gateway_config(tmp_path, broker, vm.url)
    db = config.parent / "outbox.db"
    sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
    gw = GatewayProc(config).start()
    try:
        assert sub.wait(lambda ms: len(meter_telemetry(sub)) >= 30), gw.log()
    finally:
        assert gw.terminate() == 0
    held = pending_for(db, "influx")
    assert set(meter_telemetry(sub)) <= {seq for seq, _, _ in held}
    with sqlite3.connect(db) as conn:
        (depth,) = conn.execute("SELECT count(*) FROM messages").fetchone()
    # `gateway outbox` opens the outbox too: it must not release the sink's rows.
    out = subprocess.run(
        [GATEWAY, "outbox", "-c", str(config)], capture_output=True, text=True, check=True
    ).stdout
    assert f"depth       {depth} " in out
    assert pending_for(db, "influx") == held
    vm.start()
    gw2 = GatewayProc(config).start()
    try:
        docs = list(meter_telemetry(sub).values())
        assert wait_for(lambda: all_in(vm, docs), timeout=20, interval=0.5), gw2.log()
    finally:
        assert gw2.terminate() == 0
        vm.stop()
