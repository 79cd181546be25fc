"""`gateway check` as a whole: every check of gateway/install/checks.py in its order."""

from __future__ import annotations

from pathlib import Path

from community_protocol.topics import Topics
from gateway.config import LoadedConfig

from .checks import (
    CheckResult,
    check_broker,
    check_clock,
    check_config,
    check_devices,
    check_outbox_dir,
    check_serial_ports,
)

__all__ = ["run_all", "run_before_devices"]


def run_before_devices(path: Path) -> tuple[list[CheckResult], LoadedConfig | None, list[str]]:
    """Every check but the device reads, in order; the results, the config, its problems.

    Blocking (the broker's checks take up to a few seconds); `cmd/diag/check` runs it
    in a thread of the running gateway and reads the devices its own way.
    """
    config_result, loaded, problems = check_config(path)
    if loaded is None:
        return [config_result], None, problems
    cfg = loaded.config
    results = [config_result, check_outbox_dir(loaded), check_clock(loaded)]
    results += check_broker(cfg.broker, Topics(cfg.broker.topic_prefix, cfg.identity))
    results += check_serial_ports(loaded)
    return results, loaded, []


def run_all(path: Path) -> tuple[list[CheckResult], list[str]]:
    """Every check in order; returns the results and the config's problem lines, if any."""
    results, loaded, problems = run_before_devices(path)
    if loaded is None:
        return results, problems
    return results + check_devices(loaded), []
