"""The web under a flood from the LAN: capped connections and event streams, refused cheaply,
logged once; security headers on every answer.  Against a real gateway process and broker.

Clients at different addresses are loopback sources 127.0.0.2, .3, ... (Linux routes the
whole 127/8 to the loopback interface), so one test plays attacker and resident at once.
"""

from __future__ import annotations

import http.client
import resource
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.peers import Mosquitto, wait_for
from tests.web_harness import HttpClient, WebGateway, start_web_gateway

pytestmark = [pytest.mark.broker]

LIMITS = {
    "limits": {
        "connections_per_client": 12,
        "connections_total": 40,
        "streams_per_client": 3,
        "streams_total": 5,
    },
    "console_lang": "en",
}


@pytest.fixture
def gw(tmp_path: Path, broker: Mosquitto) -> Iterator[WebGateway]:
    g = start_web_gateway(tmp_path, broker, web=LIMITS)
    yield g
    g.stop()


def _open_stream(
    port: int, source: str, path: str = "/kiosk/lobby/events"
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    conn.request("GET", path, headers={"Accept": "text/event-stream"})
    return conn, conn.getresponse()


def _flood(held: ExitStack, port: int, sources: list[str]) -> None:
    """One kiosk event-stream request per source address, kept open (unless refused)."""
    for source in sources:
        try:
            s = socket.create_connection(("127.0.0.1", port), 2, (source, 0))
            held.callback(s.close)
            s.sendall(b"GET /kiosk/lobby/events HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            continue  # refused: reset by the gateway


def _kiosk_answers(gw: WebGateway) -> bool:
    return HttpClient(gw.port).get("/kiosk/lobby", timeout=2).status == 200


def test_event_streams_are_capped_per_client_and_in_total(gw: WebGateway) -> None:
    with ExitStack() as held:

        def stream(source: str) -> http.client.HTTPResponse:
            conn, resp = _open_stream(gw.port, source)
            held.callback(conn.close)
            return resp

        assert [stream("127.0.0.2").status for _ in range(3)] == [200] * 3
        refused = stream("127.0.0.2")
        assert refused.status == 429 and refused.getheader("Retry-After") == "30"
        assert refused.getheader("Connection") == "close"
        assert refused.getheader("X-Content-Type-Options") == "nosniff"
        # Another address still has its share of the total, and then the total is full.
        assert [stream("127.0.0.3").status for _ in range(2)] == [200] * 2
        full = stream("127.0.0.4")
        assert full.status == 503 and full.getheader("Retry-After") == "30"
        # The pages and the console's own streams are not held up by the kiosk's.
        assert _kiosk_answers(gw)
        staff = gw.client()
        assert staff.sign_in().status == 303
        console = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
        held.callback(console.close)
        console.request(
            "GET",
            "/console/events",
            headers={"Cookie": f"gw_session={staff.cookies['gw_session']}"},
        )
        assert console.getresponse().status == 200
    # Closed streams give their places back.
    assert wait_for(lambda: _open_stream(gw.port, "127.0.0.4")[1].status == 200, timeout=5)
    log = gw.proc.log()
    assert log.count("refusing event streams") == 1, log
    assert "Traceback" not in log


def test_connections_beyond_the_cap_are_closed_before_any_http(gw: WebGateway) -> None:
    with ExitStack() as held:
        idle = []
        for _ in range(12):
            s = socket.create_connection(("127.0.0.1", gw.port), 5, ("127.0.0.2", 0))
            held.callback(s.close)
            idle.append(s)
        extra = socket.create_connection(("127.0.0.1", gw.port), 5, ("127.0.0.2", 0))
        held.callback(extra.close)
        extra.sendall(b"GET /kiosk/lobby HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = extra.recv(100)
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # closed without a word
        assert _kiosk_answers(gw)  # another address is served meanwhile
        idle[0].sendall(b"GET /kiosk/lobby HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle[0].recv(12) == b"HTTP/1.1 200"  # the admitted ones are served
    # Once closed, the address may connect again.
    assert wait_for(
        lambda: HttpClient(gw.port).get("/kiosk/lobby", timeout=2).status == 200, timeout=5
    )
    assert gw.proc.log().count("refusing web connections") == 1
    assert "Traceback" not in gw.proc.log()


def test_a_flood_beyond_the_open_file_limit_writes_no_tracebacks(
    tmp_path: Path, broker: Mosquitto
) -> None:
    # The gateway runs with 512 descriptors, fewer than the flood's connections, as under
    # a unit without LimitNOFILE; the default total cap (512) is more than that allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        gw = start_web_gateway(tmp_path, broker, web={"console_lang": "en"})
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert "open-file limit (512) allows only 384 web connections" in gw.proc.log()
        with ExitStack() as held:
            # 5 addresses, each far beyond its cap (64)
            _flood(held, gw.port, [f"127.0.1.{i % 5 + 1}" for i in range(600)])
            assert _kiosk_answers(gw)
            staff = gw.client()
            assert staff.sign_in().status == 303
        log = gw.proc.log()
        assert "Traceback" not in log and "Too many open files" not in log
        assert log.count("refusing web connections") == 1
    finally:
        gw.stop()


def test_a_stream_flood_from_one_address_leaves_the_screens_and_alarms_working(
    tmp_path: Path, broker: Mosquitto
) -> None:
    # The small version of scripts/bench_web_flood.py: 400 stream connections from one
    # address, held open, while a resident, a staff member and an alarm get through.
    gw = start_web_gateway(tmp_path, broker, web={"console_lang": "en"})
    try:
        with ExitStack() as held:
            _flood(held, gw.port, ["127.0.0.2"] * 400)
            assert _kiosk_answers(gw)
            assert gw.client().sign_in().status == 303
            assert gw.command("devices/smoke-b2-stair-2/inject", {"type": "smoke.alarm"})["ok"]
            assert gw.sub.wait(lambda ms: any("/alarms/" in m.topic and m.payload for m in ms)), (
                gw.proc.log()
            )
        log = gw.proc.log()
        assert "Traceback" not in log
        assert log.count("refusing web connections") == 1
        assert log.count("refusing event streams") == 1
    finally:
        gw.stop()


QUIET = """
import asyncio, logging, resource, socket, sys
from gateway.web.guard import quiet_resource_errors
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")

async def main():
    quiet_resource_errors(asyncio.get_running_loop(), every_s=60)
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    held = []
    for _ in range(200):
        try:
            held.append(socket.create_connection(("127.0.0.1", port), 0.2))
        except OSError:
            break
        await asyncio.sleep(0)
    await asyncio.sleep(2.5)  # asyncio retries a failed accept each second

asyncio.run(main())
"""


def test_running_out_of_descriptors_is_logged_once_without_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-c", QUIET], capture_output=True, text=True, timeout=30, check=False
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Traceback" not in out
    assert out.count("out of file descriptors") == 1, out


GUARDED = """
import asyncio, logging, resource, sys
from gateway.web.guard import Caps, GuardedServer, RefusalLog
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")

class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(data)

async def main():
    server = GuardedServer(Echo, Caps(100_000, 100_000), RefusalLog("web connections", 60))
    await server.start("127.0.0.1", 0, None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, hard))
    print("port", server.ports()[0], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def test_the_listener_survives_running_out_of_descriptors_quietly() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", GUARDED],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        port = int(child.stdout.readline().split()[1])
        with ExitStack() as held:
            for _ in range(120):  # beyond the child's 48 descriptors, within its backlog
                s = socket.create_connection(("127.0.0.1", port), 5)
                held.callback(s.close)
            # The child says so once, and keeps running.
            assert select.select([child.stdout], [], [], 10)[0], "nothing logged"
            first = child.stdout.readline()
            assert "out of file descriptors" in first and child.poll() is None, first

        # Once the flood is gone, accepting resumes (within asyncio's one-second pause).
        def echoes() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), 2) as s:
                    s.sendall(b"ping")
                    return s.recv(4) == b"ping"
            except OSError:
                return False

        assert wait_for(echoes, timeout=10)
    finally:
        child.stdin.close()
        out = child.stdout.read()
        child.wait(10)
    assert "Traceback" not in out, out
    assert "out of file descriptors" not in out, out  # only the first line, read above


# ---- item 8: headers on every answer -------------------------------------------------


def _headers_ok(resp: http.client.HTTPResponse | object, where: str) -> None:
    get = resp.getheader if isinstance(resp, http.client.HTTPResponse) else resp.header  # type: ignore[attr-defined]
    assert get("X-Content-Type-Options") == "nosniff", where
    assert "frame-ancestors 'none'" in (get("Content-Security-Policy") or ""), where
    assert get("X-Frame-Options") == "DENY", where
    assert get("Server") == "community-gateway", where


def test_every_answer_carries_the_security_headers_and_no_versions(gw: WebGateway) -> None:
    c = gw.client()
    cases = {
        "303": c.get("/"),
        "401": c.get("/console/state"),
        "404 path": c.get("/nothing/<script>alert(1)</script>"),
        "404 kiosk": c.get("/kiosk/%3Cscript%3E"),
        "413": c.post("/signin", {"csrf": "x", "secret": "9" * 70_000}),
        "200 static": c.get("/static/style.css"),
        "405": c.request("PUT", "/signin"),
    }
    assert [r.status for r in cases.values()] == [303, 401, 404, 404, 413, 200, 405]
    for where, resp in cases.items():
        _headers_ok(resp, where)
        assert "<script>" not in resp.body, where
    # An answer aiohttp writes itself, for a request it cannot parse.
    with socket.create_connection(("127.0.0.1", gw.port), 5) as s:
        s.sendall(b"GET /<script> HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = s.recv(4096)
            if not chunk:
                break
            raw += chunk
    head = raw.decode("latin-1").lower()
    assert head.startswith(("http/1.1 400", "http/1.0 400")), head
    assert "bad header" not in head  # the parser's message, which echoes the input
    assert "x-content-type-options: nosniff" in head and "server: community-gateway" in head


def test_console_errors_are_json_for_the_page(gw: WebGateway) -> None:
    c = gw.client()
    assert c.sign_in().status == 303
    json_accept = {"Accept": "application/json"}
    big = c.post("/console/alarms/x-1/ack", {"note": "9" * 70_000}, headers=json_accept)
    assert big.status == 413 and big.json()["code"] == "too-large"
    csrf = c.post("/console/alarms/x-1/ack", {"note": ""}, headers=json_accept)
    assert csrf.status == 403 and csrf.json()["code"] == "csrf"
