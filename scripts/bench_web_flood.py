"""Web flood benchmark: 2,000 event-stream connections from one address against the gateway.

A real gateway process (web on, a simulated smoke detector) and Mosquitto, all on
loopback.  The attacker is one address (127.0.0.2) holding `--connections` sockets that
each ask for `/kiosk/lobby/events`, and reopening every one the server closes, for the
whole flood phase.  Staff and residents are another address (127.0.0.1).

Measured idle (the baseline, same run) and under the flood:
- sign-in: GET /signin then POST the PIN, until the 303 (wall time, worst and median);
- kiosk: GET /kiosk/lobby (worst and median);
- alarm latency: a `smoke.alarm` injected by an MQTT command until the alarm document
  reaches a subscriber on the broker, then `smoke.cleared`, one at a time.
Targets (issue 13): sign-in and kiosk answer within 1 s; alarm latency within 2x idle.
The gateway runs with 8192 descriptors, as under the unit's LimitNOFILE.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import resource
import selectors
import socket
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish

from scripts.bench_core import pct
from tests.peers import Mosquitto, wait_for
from tests.web_harness import SMOKE, HttpClient, WebGateway, start_web_gateway

__all__ = ["main"]

ATTACKER = "127.0.0.2"
REQUEST = b"GET /kiosk/lobby/events HTTP/1.1\r\nHost: gw\r\nAccept: text/event-stream\r\n\r\n"


class Flood:
    """Holds `n` stream connections from one address; reopens each one the server closes
    after `retry_s`, as an EventSource would (browsers wait about 3 s)."""

    def __init__(self, port: int, n: int, retry_s: float) -> None:
        self.port, self.n, self.retry_s = port, n, retry_s
        self.sel = selectors.DefaultSelector()
        self.stop = multiprocessing.Event()
        self.opened = 0
        self.closed_by_server = 0
        self.connect_errors = 0
        self.reopen_at: list[float] = []
        self.counts: Any = multiprocessing.Array("l", 3)
        # A process of its own, so its work does not hold the measuring thread's GIL.
        self.proc = multiprocessing.Process(target=self._run, daemon=True)

    def _open(self) -> None:
        s = socket.socket()
        s.setblocking(False)
        s.bind((ATTACKER, 0))
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            self.connect_errors += 1
            s.close()
            self.reopen_at.append(time.monotonic() + self.retry_s)
            return
        self.sel.register(s, selectors.EVENT_WRITE, "connecting")
        self.opened += 1

    def _run(self) -> None:
        for _ in range(self.n):
            self._open()
        while not self.stop.is_set():
            for key, _ in self.sel.select(0.1):
                s: socket.socket = key.fileobj  # type: ignore[assignment]
                if key.data == "connecting":
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        self._drop(s)
                        continue
                    try:
                        s.send(REQUEST)
                    except OSError:
                        self._drop(s)
                        continue
                    self.sel.modify(s, selectors.EVENT_READ, "open")
                    continue
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._drop(s)
            now = time.monotonic()
            while self.reopen_at and self.reopen_at[0] <= now and not self.stop.is_set():
                self.reopen_at.pop(0)
                self._open()
            self.counts[:] = [self.opened, self.closed_by_server, self.connect_errors]
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]

    def _drop(self, s: socket.socket) -> None:
        self.sel.unregister(s)
        s.close()
        self.closed_by_server += 1
        self.reopen_at.append(time.monotonic() + self.retry_s)

    def start(self) -> Flood:
        self.proc.start()
        return self

    def finish(self) -> tuple[int, int, int]:
        """Stop the flood; (connections opened, closed by the server, refused at connect)."""
        self.stop.set()
        self.proc.join(10)
        opened, closed, errors = self.counts[:]
        return opened, closed, errors


def _timed(fn: Any) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def _sign_in(port: int) -> None:
    resp = HttpClient(port).sign_in()
    assert resp.status == 303, resp.status


def _kiosk(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/kiosk/lobby")
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200, resp.status


def _alarm_latency(gw: WebGateway, rounds: int) -> list[float]:
    """Seconds from an injected smoke alarm (MQTT command) to its alarm document."""
    out = []
    device = SMOKE["id"]
    for i in range(rounds):
        for kind in ("smoke.alarm", "smoke.cleared"):
            seen = len(gw.sub.snapshot())
            sent = time.monotonic()
            publish.single(
                f"{gw.base}/cmd/devices/{device}/inject",
                json.dumps({"type": kind, "request_id": uuid.uuid4().hex[:12]}),
                qos=1,
                hostname="127.0.0.1",
                port=gw.broker.port,
            )
            state = "active" if kind == "smoke.alarm" else "cleared"

            def arrived(state: str = state, seen: int = seen) -> Any:
                for m in gw.sub.snapshot()[seen:]:
                    if "/alarms/" in m.topic and m.payload and m.json().get("state") == state:
                        return m
                return None

            assert wait_for(lambda: arrived() is not None, timeout=20), f"round {i}: no {state}"
            if kind == "smoke.alarm":
                out.append(arrived().at - sent)
    return out


def _measure(gw: WebGateway, samples: int) -> dict[str, list[float]]:
    return {
        "signin": [_timed(lambda: _sign_in(gw.port)) for _ in range(samples)],
        "kiosk": [_timed(lambda: _kiosk(gw.port)) for _ in range(samples)],
        "alarm": _alarm_latency(gw, samples),
    }


def _line(name: str, values: list[float]) -> str:
    return (
        f"{name:>14}: median {statistics.median(values) * 1000:7.1f} ms, "
        f"p90 {pct(values, 0.9) * 1000:7.1f} ms, worst {max(values) * 1000:7.1f} ms"
    )


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--retry-s", type=float, default=1.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-web-flood-"))
    broker = Mosquitto(tmp / "broker")
    broker.start()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))  # the unit's
    try:
        gw = start_web_gateway(tmp, broker, web={"console_lang": "en"})
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, args.connections + 500), hard))
    try:
        idle = _measure(gw, args.samples)
        log_before = len(gw.proc.log())
        flood = Flood(gw.port, args.connections, args.retry_s).start()
        assert wait_for(lambda: flood.counts[0] >= args.connections, timeout=30)
        flooded = _measure(gw, args.samples)
        opened, closed, errors = flood.finish()
        log = gw.proc.log()[log_before:]
        print(f"web flood: {args.connections} event-stream connections from {ATTACKER}")
        print("idle (baseline, same run):")
        for k, v in idle.items():
            print(_line(k, v))
        print("under the flood:")
        for k, v in flooded.items():
            print(_line(k, v))
        ratio = statistics.median(flooded["alarm"]) / statistics.median(idle["alarm"])
        worst = max(max(flooded["signin"]), max(flooded["kiosk"]))
        print(
            f"attacker: {opened} connections opened, {closed} closed by the server, "
            f"{errors} refused at connect; {args.retry_s:g} s before reopening each"
        )
        print(
            f"log during the flood: {len(log)} bytes, {log.count('Traceback')} tracebacks, "
            f"{log.count('web: refus')} refusal lines"
        )
        print(f"alarm latency median under flood / idle: {ratio:.2f} (target <= 2)")
        print(f"worst sign-in or kiosk answer under flood: {worst * 1000:.0f} ms (target < 1000)")
        return {"ratio": ratio, "worst_s": worst, "tracebacks": log.count("Traceback")}
    finally:
        gw.stop()
        broker.remove()


if __name__ == "__main__":
    main()
