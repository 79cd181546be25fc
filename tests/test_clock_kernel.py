"""The kernel's clock check: asked once a second for as long as a gateway runs.

It used to find libc with `ctypes.util.find_library`, which runs `/sbin/ldconfig -p`
in a child process: a fork of the gateway every second.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
from typing import Any

import pytest

from gateway.sdk.clock import _TIME_ERROR, Clock, ClockCheck
from gateway.sdk.model import ClockState


def test_the_kernel_check_starts_no_process_and_says_what_the_kernel_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[Any] = []
    real_popen = subprocess.Popen

    def recording(*args: Any, **kwargs: Any) -> Any:
        started.append(args[0] if args else kwargs.get("args"))
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording)
    clock = Clock(ClockCheck.KERNEL)
    answers = []
    for _ in range(5):
        clock._checked = -1.0  # as if a second had passed: ask the kernel again
        answers.append(clock.state())
    assert started == [], f"the clock check started {started}"
    state = ctypes.CDLL(None).adjtimex(ctypes.create_string_buffer(512))
    synced = state >= 0 and state != _TIME_ERROR
    assert answers == [ClockState.SYNCED if synced else ClockState.UNSYNCED] * 5


def test_a_gateway_that_trusts_its_clock_does_not_load_ctypes() -> None:
    code = (
        "import sys\n"
        "from gateway.sdk.clock import Clock, ClockCheck\n"
        "assert Clock(ClockCheck.TRUST).state() == 'synced'\n"
        "print('ctypes' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
