"""A stop signal at any moment of `gateway run` stops it cleanly, even during the start."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.process.service import serve
from gateway.process.stopsignal import STOP_SIGNALS, catch
from tests.harness import GATEWAY, demo_config
from tests.peers import free_port, wait_for


def demo_files(tmp_path: Path) -> tuple[Path, Path]:
    """The demo's config in tmp_path (own outbox and web port) and where its outbox goes."""
    return demo_config(tmp_path), tmp_path / "o.db"


def catches_sigterm(pid: int) -> bool:
    # SigCgt: the signals the process has a handler for; SIGTERM is bit 15 - 1.
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.fixture
def own_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_start_stops_before_anything_opens(
    tmp_path: Path, own_handlers: None, caplog: pytest.LogCaptureFixture, sig: signal.Signals
) -> None:
    signals = catch()
    os.kill(os.getpid(), sig)  # while `gateway run` would still be importing
    assert wait_for(lambda: signals.received, timeout=5)
    config, outbox = demo_files(tmp_path)
    loaded = load_config(config)
    with caplog.at_level(logging.INFO):
        code = serve(loaded, broker_url=f"mqtt://127.0.0.1:{free_port()}", signals=signals)
    assert code == 0
    assert f"{sig.name} during start-up: stopping before anything started" in caplog.text
    assert not outbox.exists(), "nothing was opened"


def test_sigterm_as_soon_as_the_process_can_take_it_is_a_clean_stop(tmp_path: Path) -> None:
    config, _ = demo_files(tmp_path)
    broker = f"mqtt://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [GATEWAY, "run", "-c", str(config), "--broker-url", broker],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The earliest moment a handler exists: before the config and runtime imports.
        assert wait_for(lambda: proc.poll() is not None or catches_sigterm(proc.pid), timeout=30)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err  # not -15: killed by the signal
    assert "SIGTERM" in err and "Traceback" not in err
