"""First boot's checks of the folder on the card: its files by lstat, its config in a child.

`file_problems` judges what the folder holds without reading a file.  The config is
validated by this module run as a child process (`python -m
gateway.install.firstboot_check CONFIG FOLDER BOOT [UID GID]`, see
`gateway.install.firstboot`): it drops to the service user and runs under memory, CPU
and time limits, because the file comes from a FAT partition anyone with the card can
write; it prints the problems as JSON.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "CHECK_CPU_S",
    "CHECK_MEMORY_BYTES",
    "CHECK_TIMEOUT_S",
    "MAX_FILE_BYTES",
    "MAX_SECRET_FILES",
    "STATE_DIR",
    "file_problems",
]

STATE_DIR = Path("/var/lib/community-gateway")
# Bounds on what the card may hold: a config and a few keys, certificates and passwords.
MAX_FILE_BYTES = 1 << 20
MAX_SECRET_FILES = 64
# The validating child: well under the unit's TimeoutStartSec= and MemoryMax=.
CHECK_TIMEOUT_S = 30.0
CHECK_CPU_S = 20
CHECK_MEMORY_BYTES = 512 << 20  # address space; a normal config peaks near 60 MB


def file_problems(folder: Path) -> list[str]:
    """What the folder holds, judged by lstat alone: nothing here reads a file's content."""
    problems = []
    config = folder / "gateway.yaml"
    if config.is_symlink():
        return [f"{config}: a link; copy the config itself onto the card"]
    if config.lstat().st_size > MAX_FILE_BYTES:
        problems.append(f"{config}: larger than {MAX_FILE_BYTES // 1024} KiB; is it the config?")
    secrets = folder / "secrets"
    if secrets.is_symlink() or (secrets.exists() and not secrets.is_dir()):
        return [*problems, f"{secrets}: must be a folder"]
    entries = sorted(secrets.rglob("*")) if secrets.is_dir() else []
    if len(entries) > MAX_SECRET_FILES:
        return [*problems, f"{secrets}: {len(entries)} entries; at most {MAX_SECRET_FILES}"]
    for path in entries:
        st = path.lstat()
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            problems.append(f"{path}: not a plain file (a link or a device); copy the file itself")
        elif path.is_file() and st.st_size > MAX_FILE_BYTES:
            problems.append(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB")
    return problems


def _raw(data: Any, where: tuple[str | int, ...]) -> Any:
    """The value as written in the file at a key path, or None when it was not written."""
    for part in where:
        found = isinstance(data, dict) and part in data
        found = found or (isinstance(data, list) and isinstance(part, int) and part < len(data))
        if not found:
            return None
        data = data[part]
    return data


def _service_rules(config: Path, folder: Path, boot: Path) -> list[str]:
    """Problems `gateway validate` cannot know: where the installed service runs."""
    from gateway.config import load_config, paths_in
    from gateway.sdk.yamlsource import load_located

    loaded = load_config(config)
    src = load_located(config)
    cfg = loaded.config
    named = list(paths_in(cfg, ()))
    # A config that loads has built every device, in the file's order.
    index = {spec.id: i for i, spec in enumerate(loaded.devices)}
    for spec in loaded.devices:
        named += paths_in(spec.settings, ("devices", index[spec.id], "driver"))
    # Paths the service writes: only its state directory is writable (ProtectSystem=).
    writable = {("outbox", "path")}
    if cfg.web.enabled:
        writable.add(("gateway", "state_dir"))
    secrets = folder / "secrets"
    problems = []
    for where, path in named:
        if where in writable:
            if not path.is_relative_to(STATE_DIR):
                problems.append(
                    src.problem(
                        where,
                        f"{path} is outside {STATE_DIR}, the only folder the service may "
                        f"write; use {STATE_DIR}/{path.name}",
                    )
                )
            continue
        if where[-2:] == ("gateway", "state_dir"):
            continue  # unused without the web console
        path = Path(os.path.normpath(path))  # '..' must not walk out of secrets/ unseen
        written = _raw(src.data, where)
        if not path.is_relative_to(boot):
            continue
        if isinstance(written, str) and Path(written).is_absolute():
            problems.append(
                src.problem(
                    where,
                    f"{written} is on the boot partition, and first boot deletes secrets/ "
                    f"from there: write it relative to gateway.yaml, as secrets/{path.name}",
                )
            )
        elif not path.is_relative_to(secrets):
            problems.append(
                src.problem(
                    where, f"{path.name} must be in the secrets/ folder: write secrets/{path.name}"
                )
            )
    return [str(p) for p in problems]


def _check_in_child(config: Path, folder: Path, boot: Path, owner: tuple[int, int] | None) -> None:
    """The child's side: validate as the service user, print the problems as JSON."""
    from gateway.config import ConfigError
    from gateway.sdk.registry import available_drivers

    list(available_drivers().values())  # all imported while the files are still readable
    if owner is not None and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(owner[1])
        os.setuid(owner[0])
    resource.setrlimit(resource.RLIMIT_CPU, (CHECK_CPU_S, CHECK_CPU_S))
    resource.setrlimit(resource.RLIMIT_AS, (CHECK_MEMORY_BYTES, CHECK_MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # it writes nothing
    try:
        problems = _service_rules(config, folder, boot)
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems]
    json.dump({"problems": problems}, sys.stdout)


if __name__ == "__main__":
    # The validating child (see _validate): CONFIG FOLDER BOOT [UID GID]
    _args = sys.argv[1:]
    _owner_ids = (int(_args[3]), int(_args[4])) if len(_args) == 5 else None
    _check_in_child(Path(_args[0]), Path(_args[1]), Path(_args[2]), _owner_ids)
