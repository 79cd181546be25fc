"""Loading a configuration file: read, validate every section, collect every problem.

`load_config` reads the file, validates the core sections, then each device's
`driver:` section with that driver's own model, and collects *every* problem with its
file, line and key path before raising `ConfigError`.  Nothing here connects anywhere.
Relative paths in the file are relative to the file's own folder.
"""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.alarms.settings import alarms_problems
from gateway.config.model import (
    CONFIG_VERSION,
    NAME_MAX,
    PATH_MAX,
    DeviceConfig,
    GatewayConfig,
    LoadedConfig,
)
from gateway.config.tlsfiles import SERVICE_USER, tls_problems
from gateway.sdk.devicechecks import serial_port_clashes
from gateway.sdk.driver import DeviceProblem, DeviceSpec, DriverInfo
from gateway.sdk.model import DeviceRef, Location
from gateway.sdk.problems import Located, Problem, YamlSyntaxError, pydantic_problems
from gateway.sdk.secrets import SecretRef
from gateway.sdk.yamlsource import load_located
from gateway.security.settings import security_problems
from gateway.wellness.settings import wellness_problems

__all__ = [
    "ConfigError",
    "conflicting_devices",
    "device_conflicts",
    "load_config",
    "paths_in",
    "pydantic_problems",
    "validate_pruned",
]


class ConfigError(Exception):
    """Raised with every problem found; str() lists them one per line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


M = TypeVar("M", bound=BaseModel)


def _prune(data: Any, loc: tuple[str | int, ...]) -> bool:
    """Delete the deepest mapping entry on `loc` that exists; False if there is none.

    A list item is never deleted (the indexes after it would name the wrong lines):
    the whole list goes instead, so its section falls back to its default.
    """
    parent: dict[Any, Any] | None = None
    key: Any = None
    cur = data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            parent, key, cur = cur, part, cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]  # keep the mapping entry holding the list as the target
        else:
            break
    if parent is None:
        return False
    del parent[key]
    return True


def _fill(data: Any, loc: tuple[str | int, ...], stand_ins: Mapping[tuple[str, ...], Any]) -> bool:
    """Put the stand-in for a required key that is missing (or was pruned) at `loc`."""
    value = stand_ins.get(tuple(str(p) for p in loc))
    cur = data
    for part in loc[:-1]:
        if not isinstance(cur, dict):
            return False
        cur = cur.setdefault(part, {})
    if value is None or not isinstance(cur, dict) or loc[-1] in cur:
        return False
    cur[loc[-1]] = value
    return True


def validate_pruned(
    model: type[M],
    data: Any,
    src: Located,
    prefix: tuple[str | int, ...],
    stand_ins: Mapping[tuple[str, ...], Any] | None = None,
    **kwargs: Any,
) -> tuple[M | None, list[Problem]]:
    """Validate `data`; on errors, also the data without the keys in error.

    Returns the problems of the data as written and, if removing the keys in error
    (an unknown key, a bad value that has a default) leaves valid data, the model of
    that: its other settings can still be checked, so one typo hides nothing else.
    A required key that is missing or wrong takes its value from `stand_ins` (key
    path -> value), when given, so the rest of its section is checked too.  A model
    built so is only for finding more problems: the file is refused anyway.
    """
    try:
        return model.model_validate(data, **kwargs), []
    except ValidationError as exc:
        problems = pydantic_problems(src, exc, prefix)
        error = exc
    pruned = copy.deepcopy(data)
    for _ in range(6):
        changed = False
        for err in error.errors():
            loc = tuple(err["loc"])
            filled = err["type"] == "missing" and _fill(pruned, loc, stand_ins or {})
            if filled or _prune(pruned, loc):
                changed = True
        if not changed:
            break
        try:
            return model.model_validate(pruned, **kwargs), problems
        except ValidationError as exc:
            error = exc
    return None, problems


def _resolve_paths(value: Any, base: Path) -> Any:
    """Make relative Path fields absolute against the config file's folder."""
    if isinstance(value, Path):
        return value if value.is_absolute() else (base / value)
    if isinstance(value, BaseModel):
        updates = {
            name: _resolve_paths(getattr(value, name), base) for name in type(value).model_fields
        }
        changed = {k: v for k, v in updates.items() if v is not getattr(value, k)}
        return value.model_copy(update=changed) if changed else value
    if isinstance(value, list):
        return [_resolve_paths(v, base) for v in value]
    return value


def paths_in(
    value: Any, where: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], Path]]:
    """Every Path in a config model (or part of one), with its key path in the file."""
    if isinstance(value, Path):
        yield where, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from paths_in(getattr(value, name), (*where, name))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from paths_in(item, (*where, i))


