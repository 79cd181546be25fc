"""Helpers of the web tests: a gateway with the web on, staff made by the CLI, an HTTP client.

The HTTP client follows no redirects and keeps cookies by hand, so a test sees exactly
the status, headers and cookie flags the server sent.
"""

from __future__ import annotations

import http.client
import json
import ssl
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import paho.mqtt.publish as publish

from tests.harness import GatewayProc, Subscriber, topic_base, write_config
from tests.peers import Mosquitto, free_port, wait_for

__all__ = [
    "SMOKE",
    "HttpClient",
    "Response",
    "WebGateway",
    "add_staff",
    "csrf_of",
    "shanghai_time",
    "start_web_gateway",
]

SMOKE = {
    "id": "smoke-b2-stair-2",
    "kind": "smoke",
    "name": "Stairwell smoke detector",
    "location": {"building": "2", "floor": 2, "unit": "stairwell"},
    "driver": {"type": "simulated"},
}
STAFF_ID = "staff-li"
STAFF_PIN = "271828"


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: str

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def set_cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpClient:
    """A tiny browser without JavaScript: cookies by name, no redirects followed."""

    port: int
    tls: ssl.SSLContext | None = None
    cookies: dict[str, str] = field(default_factory=dict)
    # Another loopback address (127.0.0.2, ...) plays another client on the LAN.
    source: str | None = None

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> Response:
        conn: http.client.HTTPConnection
        if self.tls is not None:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout, context=self.tls
            )
        else:
            conn = http.client.HTTPConnection(
                "127.0.0.1",
                self.port,
                timeout=timeout,
                source_address=(self.source, 0) if self.source else None,
            )
        hdrs = dict(headers or {})
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            resp = Response(r.status, r.getheaders(), r.read().decode("utf-8", "replace"))
        finally:
            conn.close()
        for raw in resp.set_cookies():
            c: SimpleCookie = SimpleCookie()
            c.load(raw)
            for name, morsel in c.items():
                if morsel["expires"] or morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return resp

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict[str, str], **kw: Any) -> Response:
        return self.request("POST", path, form=form, **kw)

    def sign_in(self, staff_id: str = STAFF_ID, secret: str = STAFF_PIN) -> Response:
        page = self.get("/signin")
        return self.post(
            "/signin", {"csrf": csrf_of(page.body), "staff_id": staff_id, "secret": secret}
        )


def csrf_of(html: str) -> str:
    """The CSRF token of the first form in a page."""
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def shanghai_time(iso: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A gateway UTC timestamp in Asia/Shanghai, the web tests' zone, worked out apart
    from gateway.web.timefmt so that the screens are checked against it."""
    when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return when.astimezone(ZoneInfo("Asia/Shanghai")).strftime(fmt)


def add_staff(
    config: Path, staff_id: str = STAFF_ID, pin: str = STAFF_PIN, name: str = "Li Wei"
) -> None:
    """Add a staff account with the real CLI command, as an installer would.

    In this process (click's runner): as a subprocess it cost half a second of CPU in
    every web test, mostly the interpreter importing the gateway.
    """
    from click.testing import CliRunner

    from gateway.cli import main

    args = ["staff", "add", staff_id, "--name", name, "--pin-stdin", "-c", str(config)]
    done = CliRunner().invoke(main, args, input=f"{pin}\n")
    assert done.exit_code == 0, (done.output, done.exception)


@dataclass
class WebGateway:
    """A running gateway process with the web on, and a subscriber on its whole topic tree."""

    config: Path
    base: str
    port: int
    proc: GatewayProc
    sub: Subscriber
    broker: Mosquitto

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> HttpClient:
        return HttpClient(self.port)

    def command(self, path: str, args: dict[str, Any], timeout: float = 15) -> dict[str, Any]:
        """Send a command as the platform would (MQTT 5, no response topic); the reply."""
        rid = uuid.uuid4().hex[:12]
        publish.single(
            f"{self.base}/cmd/{path}",
            json.dumps({**args, "request_id": rid}),
            qos=1,
            hostname="127.0.0.1",
            port=self.broker.port,
        )
        reply_topic = f"{self.base}/reply/{path}"

        def found() -> dict[str, Any] | None:
            for m in self.sub.snapshot():
                if m.topic == reply_topic and m.json().get("request_id") == rid:
                    doc: dict[str, Any] = m.json()
                    return doc
            return None

        assert wait_for(lambda: found() is not None, timeout=timeout), (
            f"no reply to {path}\n{self.proc.log()}"
        )
        reply = found()
        assert reply is not None
        return reply

    def stop(self) -> None:
        if self.proc.running():
            self.proc.terminate()
        self.sub.stop()


def start_web_gateway(
    tmp_path: Path,
    broker: Mosquitto,
    *,
    web: dict[str, Any] | None = None,
    staff: bool = True,
    devices: list[dict[str, Any]] | None = None,
    site_name: str = "",
    sections: dict[str, Any] | None = None,
) -> WebGateway:
    """Write a config with the web on a free port, add the staff account, start the process.

    `sections`: more config sections (e.g. `alarms`), as write_config takes them.
    """
    port = free_port()
    web_cfg: dict[str, Any] = {"enabled": True, "port": port, **(web or {})}
    config = write_config(
        tmp_path / "gw.yaml",
        broker.url,
        devices if devices is not None else [SMOKE],
        site={"id": "sunrise-gardens", **({"name": site_name} if site_name else {})},
        web=web_cfg,
        **(sections or {}),
    )
    if staff:
        add_staff(config)
    base = topic_base(config)
    sub = Subscriber(broker.port, f"{base}/#").start()
    proc = GatewayProc(config).start()
    scheme_ok = web_cfg.get("tls") is not None
    gw = WebGateway(config, base, port, proc, sub, broker)

    def up() -> bool:
        if scheme_ok:
            return proc.running() and "web: console and kiosk on" in proc.log()
        try:
            return HttpClient(port).get("/kiosk/lobby", timeout=1).status in (200, 404)
        except OSError:
            return False

    assert wait_for(up, timeout=15), proc.log()
    assert sub.wait(
        lambda ms: any(m.topic == f"{base}/status" and m.json()["state"] == "online" for m in ms)
    ), proc.log()
    return gw
