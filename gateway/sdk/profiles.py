"""Device knowledge shipped as data: a folder of YAML files, each validated by one model.

Drivers keep meter models, receiver code tables and Zigbee mappings as `profiles/*.yaml`
next to their code; `ProfileLibrary` lists and loads them, validated once per process.
A file that does not load raises `ProfileError`, whose text names each mistake as
`file:line key.path: what is wrong`, all on one line, so that a config problem quoting
it (a site's own profile named in a device) stays one line too.  The file is read as
hostile as a config file (`yamlsource`): size, depth and alias limits, duplicate keys.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.sdk.problems import Path_, Problem, YamlSyntaxError, pydantic_problems
from gateway.sdk.yamlsource import load_located

__all__ = ["ProfileError", "ProfileLibrary", "WholeFileCheck", "load_profile_file"]

M = TypeVar("M", bound=BaseModel)

# Problems a model can only find across the whole file (two points on one register):
# pydantic gives them no key path, so the driver locates them from the raw document.
WholeFileCheck = Callable[[Any], list[tuple[Path_, str]]]


class ProfileError(ValueError):
    """A profile file that does not load; str() lists each problem with file:line, on one line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


def load_profile_file(path: Path, model: type[M], whole: WholeFileCheck | None = None) -> M:
    """Read and validate one profile file; ProfileError naming file, line and key path."""
    try:
        src = load_located(path)
    except OSError as exc:
        raise ProfileError([Problem(str(path), None, "", f"cannot read: {exc.strerror}")]) from exc
    except YamlSyntaxError as exc:
        raise ProfileError(exc.problems) from exc
    try:
        return model.model_validate(src.data)
    except ValidationError as exc:
        problems = [p for p in pydantic_problems(src, exc) if p.path]
        if not problems and whole is not None:
            # Only whole-file errors, which carry no key path: the driver locates them.
            problems = [src.problem(at, message) for at, message in whole(src.data)]
        raise ProfileError(problems or pydantic_problems(src, exc)) from exc


class ProfileLibrary(Generic[M]):
    """The profiles in `folder`, each file validated by `model` when first loaded.

    With `site_files`, a name that is an absolute path loads that file: a site's own
    profile (/etc/gateway/profiles/my_meter.yaml) beside the shipped ones.
    """

    def __init__(
        self,
        folder: Path,
        model: type[M],
        *,
        site_files: bool = False,
        whole: WholeFileCheck | None = None,
    ) -> None:
        self.folder = folder
        self.model = model
        self.site_files = site_files
        self.whole = whole
        self._loaded: dict[str, M] = {}

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Names of the shipped profiles (file names without .yaml), sorted."""
        return tuple(sorted(p.stem for p in self.folder.glob("*.yaml")))

    def load(self, name: str) -> M:
        """The validated profile `name`; KeyError if there is no such profile.

        ProfileError (a ValueError) if its file does not load: for a shipped file a bug
        in the package, for a site's file the installer's to fix.
        """
        found = self._loaded.get(name)
        if found is not None:
            return found
        if self.site_files and name.startswith("/"):
            path = Path(name)
        elif name in self.names:
            path = self.folder / f"{name}.yaml"
        else:
            raise KeyError(f"no profile {name!r} (known: {', '.join(self.names)})")
        found = self._loaded[name] = load_profile_file(path, self.model, self.whole)
        return found
