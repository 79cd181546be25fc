"""A second `gateway run` on the outbox of a running gateway stops at once, saying why.

Before, both ran: they took turns on the broker under one client id and numbered their
messages from the same counter, so seq numbers repeated.  An installer who starts the
gateway by hand beside the service is the usual way there.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

from tests.harness import (
    GATEWAY,
    GatewayProc,
    Subscriber,
    simulated_meter,
    topic_base,
    write_config,
)
from tests.peers import Mosquitto, wait_for


def _second(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GATEWAY, "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"RUNTIME_DIRECTORY": str(config.parent / "run2"), "PATH": "/usr/bin:/bin"},
    )


def _started(tmp_path: Path, broker: Mosquitto) -> tuple[Path, Subscriber, GatewayProc]:
    """A gateway on one simulated meter, and a subscriber that has seen it send."""
    config = write_config(tmp_path / "gw.yaml", broker.url, [simulated_meter("m-1", 5)])
    sub = Subscriber(broker.port, f"{topic_base(config)}/devices/+/telemetry").start()
    first = GatewayProc(config).start()
    if not sub.wait(lambda ms: len(ms) >= 3, timeout=30):
        first.kill()
        raise AssertionError(first.log())
    return config, sub, first


def test_a_second_gateway_on_the_same_outbox_is_refused_and_the_first_goes_on(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config, sub, first = _started(tmp_path, broker)
    try:
        second = _second(config)
        assert second.returncode == 1, second.stderr
        assert f"another gateway process (pid {first.proc.pid})" in second.stderr  # type: ignore[union-attr]
        assert str(tmp_path / "outbox.db") in second.stderr
        assert "Traceback" not in second.stderr
        seen = len(sub.snapshot())
        assert sub.wait(lambda ms: len(ms) >= seen + 10, timeout=30), "the first went on"
        assert first.running()
    finally:
        assert first.terminate() == 0
        sub.stop()
    seqs = [json.loads(m.payload)["seq"] for m in sub.snapshot()]
    assert [s for s, n in Counter(seqs).items() if n > 1] == [], "every seq once"


def test_a_gateway_killed_with_sigkill_leaves_no_lock_behind(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config, sub, first = _started(tmp_path, broker)
    first.kill()
    assert (tmp_path / "outbox.db.lock").exists()
    again = GatewayProc(config).start()
    try:
        seen = len(sub.snapshot())
        assert wait_for(lambda: len(sub.snapshot()) >= seen + 5, timeout=30), again.log()
    finally:
        assert again.terminate() == 0
        sub.stop()
