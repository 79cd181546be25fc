"""The staff console and the kiosk in headless Chromium (Debian's), driven by Playwright,
against a real gateway process and a real Mosquitto.

Set SCREENSHOTS_DIR (e.g. docs/screenshots) to save the screenshots of both screens.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import GatewayProc
from tests.peers import Mosquitto, free_port, wait_for
from tests.web_harness import (
    SMOKE,
    STAFF_ID,
    STAFF_PIN,
    HttpClient,
    WebGateway,
    shanghai_time,
    start_web_gateway,
)

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium"),
]
SHOTS = os.environ.get("SCREENSHOTS_DIR")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield b
        b.close()


@pytest.fixture
def gw(tmp_path: Path, broker: Mosquitto) -> Iterator[WebGateway]:
    # The console in its default language (zh); times in the building's zone, far from UTC.
    g = start_web_gateway(
        tmp_path,
        broker,
        web={"signin": {"max_failures": 3, "lockout_s": 30}, "timezone": "Asia/Shanghai"},
        site_name="Sunrise Gardens",
    )
    yield g
    g.stop()


# The contexts a test opened, closed after it by `_close_pages`: a page left open in
# the module's browser kept its timers and its event stream (reconnecting to a gateway
# long stopped) running through every later test, costing CPU.
_opened: list[Any] = []


@pytest.fixture(autouse=True)
def _close_pages() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def _page(browser: Any, width: int = 1024, height: int = 768) -> Any:
    ctx = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN")
    _opened.append(ctx)
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.js_errors = errors
    return page


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def _retained(port: int, topic: str, timeout: float = 5) -> list[dict[str, Any]]:
    """The retained documents under `topic` as a new subscriber receives them."""
    got: list[dict[str, Any]] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = lambda _c, _u, m: got.append(json.loads(m.payload)) if m.retain else None
    c.connect("127.0.0.1", port)
    c.subscribe(topic, qos=1)
    c.loop_start()
    try:
        wait_for(lambda: bool(got), timeout=timeout)
    finally:
        c.disconnect()
        c.loop_stop()
    return got


def _sign_in(page: Any, gw: WebGateway, secret: str = STAFF_PIN) -> None:
    page.goto(f"{gw.url}/signin")
    page.fill("input[name=staff_id]", STAFF_ID)
    page.fill("input[name=secret]", secret)
    page.click("button[type=submit]")


def test_staff_sees_the_smoke_alarm_live_and_acknowledges_it(browser: Any, gw: WebGateway) -> None:
    page = _page(browser, 1280, 720)
    page.clock.install()  # the page's own timers, so the test can move its time on
    page.goto(f"{gw.url}/console")
    assert page.url.endswith("/signin")  # no session: the console is not shown
    _sign_in(page, gw)
    page.wait_for_url(re.compile(r"/console$"))
    page.wait_for_selector("#live:not(.off)")  # the event stream is open
    kiosk = _page(browser)
    kiosk.goto(f"{gw.url}/kiosk/lobby?lang=zh")
    assert kiosk.locator("#banner").is_hidden()

    reply = gw.command("devices/smoke-b2-stair-2/inject", {"type": "smoke.alarm"})
    assert reply["ok"], reply
    # Appears without a reload: the page is the same one, updated by server-sent events.
    row = page.locator("#alarms [data-alarm]")
    row.wait_for()
    assert "火警" in row.inner_text() and "危急" in row.inner_text()  # zh by default
    assert "烟雾报警" in row.inner_text()  # the cause, not only the type
    assert "2号楼 / 2层 / stairwell" in row.inner_text()
    alarm_id = row.get_attribute("data-alarm")
    # "Since" in the gateway's zone, the UTC instant in the attributes, and the age,
    # which the page's script keeps current.
    since = row.locator(".when time")
    iso = since.get_attribute("datetime")
    assert iso and iso.endswith("Z") and since.get_attribute("title") == iso
    assert since.inner_text() == shanghai_time(iso)
    assert row.locator(".ago").inner_text() in ("刚刚", "10 秒前", "11 秒前", "12 秒前")
    device = page.locator('#devices tr[data-device="smoke-b2-stair-2"] td.when')
    device.locator("time").wait_for()
    # The Chinese console in Chinese: the site's name, the device's kind and last value.
    assert "Sunrise Gardens" in page.inner_text("header h1")
    assert page.title() == "(1) ⚠ 火警 · Sunrise Gardens · 楼宇值班台"  # attention
    device_row = page.inner_text('#devices tr[data-device="smoke-b2-stair-2"]')
    assert "烟感" in device_row and "烟雾报警" in device_row, device_row
    assert device.locator("time").inner_text() == shanghai_time(
        device.locator("time").get_attribute("datetime") or ""
    )
    # The kiosk shows the building-wide fire alarm: type and place, no unit.
    kiosk.locator("#banner").wait_for(state="visible")
    banner = kiosk.inner_text("#banner")
    assert "火警：2号楼 2层" in banner and "stairwell" not in banner
    _shot(kiosk, "kiosk-fire-banner")

    # 80 s on: ages move on (less than the 90 s after which a silent stream is replaced,
    # which would set the page's clock by the gateway's again).
    page.clock.fast_forward("01:20")
    assert row.locator(".ago").inner_text() == "1 分钟前"
    assert device.locator(".ago").inner_text() == "1 分钟前"
    _shot(page, "console-alarm")

    row.locator("input[name=note]").fill("on my way <b>now</b>")
    row.locator("form.ack button").click()
    page.wait_for_selector(f'#alarms [data-alarm="{alarm_id}"].state-acknowledged')
    text = page.inner_text(f'#alarms [data-alarm="{alarm_id}"]')
    assert "staff-li：on my way <b>now</b>" in text  # shown as text, not as markup
    _shot(page, "console-acknowledged")

    def acked() -> bool:
        docs = _retained(gw.broker.port, f"{gw.base}/alarms/{alarm_id}", timeout=2)
        return bool(docs) and docs[-1]["state"] == "acknowledged"

    assert wait_for(acked, timeout=15), gw.proc.log()
    doc = _retained(gw.broker.port, f"{gw.base}/alarms/{alarm_id}")[-1]
    assert doc["ack"]["by"] == STAFF_ID and doc["ack"]["via"] == "web"
    assert doc["ack"]["note"] == "on my way <b>now</b>"
    # A reload renders the acknowledged alarm server-side, escaped.
    page.reload()
    assert "on my way <b>now</b>" in page.inner_text(f'#alarms [data-alarm="{alarm_id}"]')
    # The switch to English, kept for the next pages of this browser.
    page.click("header a.lang")
    row = page.locator(f'#alarms [data-alarm="{alarm_id}"]')
    assert "fire" in row.inner_text() and "acknowledged" in row.inner_text()
    assert "Bldg 2 / fl. 2 / stairwell" in row.inner_text()
    page.goto(f"{gw.url}/console")
    assert "Building console" in page.inner_text("h1")
    page.locator("#live:not(.off)").wait_for()
    assert page.inner_text("#live") == "live"
    _shot(page, "console-en")
    assert page.js_errors == [] and kiosk.js_errors == []


def test_wrong_pin_is_refused_and_then_rate_limited(browser: Any, gw: WebGateway) -> None:
    page = _page(browser)
    for _ in range(3):
        _sign_in(page, gw, secret="999999")
        assert page.inner_text(".error") == "工号或 PIN 错误。"
    _sign_in(page, gw)  # the right PIN is refused while locked
    assert "失败次数过多" in page.inner_text(".error")
    page.goto(f"{gw.url}/console")
    assert page.url.endswith("/signin")


def test_a_state_change_without_the_csrf_token_is_refused(browser: Any, gw: WebGateway) -> None:
    page = _page(browser)
    _sign_in(page, gw)
    page.wait_for_url(re.compile(r"/console$"))
    # The page's own script could post; a post that lacks the token is refused.
    statuses = page.evaluate(
        """async () => {
            const post = (headers) => fetch('/console/alarms/x-1/ack', {method: 'POST',
                headers: headers, body: new URLSearchParams({note: 'x'})});
            const none = await post({});
            const wrong = await post({'X-CSRF-Token': 'forged'});
            const out = await fetch('/signout', {method: 'POST', body: new URLSearchParams()});
            return [none.status, wrong.status, out.status];
        }"""
    )
    assert statuses == [403, 403, 403]
    page.goto(f"{gw.url}/console")
    assert page.url.endswith("/console")  # still signed in: the sign-out was refused


def _file_repair(page: Any, gw: WebGateway) -> str:
    page.goto(f"{gw.url}/kiosk/lobby")
    _shot(page, "kiosk-home")
    page.click("a.cat-repair")
    page.fill("input[name=flat]", "2-301")
    page.fill("textarea[name=text]", "厨房水龙头漏水")
    _shot(page, "kiosk-form")
    page.locator("button.send").first.click()
    code: str = page.inner_text("#code")
    assert re.fullmatch(r"[34679ACDEFGHJKMNPQRTUVWXY]{6}", code), code
    _shot(page, "kiosk-code")
    return code


def _check_status(page: Any, gw: WebGateway, code: str) -> str:
    """Enter the code on the kiosk's keypad, as a resident would, and read the progress."""
    page.goto(f"{gw.url}/kiosk/lobby/status?lang=en")
    for ch in code:
        page.click(f'.keypad button[data-key="{ch}"]')
    assert page.input_value("#code-input") == code
    page.click("form.lookup button[type=submit]")
    result: str = page.inner_text("#result")
    return result


