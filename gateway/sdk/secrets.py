"""Secrets in the config: a reference to a file or an environment variable, never inline.

Kept apart from `gateway.config` so that config models of other packages (the sinks)
can use it without importing the whole config module.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["MAX_SECRET_BYTES", "SecretRef", "refuse_inline"]


class SecretRef(BaseModel):
    """A secret read from a file or an environment variable, never written inline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: Path | None = None
    env: str | None = None

    def model_post_init(self, _: Any) -> None:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of 'file' or 'env'")

    def read(self) -> str:
        """The secret's value, without a trailing newline."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise LookupError(f"environment variable {self.env} is not set")
            return value
        assert self.file is not None
        return _read_secret_file(self.file).rstrip("\r\n")


# A password, token or key is a line of text; a bigger file is the wrong file.
MAX_SECRET_BYTES = 64 * 1024


def _read_secret_file(path: Path) -> str:
    """The text of a secret file; OSError (with a message to act on) for anything else.

    Only a regular file is opened: /dev/zero would be read forever, a FIFO waits for
    a writer.  Non-UTF-8 bytes are an OSError too, so callers catching it need nothing
    more.
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(f"{path} is not a regular file")
    with open(path, "rb") as f:
        data = f.read(MAX_SECRET_BYTES + 1)
    if len(data) > MAX_SECRET_BYTES:
        raise OSError(f"{path} is larger than {MAX_SECRET_BYTES // 1024} KiB; not a secret")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise OSError(f"{path} is not UTF-8 text") from None


def refuse_inline(value: Any) -> Any:
    """A `mode="before"` field validator for SecretRef fields: a plain string is refused."""
    if isinstance(value, str):
        raise ValueError("secrets are never written inline; use {file: PATH} or {env: VARIABLE}")
    return value
