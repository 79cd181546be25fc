"""The InfluxDB sink against servers that misbehave: too large, too many, silent, gone.

A small HTTP server of the test's own plays the InfluxDB v2 write endpoint where a real
one cannot be made to answer 413 or 429 on demand; VictoriaMetrics is the real server
for the long outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.sdk.model import Reading, Telemetry
from gateway.sinks.influx import InfluxSink
from gateway.storage.outbox import Outbox
from tests.peers import free_port, wait_for
from tests.test_influx_sink import (
    item,
    meter_ref,
    open_outbox,
    pending_for,
    sink_config,
)

# (lines of the request, how many requests came before) -> status, headers; None: hang
Script = Callable[[list[str], int], tuple[int, dict[str, str]] | None]


@dataclass
class FakeInflux:
    """An HTTP server answering writes by a script, recording what it stored and when."""

    script: Script
    port: int = field(default_factory=free_port)
    stored: list[str] = field(default_factory=list)
    requests: list[tuple[float, int, int]] = field(default_factory=list)  # (at, lines, status)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                lines = [x for x in body.decode().split("\n") if x]
                answer = fake.script(lines, len(fake.requests))
                if answer is None:  # a server that never answers
                    fake.requests.append((time.monotonic(), len(lines), 0))
                    fake.release.wait(30)
                    return
                status, headers = answer
                fake.requests.append((time.monotonic(), len(lines), status))
                if status == 204:
                    fake.stored.extend(lines)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_influx() -> Iterator[Callable[[Script], FakeInflux]]:
    made: list[FakeInflux] = []

    def make(script: Script) -> FakeInflux:
        made.append(FakeInflux(script))
        return made[-1]

    yield make
    for server in made:
        server.close()


def fill(box: Outbox, n: int) -> None:
    start = int(time.time() * 1000) - 60_000
    for i in range(n):
        ts = datetime.fromtimestamp((start + i) / 1000, UTC)
        box.put(item(Telemetry(meter_ref(), ts, (Reading("power", float(i)),)))).result(5)


def run_until_drained(tmp_path: Path, sink: InfluxSink, n: int, timeout: float = 10) -> None:
    box = open_outbox(tmp_path, sink)
    try:
        fill(box, n)
        sink.start(box)
        assert wait_for(lambda: not pending_for(tmp_path / "outbox.db", "influx"), timeout)
        sink.stop(2.0)
    finally:
        box.close()


def test_a_request_too_large_is_split_until_the_server_takes_it(
    tmp_path: Path, fake_influx: Callable[[Script], FakeInflux]
) -> None:
    # Before: the same 50-point request was retried, and refused, forever.
    server = fake_influx(lambda lines, _n: (413, {}) if len(lines) > 8 else (204, {}))
    sink = InfluxSink(sink_config(server.url, batch_size=50, flush_interval_s=0.5))
    run_until_drained(tmp_path, sink, 50)
    assert len(server.stored) == len(set(server.stored)) == 50
    sizes = [lines for _, lines, status in server.requests]
    assert sizes[:4] == [50, 25, 12, 6], sizes  # halved until it fits, then kept there
    assert all(size <= 6 for size in sizes[3:])
    assert sink.health()["written_total"] == 50 and sink.health()["refused_total"] == 0


def test_a_point_too_large_alone_is_refused_and_the_rest_written(
    tmp_path: Path, fake_influx: Callable[[Script], FakeInflux]
) -> None:
    server = fake_influx(
        lambda lines, _n: (413, {}) if any(" power=3 " in line for line in lines) else (204, {})
    )
    sink = InfluxSink(sink_config(server.url, batch_size=10, flush_interval_s=0.5))
    run_until_drained(tmp_path, sink, 10)
    assert len(server.stored) == 9
    assert sink.health()["refused_total"] == 1


def test_429_retry_after_is_waited_for(
    tmp_path: Path, fake_influx: Callable[[Script], FakeInflux]
) -> None:
    server = fake_influx(lambda _l, n: (429, {"Retry-After": "1"}) if n < 2 else (204, {}))
    # The backoff alone would retry after 0.05-0.1 s.
    sink = InfluxSink(sink_config(server.url, batch_size=10, flush_interval_s=0.1))
    run_until_drained(tmp_path, sink, 10)
    times = [at for at, _, _ in server.requests]
    assert len(times) == 3 and len(server.stored) == 10
    assert times[1] - times[0] >= 0.95 and times[2] - times[1] >= 0.95


def test_a_server_that_never_answers_is_logged_once(
    tmp_path: Path,
    fake_influx: Callable[[Script], FakeInflux],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = fake_influx(lambda _l, _n: None)
    sink = InfluxSink(sink_config(server.url, timeout_s=0.2, flush_interval_s=0.1))
    box = open_outbox(tmp_path, sink)
    try:
        fill(box, 5)
        with caplog.at_level(logging.INFO, "gateway.sinks.influx"):
            sink.start(box)
            assert wait_for(lambda: len(server.requests) >= 5, timeout=15)
            sink.stop(2.0)
    finally:
        box.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "timed out" in warnings[0]
    assert int(sink.health()["errors_total"]) >= 4