def test_a_resident_files_a_repair_and_sees_the_platform_status(
    browser: Any, gw: WebGateway
) -> None:
    page = _page(browser)
    code = _file_repair(page, gw)
    topic = f"{gw.base}/requests/{code}"
    assert gw.sub.wait(lambda ms: any(m.topic == topic for m in ms)), gw.proc.log()
    doc = next(m for m in gw.sub.snapshot() if m.topic == topic).json()
    assert (doc["category"], doc["flat"], doc["text"], doc["lang"]) == (
        "repair",
        "2-301",
        "厨房水龙头漏水",
        "zh",
    )
    assert "Sent" in _check_status(page, gw, code)
    reply = gw.command(f"requests/{code}/status", {"status": "assigned", "note": "15:00"})
    assert reply["ok"], reply
    result = _check_status(page, gw, code)
    assert "Someone is assigned" in result and "15:00" in result
    _shot(page, "kiosk-status")
    assert page.js_errors == []


def test_a_request_filed_while_the_broker_is_down_arrives_later(
    browser: Any, gw: WebGateway
) -> None:
    gw.broker.stop()
    page = _page(browser)
    code = _file_repair(page, gw)  # the kiosk works offline: the code is shown at once
    assert "已提交" in page.inner_text("#history")
    gw.broker.start()
    topic = f"{gw.base}/requests/{code}"
    assert gw.sub.wait(lambda ms: any(m.topic == topic for m in ms), timeout=30), gw.proc.log()
    assert gw.command(f"requests/{code}/status", {"status": "done"}, timeout=30)["ok"]
    assert "Done" in _check_status(page, gw, code)


