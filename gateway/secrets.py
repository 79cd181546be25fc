"""Secrets in the config: a reference to a file or an environment variable, never inline.

Kept apart from `gateway.config` so that config models of other packages (the sinks)
can use it without importing the whole config module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["SecretRef", "refuse_inline"]


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
        return self.file.read_text(encoding="utf-8").rstrip("\r\n")


def refuse_inline(value: Any) -> Any:
    """A `mode="before"` field validator for SecretRef fields: a plain string is refused."""
    if isinstance(value, str):
        raise ValueError("secrets are never written inline; use {file: PATH} or {env: VARIABLE}")
    return value
