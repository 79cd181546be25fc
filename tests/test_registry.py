"""Every driver folder is registered, documented, and ships a sample config that validates."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.sdk.registry import ENTRY_POINT_GROUP, available_drivers

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = sorted(p.name for p in (ROOT / "drivers").iterdir() if (p / "__init__.py").is_file())


def test_every_driver_folder_is_registered_as_an_entry_point() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert sorted(declared) == FOLDERS
    assert all(value == f"drivers.{name}:DRIVER" for name, value in declared.items())
    # and the installed package agrees with the file (re-run scripts/bootstrap if not)
    assert sorted(available_drivers()) == FOLDERS


@pytest.mark.parametrize("name", FOLDERS)
def test_driver_folder_has_readme_and_a_valid_sample(name: str) -> None:
    info = available_drivers()[name]
    assert info.folder == ROOT / "drivers" / name
    readme = (info.folder / "README.md").read_text()
    assert "sample.yaml" in readme or "```yaml" in readme
    loaded = load_config(info.folder / "sample.yaml")
    assert any(d.driver == name for d in loaded.devices), "the sample shows no device of its driver"
    assert info.kinds, "a driver handles at least one kind"