README = Path(__file__).resolve().parents[1] / "README.md"
DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo"


@pytest.mark.slow
def test_the_readmes_demo_sign_in_works_on_a_fresh_clone(browser: Any, tmp_path: Path) -> None:
    # The credentials as the README gives them, so the test fails when the two disagree.
    found = re.search(r"staff `([\w.-]+)`, PIN (\w+)", README.read_text())
    assert found, "README no longer names the demo's staff id and PIN"
    staff_id, pin = found.groups()
    # A copy of the demo's config on a free port; its state folder starts empty, as in a
    # fresh clone.
    port = free_port()
    src = DEMO.parents[1] / "config" / "demo.yaml"
    config = tmp_path / "demo.yaml"
    config.write_text(re.sub(r"(?m)^  port: 8080$", f"  port: {port}", src.read_text()))
    assert f"port: {port}" in config.read_text()
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(DEMO)],
            env={**os.environ, "DEMO_CONFIG": str(config), "DEMO_SECONDS": "120"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        client = HttpClient(port)

        def up() -> bool:
            try:
                return client.get("/signin", timeout=1).status == 200
            except OSError:
                return False

        assert wait_for(up, timeout=60), log.read_text(errors="replace")
        page = _page(browser, 390, 844)
        page.goto(f"http://127.0.0.1:{port}/signin")
        page.fill("input[name=staff_id]", staff_id)
        page.fill("input[name=secret]", pin)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/console$"))
        page.locator("#live:not(.off)").wait_for()
        assert f"PIN {pin}" in log.read_text(errors="replace")  # what the script prints
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


# ---- phones ---------------------------------------------------------------------------

_LAYOUT = """() => {
    // Lines of text in an element: the distinct tops of its text's boxes, per text node.
    const lines = (el) => {
        const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
        let most = 0;
        for (let n = walk.nextNode(); n; n = walk.nextNode()) {
            if (!n.textContent.trim()) continue;
            const r = document.createRange(); r.selectNodeContents(n);
            const tops = new Set([...r.getClientRects()].map((b) => Math.round(b.top)));
            most = Math.max(most, tops.size);
        }
        return most;
    };
    const heads = [...document.querySelectorAll('h1, h2, h3, th, .badge, .cell')]
        .filter((el) => el.offsetParent !== null && el.textContent.trim().length >= 2)
        .map((el) => [el.textContent.trim(), lines(el)]);
    return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth, heads};
}"""


def _assert_fits(page: Any) -> None:
    """No horizontal overflow, and no heading broken one character per line."""
    got = page.evaluate(_LAYOUT)
    assert got["scroll"] <= got["inner"], got
    for text, lines in got["heads"]:
        assert lines <= 2 and lines < len(text), (text, lines)


def _in_view(page: Any, selector: str) -> dict[str, float]:
    box: dict[str, float] = page.locator(selector).first.bounding_box()
    size = page.viewport_size
    assert box["x"] >= 0 and box["x"] + box["width"] <= size["width"], box
    assert box["y"] >= 0 and box["y"] + box["height"] <= size["height"], box
    return box


@pytest.mark.parametrize("width", [390, 360])
def test_the_console_on_a_phone_shows_alarm_cards_with_the_ack_in_reach(
    browser: Any, gw: WebGateway, width: int
) -> None:
    page = _page(browser, width, 844)
    _sign_in(page, gw)
    page.wait_for_url(re.compile(r"/console$"))
    page.wait_for_selector("#live:not(.off)")
    assert gw.command("devices/smoke-b2-stair-2/inject", {"type": "smoke.alarm"})["ok"]
    card = page.locator("#alarms [data-alarm]")
    card.wait_for()
    _assert_fits(page)
    # The first alarm's acknowledge button is on the first screen, without scrolling,
    # wide and tall enough for a thumb.
    box = _in_view(page, "#alarms form.ack button")
    assert box["height"] >= 44 and box["width"] >= width * 0.7, box
    if width == 390:
        _shot(page, "console-phone-zh")
    page.click("header a.lang")
    page.wait_for_selector("#alarms [data-alarm]")
    _assert_fits(page)
    if width == 390:
        _shot(page, "console-phone-en")
    assert page.js_errors == []


# ---- a console that loses its stream ----------------------------------------------------


def _start_again(gw: WebGateway) -> None:
    gw.proc = GatewayProc(gw.config).start()

    def up() -> bool:
        try:
            return gw.client().get("/kiosk/lobby", timeout=1).status == 200
        except OSError:
            return False

    assert wait_for(up, timeout=20), gw.proc.log()


def test_a_console_open_across_a_gateway_restart_shows_the_alarm_raised_meanwhile(
    browser: Any, gw: WebGateway
) -> None:
    page = _page(browser, 390, 844)
    _sign_in(page, gw)
    page.wait_for_url(re.compile(r"/console$"))
    page.wait_for_selector("#live:not(.off)")
    page.evaluate("window.openedBefore = true")  # gone if the page were reloaded
    assert gw.proc.terminate() == 0
    # Not live: the page says so over everything, not in a small badge.
    page.wait_for_selector("#stale", state="visible")
    assert page.evaluate("document.body.classList.contains('is-stale')")
    assert page.locator("#devices .ago").first.is_hidden()  # no "just now" on a dead page
    assert "最后一次更新" in page.inner_text("#stale")
    _shot(page, "console-phone-stale")
    _start_again(gw)
    assert gw.command("devices/smoke-b2-stair-2/inject", {"type": "smoke.alarm"})["ok"]
    page.locator("#alarms [data-alarm]").wait_for(timeout=30_000)
    assert page.locator("#stale").is_hidden() and page.evaluate("window.openedBefore")
    assert page.url.endswith("/console")


def test_a_console_whose_session_ends_goes_visibly_to_sign_in(browser: Any, gw: WebGateway) -> None:
    page = _page(browser)
    _sign_in(page, gw)
    page.wait_for_url(re.compile(r"/console$"))
    page.wait_for_selector("#live:not(.off)")
    other = page.context.new_page()  # the same browser, another tab: signs out
    other.goto(f"{gw.url}/console")
    other.click("header form button")
    other.wait_for_url(re.compile(r"/signin$"))
    page.wait_for_url(re.compile(r"/signin$"), timeout=30_000)


def test_an_ack_after_the_session_ended_says_so_in_words(browser: Any, gw: WebGateway) -> None:
    page = _page(browser)
    _sign_in(page, gw)
    page.wait_for_url(re.compile(r"/console$"))
    page.wait_for_selector("#live:not(.off)")
    assert gw.command("devices/smoke-b2-stair-2/inject", {"type": "smoke.alarm"})["ok"]
    page.locator("#alarms [data-alarm]").wait_for()
    # The session ends without the page's stream noticing first: the cookie is gone.
    page.context.clear_cookies()
    page.route("**/console/events", lambda route: route.abort())  # keep the page here
    page.locator("#alarms form.ack button").click()
    msg = page.locator("#alarms .ack-msg")
    msg.wait_for(state="visible")
    assert msg.inner_text() == "登录已失效，请重新登录。", msg.inner_text()
    page.wait_for_url(re.compile(r"/signin$"))  # then to the sign-in page


# ---- the kiosk --------------------------------------------------------------------------


def test_the_kiosk_on_a_phone_fits_and_shows_the_result_above_the_fold_with_the_fire_banner(
    browser: Any, gw: WebGateway
) -> None:
    assert gw.command("devices/smoke-b2-stair-2/inject", {"type": "smoke.alarm"})["ok"]
    page = _page(browser, 390, 844)
    page.goto(f"{gw.url}/kiosk/lobby")
    page.locator("#banner").wait_for(state="visible")
    _assert_fits(page)
    code = _file_repair(page, gw)
    _assert_fits(page)
    _shot(page, "kiosk-phone-code")
    for lang in ("zh", "en"):
        page.goto(f"{gw.url}/kiosk/lobby/status?lang={lang}&code={code}")
        page.locator("#banner").wait_for(state="visible")
        _assert_fits(page)
        _in_view(page, "#result .code")
        _in_view(page, "#history li")
        _shot(page, f"kiosk-phone-status-{lang}")
    assert page.js_errors == []


def test_the_kiosk_keeps_a_residents_typing_and_warns_before_going_home(
    browser: Any, gw: WebGateway
) -> None:
    page = _page(browser, 390, 844)
    page.clock.install()
    page.goto(f"{gw.url}/kiosk/lobby/new/repair?lang=en")
    # With the script there is no meta refresh (it is only in <noscript>).
    assert page.evaluate("document.querySelector('meta[http-equiv=refresh]')") is None
    page.fill("textarea[name=text]", "The kitchen tap")
    for _ in range(3):  # 6 minutes of slow typing: never thrown away
        page.clock.run_for(100_000)
        page.type("textarea[name=text]", ".")
    assert page.url.endswith("/new/repair?lang=en")
    # Then nothing: a warning with a way to stay, 20 s before going home.
    page.clock.run_for(101_000)
    dialog = page.locator("#idle")
    assert dialog.is_visible() and "back to the start in" in dialog.inner_text()
    _in_view(page, "#idle-more")
    _shot(page, "kiosk-phone-timeout-warning")
    page.click("#idle-more")
    assert dialog.is_hidden()
    page.clock.run_for(100_000)
    assert page.input_value("textarea[name=text]") == "The kitchen tap..."
    home = re.compile(r"/kiosk/lobby\?lang=en$")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if home.search(r.url) else None)
    page.clock.run_for(30_000)  # ten seconds of ticks past the time to go home
    page.wait_for_url(home)
    assert len(asked) == 1, asked  # asked for once, not again at every tick


