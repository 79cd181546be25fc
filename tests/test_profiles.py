"""Profiles as data: listed by file name, validated once, a broken file named at its line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, model_validator

from gateway.sdk.profiles import ProfileError, ProfileLibrary


class Meter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    registers: int
    first: int = 0

    @model_validator(mode="after")
    def _fits(self) -> Meter:
        if self.first >= self.registers:
            raise ValueError("first must be below registers")
        return self


def test_profiles_are_listed_loaded_and_cached(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("registers: 2\n")
    (tmp_path / "a.yaml").write_text("registers: 1\n")
    (tmp_path / "notes.txt").write_text("not a profile\n")
    lib = ProfileLibrary(tmp_path, Meter)
    assert lib.names == ("a", "b")
    assert lib.load("b").registers == 2
    assert lib.load("b") is lib.load("b")
    with pytest.raises(KeyError, match="known: a, b"):
        lib.load("notes")
    with pytest.raises(KeyError):  # a path is a site file only where the driver allows it
        lib.load(str(tmp_path / "a.yaml"))


def test_a_broken_profile_names_file_line_and_key_path_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("# meter\nregisters: two\ncolour: red\n")
    (tmp_path / "ugly.yaml").write_text("registers: 4\nfirst: [\n")
    (tmp_path / "twice.yaml").write_text("registers: 4\nregisters: 5\n")
    lib = ProfileLibrary(tmp_path, Meter)
    bad = tmp_path / "bad.yaml"
    with pytest.raises(ProfileError) as err:
        lib.load("bad")
    assert str(err.value) == (
        f"{bad}:2 registers: Input should be a valid integer, unable to parse string as an "
        f"integer; {bad}:3 colour: unknown key (check the spelling; see the sample config)"
    )
    for name, line in (("ugly", 3), ("twice", 2)):
        with pytest.raises(ProfileError) as err:
            lib.load(name)
        assert str(err.value).startswith(f"{tmp_path / name}.yaml:{line}")
        assert "\n" not in str(err.value)


def test_a_whole_file_problem_is_located_by_the_driver_or_named_by_file(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("registers: 2\nfirst: 5\n")
    plain = ProfileLibrary(tmp_path / "none", Meter, site_files=True)
    with pytest.raises(ProfileError) as err:
        plain.load(str(site))
    assert str(err.value) == f"{site}:1: first must be below registers"
    located = ProfileLibrary(
        tmp_path / "none",
        Meter,
        site_files=True,
        whole=lambda doc: [(("first",), f"{doc['first']} is past the last register")],
    )
    with pytest.raises(ProfileError) as err:
        located.load(str(site))
    assert str(err.value) == f"{site}:2 first: 5 is past the last register"
    with pytest.raises(ProfileError, match=f"^{tmp_path / 'gone.yaml'}: cannot read"):
        located.load(str(tmp_path / "gone.yaml"))
