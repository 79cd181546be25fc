"""Files only the gateway's user may read: secrets, keys, staff hashes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["write_private"]


def write_private(path: Path, data: bytes, *, owner: tuple[int, int] | None = None) -> None:
    """Write `data` to `path` with mode 0600, atomically: all of it or the old file.

    The file is created 0600, so it is never readable by others, not even before a
    chmod; it is written next to `path`, synced and renamed, so a power cut never
    leaves half a secret under the final name.  `owner` (uid, gid) hands it to the
    gateway's user when root writes it.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    # O_CREAT's mode does not apply to a leftover temporary file.  A FAT boot partition
    # (provisioning from a laptop) has no modes and refuses chmod; first boot applies
    # the modes when it moves the files to /etc.
    with contextlib.suppress(PermissionError):
        os.chmod(tmp, 0o600)
    if owner is not None:
        os.chown(tmp, *owner)
    os.replace(tmp, path)
