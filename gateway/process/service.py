"""Runs a Gateway as a process: signals, systemd notify and watchdog, exit code."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading

from gateway.config import LoadedConfig
from gateway.process.runtime import Gateway
from gateway.process.sdnotify import Notifier

__all__ = ["serve"]

log = logging.getLogger(__name__)

# After a worker thread died, how long the orderly stop may take before the process
# exits anyway: a stop that hangs must not leave the half-alive gateway running.
FAILED_STOP_S = 20.0


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


async def _main(loaded: LoadedConfig, broker_url: str | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier()
    gw = Gateway(loaded, broker_url=broker_url)

    def ready() -> None:
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
        notifier.stopping()
        stopping.cancel()
        if dog is not None:
            dog.cancel()
    return 1 if gw.failure is not None else 0


def serve(loaded: LoadedConfig, *, broker_url: str | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    return asyncio.run(_main(loaded, broker_url))