def test_without_javascript_the_kiosk_form_goes_home_only_after_ten_minutes(
    browser: Any, gw: WebGateway
) -> None:
    ctx = browser.new_context(java_script_enabled=False)
    page = ctx.new_page()
    page.goto(f"{gw.url}/kiosk/lobby/new/repair?lang=zh")
    refresh = page.locator("meta[http-equiv=refresh]").get_attribute("content")
    assert refresh == "600;url=/kiosk/lobby?lang=zh"
    page.goto(f"{gw.url}/kiosk/lobby/status?lang=zh")
    assert page.locator("meta[http-equiv=refresh]").get_attribute("content").startswith("120;")
    ctx.close()


def test_the_code_page_shows_the_platforms_progress_without_a_reload(
    browser: Any, gw: WebGateway
) -> None:
    page = _page(browser)
    page.clock.install()
    code = _file_repair(page, gw)
    page.evaluate("window.samePage = true")
    assert gw.command(f"requests/{code}/status", {"status": "assigned", "note": "15:00"})["ok"]

    def shown() -> bool:
        page.clock.run_for(16_000)
        return "已安排人员" in page.inner_text("#history")

    assert wait_for(shown, timeout=15, interval=0.5)
    assert page.evaluate("window.samePage")


# ---- staff who are not looking -----------------------------------------------------------

