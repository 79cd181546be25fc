"""Receiver profiles: how one model of RF receiver prints signals, as validated data.

A profile is one YAML file in `profiles/`; supporting another receiver is adding a file.
Each rule is a regular expression over one line with a named group `code` (the
transmitter) and either a fixed `event` or a group `fn` looked up in `functions`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.sdk.model import EventType
from gateway.sdk.profiles import ProfileLibrary

__all__ = ["PROFILE_DIR", "Profile", "Rule", "load_profile", "profile_names"]

PROFILE_DIR = Path(__file__).parent / "profiles"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


class Rule(_Strict):
    """One line shape: a regex naming the transmitter `code`, and the event it means."""

    match: str = Field(min_length=1)
    event: EventType | None = None
    functions: dict[str, EventType] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _groups(self) -> Self:
        groups = _compile(self.match).groupindex
        if "code" not in groups:
            raise ValueError(f"rule {self.match!r} has no named group (?P<code>...)")
        if (self.event is None) == (self.functions is None):
            raise ValueError(f"rule {self.match!r} needs exactly one of `event` or `functions`")
        if self.functions is not None and "fn" not in groups:
            raise ValueError(f"rule {self.match!r} has `functions` but no named group (?P<fn>...)")
        return self

    @property
    def regex(self) -> re.Pattern[str]:
        return _compile(self.match)  # re caches compiled patterns


class Profile(_Strict):
    """A receiver model: line rules, chatter to ignore, default baud, repeat window."""

    description: str = Field(min_length=1)
    baud: int = Field(9600, gt=0)
    dedupe_s: float = Field(3.0, ge=0, le=600, description="repeats closer than this are one")
    code_pattern: str = Field(min_length=1, description="what a transmitter code looks like")
    ignore: tuple[str, ...] = ()
    line_start: str | None = Field(
        None, description="how every signal line starts: where to resynchronise after noise"
    )
    rules: tuple[Rule, ...] = Field(min_length=1)

    @field_validator("code_pattern")
    @classmethod
    def _code_pattern(cls, value: str) -> str:
        _compile(value)
        return value

    @field_validator("line_start")
    @classmethod
    def _line_start(cls, value: str | None) -> str | None:
        if value is not None and _compile(value).match("") is not None:
            raise ValueError(f"line_start {value!r} matches an empty string: it must find text")
        return value

    @field_validator("ignore")
    @classmethod
    def _ignore(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            _compile(pattern)
        return value

    def code_ok(self, code: str) -> bool:
        return re.fullmatch(self.code_pattern, code) is not None


_LIBRARY = ProfileLibrary(PROFILE_DIR, Profile)


def profile_names() -> tuple[str, ...]:
    """Names of the profiles shipped in `profiles/`, sorted."""
    return _LIBRARY.names


def load_profile(name: str) -> Profile:
    """The validated profile `name`; KeyError if there is no such file."""
    return _LIBRARY.load(name)
