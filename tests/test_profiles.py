"""Shipped profiles: listed by file name, validated once, a broken file named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from gateway.sdk.profiles import ProfileLibrary


class Meter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    registers: int


def test_profiles_are_listed_loaded_and_cached(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("registers: 2\n")
    (tmp_path / "a.yaml").write_text("registers: 1\n")
    (tmp_path / "notes.txt").write_text("not a profile\n")
    lib = ProfileLibrary(tmp_path, Meter)
    assert lib.names == ("a", "b")
    assert lib.load("b").registers == 2
    assert lib.load("b") is lib.load("b")
    with pytest.raises(KeyError):
        lib.load("notes")


def test_a_broken_profile_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("registers: two\n")
    (tmp_path / "ugly.yaml").write_text("registers: [\n")
    lib = ProfileLibrary(tmp_path, Meter)
    for name in ("bad", "ugly"):
        with pytest.raises(ValueError, match=rf"profile .*{name}\.yaml is invalid"):
            lib.load(name)