# The Notification API as the page sees it, recording what it shows and closes (headless
# Chromium shows nothing a test could read).
_NOTIFICATIONS = """
window.shown = [];
window.Notification = class {
    constructor(title, options) { this.title = title; this.options = options;
        this.closed = false; window.shown.push(this); }
    close() { this.closed = true; }
    static get permission() { return "granted"; }
    static requestPermission() { return Promise.resolve("granted"); }
};
"""


def test_a_new_or_escalated_alarm_calls_for_attention_until_acknowledged(
    browser: Any, tmp_path: Path, broker: Mosquitto
) -> None:
    gw = start_web_gateway(
        tmp_path,
        broker,
        web={"timezone": "Asia/Shanghai"},
        site_name="阳光花园",
        sections={"alarms": {"escalation": {"critical": 4}}},
    )
    try:
        page = _page(browser, 1280, 800)
        page.add_init_script(_NOTIFICATIONS)
        page.clock.install()  # the page's timers (the beeps), moved on by the test

        def until(js: str) -> None:
            # wait_for_function evaluates a string, which the page's CSP forbids.
            assert wait_for(lambda: page.evaluate(js), timeout=15), js

        def beeps() -> int:
            return int(page.evaluate("Number(document.documentElement.dataset.beeps || 0)"))

        _sign_in(page, gw)
        page.wait_for_url(re.compile(r"/console$"))
        page.wait_for_selector("#live:not(.off)")
        assert "阳光花园" in page.inner_text("header h1")  # the site's name, not its id
        title = page.title()
        assert title == "阳光花园 · 楼宇值班台"
        page.click("#alerts")  # the gesture browsers want before a page may make sound
        assert page.inner_text("#alerts") == "声音提醒已开启"

        assert gw.command("devices/smoke-b2-stair-2/inject", {"type": "smoke.alarm"})["ok"]
        until("document.title.startsWith('(1) ⚠ 火警')")
        assert page.get_attribute("html", "data-attention") == "on"
        assert page.get_attribute('link[rel="icon"]', "href") == "/static/icon-alarm.svg"
        until("Number(document.documentElement.dataset.beeps) >= 1")
        page.clock.run_for(4_100)
        assert beeps() >= 2  # again and again until someone acknowledges
        first = page.evaluate("window.shown.map((n) => [n.title, n.options.body])")
        assert first[0][0] == "新报警：火警" and "烟雾报警" in first[0][1], first
        assert "阳光花园" in first[0][1] and "2号楼" in first[0][1]
        # Unacknowledged for the severity's time: escalated, shown again.
        until("window.shown.some((n) => n.title.startsWith('报警升级'))")
        assert "已升级 1 次" in page.inner_text("#alarms [data-alarm]")
        page.locator("#alarms form.ack button").click()
        page.wait_for_selector("#alarms .state-acknowledged")
        until("document.documentElement.dataset.attention === 'off'")
        assert page.title() == title
        assert page.get_attribute('link[rel="icon"]', "href") == "/static/icon.svg"
        assert page.evaluate("window.shown.every((n) => n.closed)")
        silent = beeps()
        page.clock.run_for(20_000)
        assert beeps() == silent  # the acknowledgement silenced it
        assert page.js_errors == []
    finally:
        gw.stop()


