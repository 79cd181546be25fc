"""Device knowledge shipped as data: a folder of YAML files, each validated by one model.

Drivers keep meter models, receiver code tables and Zigbee mappings as `profiles/*.yaml`
next to their code; `ProfileLibrary` lists and loads them, validated once per process.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Generic, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["ProfileLibrary"]

M = TypeVar("M", bound=BaseModel)


class ProfileLibrary(Generic[M]):
    """The profiles in `folder`, each file validated by `model` when first loaded."""

    def __init__(self, folder: Path, model: type[M]) -> None:
        self.folder = folder
        self.model = model
        self._loaded: dict[str, M] = {}

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Names of the shipped profiles (file names without .yaml), sorted."""
        return tuple(sorted(p.stem for p in self.folder.glob("*.yaml")))

    def load(self, name: str) -> M:
        """The validated profile `name`; KeyError if there is no such file."""
        if name not in self.names:
            raise KeyError(name)
        if name not in self._loaded:
            path = self.folder / f"{name}.yaml"
            try:
                doc = yaml.safe_load(path.read_text(encoding="utf-8"))
                self._loaded[name] = self.model.model_validate(doc)
            except (ValidationError, yaml.YAMLError) as exc:
                # A broken shipped profile is a bug in the package, not in the user's
                # config: name the file.
                raise ValueError(f"profile {path} is invalid:\n{exc}") from exc
        return self._loaded[name]