def _path_problems(src: Located, value: BaseModel, where: tuple[str | int, ...]) -> list[Problem]:
    """Every path setting that no file system can hold (opening it would fail at run)."""
    problems = []
    for key, path in paths_in(value, where):
        raw = os.fsencode(path)
        if len(raw) >= PATH_MAX:
            problems.append(src.problem(key, f"a path of {len(raw)} bytes; at most {PATH_MAX - 1}"))
        elif any(len(part) > NAME_MAX for part in raw.split(b"/")):
            problems.append(
                src.problem(key, f"a file or folder name in it is over {NAME_MAX} bytes")
            )
    return problems


def _file_problem(path: Path) -> str | None:
    """Why `path` names no file this process can see, or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"file {path} not found"
    except PermissionError:
        return (
            f"cannot reach {path} as this user; check it as the service's user: "
            f"sudo -u {SERVICE_USER} gateway validate -c FILE"
        )
    except (OSError, ValueError) as exc:
        return f"file {path}: {getattr(exc, 'strerror', None) or exc}"
    return None if stat.S_ISREG(st.st_mode) else f"file {path} is not a regular file"


def _check_secrets(src: Located, cfg: GatewayConfig) -> list[Problem]:
    influx = cfg.sinks.influxdb
    refs: list[tuple[tuple[str | int, ...], SecretRef | None]] = [
        (("broker", "password"), cfg.broker.password),
        (("sinks", "influxdb", "token"), influx.token if influx is not None else None),
    ]
    problems = []
    for path, ref in refs:
        if ref is None or ref.file is None:
            continue
        why = _file_problem(ref.file)
        if why is None:
            try:
                ref.read()  # as the service will: readable, small, UTF-8
            except OSError as exc:
                why = f"cannot read file {ref.file}: {exc.strerror or exc}"
        if why is not None:
            problems.append(src.problem((*path, "file"), why.replace("file ", "secret file ", 1)))
    tls = cfg.broker.tls
    if tls is not None:
        problems += [
            src.problem(("broker", "tls", p.key), p.message)
            for p in tls_problems(tls.ca_file, tls.cert_file, tls.key_file)
        ]
    if tls is not None and not cfg.broker.uses_tls:
        problems.append(
            src.problem(("broker", "url"), "tls is configured but the URL is mqtt://; use mqtts://")
        )
    if cfg.web.enabled and cfg.web.tls is not None:
        problems += [
            src.problem(("web", "tls", p.key), p.message)
            for p in tls_problems(
                None, cfg.web.tls.cert_file, cfg.web.tls.key_file, whose="web certificate"
            )
        ]
    if cfg.notify.sms is not None and cfg.notify.sms.pin_file is not None:
        why = _file_problem(cfg.notify.sms.pin_file)
        if why is not None:
            problems.append(src.problem(("notify", "sms", "pin_file"), why))
    return problems


def _device_specs(
    src: Located, raw_devices: list[tuple[int, Any]], drivers: Mapping[str, DriverInfo]
) -> tuple[list[DeviceSpec], list[Problem], bool]:
    """Each device validated alone: specs, problems, and whether all built.

    A device with an unknown or bad optional key is still built (without that key), so
    the checks across devices see it.
    """
    specs: list[DeviceSpec] = []
    problems: list[Problem] = []
    complete = True
    seen: dict[str, int] = {}
    base = Path(src.file).parent
    for i, raw in raw_devices:
        where = ("devices", i)
        dev, found = validate_pruned(DeviceConfig, raw, src, where)
        problems += found
        # Ids are compared as written, so a device broken otherwise still counts.
        dev_id = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(dev_id, str) and dev_id in seen:
            problems.append(
                src.problem(
                    (*where, "id"), f"duplicate id {dev_id!r} (also devices[{seen[dev_id]}])"
                )
            )
        if isinstance(dev_id, str):
            seen.setdefault(dev_id, i)
        if dev is None:
            complete = False
            continue
        info = drivers.get(dev.driver.type)
        if info is None:
            known = ", ".join(sorted(drivers)) or "none installed"
            problems.append(
                src.problem(
                    (*where, "driver", "type"),
                    f"unknown driver {dev.driver.type!r} (known: {known})",
                )
            )
            complete = False
            continue
        if dev.kind not in info.kinds:
            kinds = ", ".join(sorted(str(k) for k in info.kinds))
            problems.append(
                src.problem(
                    (*where, "kind"),
                    f"driver {info.name} does not handle kind {dev.kind} (it handles: {kinds})",
                )
            )
        settings, found = validate_pruned(
            info.settings_model,
            dict(dev.driver.model_extra or {}),
            src,
            (*where, "driver"),
            context={"kind": dev.kind},
        )
        problems += found
        if settings is None:
            complete = False
            continue
        settings = _resolve_paths(settings, base)
        problems += _path_problems(src, settings, (*where, "driver"))
        loc = dev.location
        ref = DeviceRef(dev.id, dev.kind, Location(loc.building, loc.floor, loc.unit))
        specs.append(DeviceSpec(ref=ref, settings=settings, name=dev.name, driver=info.name))
    return specs, problems, complete


def device_conflicts(
    specs: Sequence[DeviceSpec], drivers: Mapping[str, DriverInfo]
) -> list[DeviceProblem]:
    """What each driver's `check_devices` finds between devices (a shared bus, a receiver).

    The one place the conflict policy starts from: `gateway validate` refuses them, and
    a gateway that runs anyway leaves only the devices named here unstarted.
    """
    problems: list[DeviceProblem] = []
    # Only the drivers the devices name: asking the registry for another would import it.
    for name in sorted({s.driver for s in specs}):
        info = drivers.get(name)
        mine = [s for s in specs if s.driver == name]
        if info is not None and info.check_devices is not None:
            problems += info.check_devices(mine, specs)
    return problems + serial_port_clashes(specs, drivers)


def conflicting_devices(
    specs: Sequence[DeviceSpec], drivers: Mapping[str, DriverInfo]
) -> dict[str, str]:
    """The devices a running gateway leaves unstarted, each with the reason to publish."""
    out: dict[str, str] = {}
    for p in device_conflicts(specs, drivers):
        for device_id in (p.device_id, *p.also):
            out.setdefault(device_id, f"not started: {p.message}")
    return out


def _raw_devices(src: Located) -> tuple[list[tuple[int, Any]], list[Problem]]:
    raw = src.data.get("devices", [])
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], [src.problem(("devices",), "must be a list of devices (each line '- id: ...')")]
    return list(enumerate(raw)), []


# Required core keys: when one is missing or wrong, the rest of the file is still
# checked with these in its place (an mqtts URL: "tls needs mqtts" stays unsaid).
_CORE_STAND_INS: Mapping[tuple[str, ...], Any] = {
    ("site", "id"): "stand-in",
    ("gateway", "id"): "stand-in",
    ("broker", "url"): "mqtts://stand-in",
    ("site",): {"id": "stand-in"},
    ("gateway",): {"id": "stand-in"},
    ("broker",): {"url": "mqtts://stand-in"},
}


def load_config(
    path: Path, drivers: Mapping[str, DriverInfo] | None = None, *, allow_conflicts: bool = False
) -> LoadedConfig:
    """Read and validate a config file completely; raises ConfigError listing every problem.

    With `allow_conflicts` (what `gateway run` uses), problems between otherwise valid
    devices do not raise: they come back in `LoadedConfig.conflicts` and the runtime
    leaves those devices unstarted (docs/config.md, "Conflicts between devices").
    """
    if drivers is None:
        from gateway.sdk.registry import available_drivers

        drivers = available_drivers()
    try:
        src = load_located(path, collect=True)
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", f"cannot read: {exc.strerror}")]) from exc
    except YamlSyntaxError as exc:
        raise ConfigError(exc.problems) from exc
    except ValueError as exc:  # a path with a NUL byte (first boot's, or a library user's)
        raise ConfigError([Problem(repr(str(path)), None, "", f"cannot read: {exc}")]) from exc
    if not isinstance(src.data, dict):
        raise ConfigError([src.problem((), "the file must be a YAML mapping (key: value)")])
    if "version" not in src.data:
        raise ConfigError(
            [src.problem((), f"no 'version:' key; add 'version: {CONFIG_VERSION}' at the top")]
        )
    problems = list(src.problems)
    core = {k: v for k, v in src.data.items() if k != "devices"}
    cfg, found = validate_pruned(GatewayConfig, core, src, (), _CORE_STAND_INS)
    problems += found
    if cfg is not None:
        cfg = _resolve_paths(cfg, path.parent)
        problems += _path_problems(src, cfg, ())
        problems += _check_secrets(src, cfg)
        problems += (src.problem(p, m) for p, m in security_problems(cfg.security))
    raw_devices, found = _raw_devices(src)
    problems += found
    specs, found, complete = _device_specs(src, raw_devices, drivers)
    problems += found
    conflicts: list[Problem] = []
    if complete:
        # Every device was built, so specs[i] is devices[i]; a duplicate id names its first.
        positions = {spec.id: i for i, spec in reversed(list(enumerate(specs)))}
        for p in device_conflicts(specs, drivers):
            conflicts.append(
                src.problem(("devices", positions[p.device_id], "driver", *p.path), p.message)
            )
        if cfg is not None:
            problems += (src.problem(p, m) for p, m in wellness_problems(cfg.wellness, specs))
            problems += (src.problem(p, m) for p, m in alarms_problems(cfg.alarms, specs))
    if not allow_conflicts:
        problems += conflicts
    if problems or cfg is None:
        raise ConfigError(sorted(problems, key=lambda p: p.line or 0))
    return LoadedConfig(path=path, config=cfg, devices=tuple(specs), conflicts=tuple(conflicts))
