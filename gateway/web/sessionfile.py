"""Console sessions across restarts: saved to a private file (keys, never tokens), taken back at start."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

from gateway.sdk.files import write_private
from gateway.web.auth import DeviceTrust, SessionStore

__all__ = ["SessionKeeper"]

log = logging.getLogger(__name__)

# Sessions are saved within a second of a sign-in or sign-out, and their idle times
# every minute (a restart may give a session back up to a minute of idle time).
_SESSIONS_CHECK_S = 1.0
_SESSIONS_SAVE_S = 60.0


class SessionKeeper:
    """Keeps `sessions` and the trusted sign-in devices in `path` (None: not kept)."""

    def __init__(self, sessions: SessionStore, devices: DeviceTrust, path: Path | None) -> None:
        self.sessions = sessions
        self.devices = devices
        self.path = path
        self._saved = sessions.version

    def load(self) -> None:
        """Take back the sessions saved before a restart; a bad file only signs staff out."""
        path = self.path
        if path is None:
            return
        try:
            doc = json.loads(path.read_text("utf-8"))
            n = self.sessions.restore(doc)
            self.devices.restore(doc.get("devices", []))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("web: sessions in %s not restored, staff sign in again: %s", path, exc)
            return
        self._saved = self.sessions.version
        log.info("web: %d console sessions restored", n)

    async def save(self) -> None:
        """Write the live sessions (keys, never tokens) to the sessions file."""
        path = self.path
        if path is None:
            return
        version = self.sessions.version
        doc = {**self.sessions.dump(), "devices": self.devices.dump()}
        data = json.dumps(doc, separators=(",", ":")).encode()
        try:
            await asyncio.to_thread(_write_private_in, path, data)
        except OSError as exc:
            log.warning(
                "web: cannot save sessions to %s (a restart signs staff out): %s", path, exc
            )
            return
        self._saved = version

    async def keep(self) -> None:
        """Save the sessions soon after a sign-in or sign-out, and their idle times now and then."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(_SESSIONS_CHECK_S)
            now = time.monotonic()
            # Idle times only while there are sessions: no writes to the card for nothing.
            stale = len(self.sessions) > 0 and now - last >= _SESSIONS_SAVE_S
            if self.sessions.version != self._saved or stale:
                await self.save()
                last = now


def _write_private_in(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, data)
