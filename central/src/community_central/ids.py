"""The identifier rule of the contract (site, gateway, alarm and team ids)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

__all__ = ["ID_PATTERN", "Id"]

# A site, gateway or alarm id becomes a topic level, a team name may become one
# downstream: letters, digits, '_', '.', '-', at most 64.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Id = Annotated[str, Field(pattern=ID_PATTERN)]
