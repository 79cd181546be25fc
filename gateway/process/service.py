"""Runs a Gateway as a process: signals, systemd notify and watchdog, exit code."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading

from gateway.config import LoadedConfig
from gateway.process import instance
from gateway.process.runtime import Gateway
from gateway.process.sdnotify import Notifier
from gateway.process.stopsignal import StopSignals

__all__ = ["RESTART", "serve"]

# What `serve` returns when the gateway asked to be started afresh (remote configuration):
# `gateway run` then re-executes itself.  EX_TEMPFAIL, should it ever reach systemd.
RESTART = 75

log = logging.getLogger(__name__)

# After a worker thread died, how long the orderly stop may take before the process
# exits anyway: a stop that hangs must not leave the half-alive gateway running.
FAILED_STOP_S = 20.0
# The event loop (drivers), the outbox writer and the uplink share the GIL.  With
# Python's default 5 ms a committed reading waited up to 5 ms per hand-over between
# them; 1 ms cut the data age at a 1 s poll by about 40 % (docs/benchmarks.md, issue 16).
GIL_SWITCH_INTERVAL_S = 0.001


def settle_heap() -> None:
    """Take the start-up heap out of the cyclic garbage collector's full passes.

    A full (generation 2) collection visits every container object the process holds,
    and holds the GIL while it does: with modules, config models and the runtime that
    was 20 to 35 ms every 10 to 20 s under load, and an alarm that arrived then waited
    for it (p99 of the alarm latency, docs/benchmarks.md, issue 16).  Once the gateway
    runs, what start-up made lives as long as the process: collect its garbage once,
    then freeze the rest, and later full passes visit only what was made since.
    Frozen objects are still freed by reference counting; only one that later ends in
    a reference cycle stays, and there are at most as many as were frozen.
    """
    gc.collect()
    gc.freeze()


def _exit_now() -> None:
    log.critical("stopping after a thread died took over %g s; exiting now", FAILED_STOP_S)
    logging.shutdown()
    os._exit(1)


async def _watchdog(gw: Gateway, notifier: Notifier) -> None:
    # Ping at a third of the timeout, and only while the loop and the uplink are alive:
    # a hung gateway stops pinging and systemd restarts it.
    assert notifier.watchdog_s is not None
    period = notifier.watchdog_s / 3
    while True:
        await asyncio.sleep(period)
        if gw.alive():
            notifier.watchdog()
        else:
            log.error("gateway not alive (event loop or uplink stuck); withholding watchdog ping")


async def _main(loaded: LoadedConfig, broker_url: str | None, signals: StopSignals) -> int:
    stop = asyncio.Event()
    signals.attach(asyncio.get_running_loop(), stop)
    if stop.is_set():
        # Came while the config and the runtime were loading: nothing is open yet.
        assert signals.signal is not None
        log.info("%s during start-up: stopping before anything started", signals.signal.name)
        return 0
    notifier = Notifier()
    gw = Gateway(loaded, broker_url=broker_url)

    def ready() -> None:
        settle_heap()
        notifier.ready(f"{len(loaded.devices)} devices")

    gw.on_ready = ready
    dog = asyncio.create_task(_watchdog(gw, notifier)) if notifier.watchdog_s else None
    running = asyncio.create_task(gw.run(stop))
    stopping = asyncio.create_task(stop.wait())
    backstop = threading.Timer(FAILED_STOP_S, _exit_now)
    backstop.daemon = True
    try:
        await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
        if gw.failure is not None:
            backstop.start()
        await running
    finally:
        backstop.cancel()  # stopped in time
        # A restart re-executes this process (same PID): systemd hears "reloading", then
        # READY from the new program.
        if gw.restart_reason:
            notifier.send("RELOADING=1")
        else:
            notifier.stopping()
        stopping.cancel()
        if dog is not None:
            dog.cancel()
    if gw.failure is not None:
        return 1
    return RESTART if gw.restart_reason else 0


def serve(
    loaded: LoadedConfig, *, broker_url: str | None = None, signals: StopSignals | None = None
) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code.

    `signals` are the stop handlers `gateway run` installed before its imports
    (`stopsignal.catch()`); without them the handlers start with the event loop.
    """
    try:
        lock = instance.hold(loaded.config.outbox.path)
    except instance.InstanceHeld as exc:
        log.error("%s", exc)
        return 1
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        return asyncio.run(_main(loaded, broker_url, signals or StopSignals()))
    finally:
        if lock is not None:
            os.close(lock)