# ---- the building view ------------------------------------------------------------------

METER = {
    "id": "meter-b2-201-water",
    "kind": "meter",
    "name": "Flat 2-201 water",
    "location": {"building": "2", "floor": 2, "unit": "201"},
    "driver": {"type": "simulated", "profile": "household_water", "telemetry_interval_s": 2},
}


def _a_day_of_water(state: Path, now_value: float) -> None:
    """The meter history the gateway kept before a restart: a day of a household's water,
    ending where the meter stands now."""
    now = int(time.time()) // 900
    uses = []
    for b in range(now - 96, now):
        hour = (b * 900 // 3600 + 8) % 24  # Shanghai
        uses.append(0.02 if hour in (7, 8, 19, 20, 21) else 0.001 if hour > 5 else 0.0)
    value = now_value - sum(uses)
    points = []
    for b, use in zip(range(now - 96, now), uses, strict=True):
        value += use
        points.append([b, round(value, 4)])
    doc = {
        "version": 1,
        "bucket_s": 900,
        "series": [{"device": METER["id"], "name": "volume", "unit": "m³", "points": points}],
    }
    (state / "web-meters.json").write_text(json.dumps(doc))


def test_the_building_view_colours_each_place_and_opens_its_devices_alarms_and_meters(
    browser: Any, tmp_path: Path, broker: Mosquitto
) -> None:
    state = tmp_path / "state"
    gw = start_web_gateway(
        tmp_path,
        broker,
        web={"timezone": "Asia/Shanghai"},
        devices=[SMOKE, METER],
        site_name="阳光花园",
        sections={"gateway": {"state_dir": str(state)}},
    )
    try:
        c = gw.client()
        assert c.sign_in().status == 303

        def volume() -> float | None:
            for d in c.get("/console/state").json()["devices"]:
                for name, value, _unit in d.get("last_readings") or []:
                    if d["id"] == METER["id"] and name == "volume":
                        return float(value)
            return None

        assert wait_for(lambda: volume() is not None, timeout=15), gw.proc.log()
        now_value = volume() or 0.0
        assert gw.proc.terminate() == 0  # the history is saved at the stop ...
        saved = json.loads((state / "web-meters.json").read_text())
        assert saved["series"][0]["device"] == METER["id"]
        _a_day_of_water(state, now_value)  # ... and here replaced by a whole day
        _start_again(gw)
        page = _page(browser, 390, 844)
        _sign_in(page, gw)
        page.wait_for_url(re.compile(r"/console$"))
        page.wait_for_selector("#live:not(.off)")
        stair = page.locator('#building [data-place="2|2|stairwell"]')
        flat = page.locator('#building [data-place="2|2|201"]')
        assert "place-fine" in (stair.get_attribute("class") or "")
        assert gw.command("devices/smoke-b2-stair-2/inject", {"type": "smoke.alarm"})["ok"]
        page.wait_for_selector('#building [data-place="2|2|stairwell"].place-alarm')
        assert "place-fine" in (flat.get_attribute("class") or "")
        _assert_fits(page)
        # The flat: its meter's last 24 hours, from the kept history and live readings.
        flat.click()
        page.wait_for_url(re.compile(r"/console/place\?"))
        assert "2号楼 / 2层 / 201" in page.inner_text("main h2")
        chart = page.locator("figure.usage")
        assert "用水量" in chart.inner_text() and "24 小时共" in chart.inner_text()
        assert chart.locator("rect").count() >= 90
        _assert_fits(page)
        _shot(page, "console-phone-flat")
        # The stairwell: its alarm, acknowledged from there (a plain form post).
        page.goto(f"{gw.url}/console")
        stair.click()
        page.wait_for_url(re.compile(r"/console/place\?"))
        assert "烟雾报警" in page.inner_text("#alarms")
        page.locator("#alarms form.ack button").click()
        page.wait_for_url(re.compile(r"/console$"))
        page.wait_for_selector('#building [data-place="2|2|stairwell"].place-acknowledged')
        assert page.js_errors == []
    finally:
        gw.stop()


def test_a_console_stream_silent_for_90_s_is_replaced(browser: Any, gw: WebGateway) -> None:
    page = _page(browser)
    page.clock.install()
    opened: list[str] = []
    page.on("request", lambda r: opened.append(r.url) if r.url.endswith("/events") else None)
    _sign_in(page, gw)
    page.wait_for_url(re.compile(r"/console$"))
    page.wait_for_selector("#live:not(.off)")
    assert len(opened) == 1
    page.clock.run_for(60_000)
    assert len(opened) == 1  # heard from recently enough: kept
    page.clock.run_for(45_000)
    assert wait_for(lambda: len(opened) == 2, timeout=5)
    page.wait_for_selector("#live:not(.off)")
    assert page.js_errors == []
