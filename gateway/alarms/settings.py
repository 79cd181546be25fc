"""The `alarms:` config section: store path, rules, damping and escalation.

Validated with the core sections, before any I/O.  `alarms_problems` then checks the
escalation output against the configured devices (known only once every device is
valid) and returns problems with their key path, so `gateway validate` gives the line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.sdk.driver import DeviceSpec

from .rules import Rule, RuleSet, Severity

__all__ = ["AlarmsConfig", "EscalationConfig", "OutputConfig", "alarms_problems"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutputConfig(_Strict):
    """A local output switched on while an alarm is escalated: a buzzer or light relay."""

    device: str = Field(min_length=1)
    on: str = Field("on", min_length=1, description="device command that switches it on")
    off: str = Field("off", min_length=1, description="device command that switches it off")

    @model_validator(mode="before")
    @classmethod
    def _yaml_booleans(cls, data: Any) -> Any:
        # YAML 1.1 (PyYAML) reads an unquoted `on:` / `off:` key as true / false.
        if isinstance(data, dict):
            names = {True: "on", False: "off"}
            return {names.get(k, k) if isinstance(k, bool) else k: v for k, v in data.items()}
        return data


class EscalationConfig(_Strict):
    """After how many seconds without acknowledgement an alarm escalates, per severity.

    `None` never escalates.  An alarm escalates again every same interval, up to
    `max_level`.
    """

    critical: float | None = Field(120.0, gt=0)
    high: float | None = Field(300.0, gt=0)
    medium: float | None = Field(900.0, gt=0)
    low: float | None = Field(None, gt=0)
    max_level: int = Field(3, ge=1, le=100)
    output: OutputConfig | None = None

    def after_s(self, severity: Severity) -> float | None:
        value: float | None = getattr(self, str(severity))
        return value


class AlarmsConfig(_Strict):
    """Where alarms are stored, which rules apply, and how they damp and escalate."""

    path: Path | None = None  # None: alarms.db next to the outbox
    damping_s: float = Field(10.0, ge=0, le=3600)
    # How long a closed alarm's document stays retained before the broker is told to
    # forget it: a central service that missed the closing (broker restarted, its
    # subscription not restored) learns the final state from it.  0: forget at once.
    closed_retain_s: float = Field(0.0, ge=0, le=30 * 86400)
    escalation: EscalationConfig = EscalationConfig()
    rules: tuple[Rule, ...] = ()

    @model_validator(mode="after")
    def _unique_rules(self) -> Self:
        names = [r.name for r in self.rules]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"rules: {', '.join(dup)} named more than once")
        return self

    def rule_set(self) -> RuleSet:
        return RuleSet.merged(self.rules)

    def store_path(self, outbox_path: Path) -> Path:
        return self.path if self.path is not None else outbox_path.parent / "alarms.db"


def alarms_problems(
    cfg: AlarmsConfig, devices: Sequence[DeviceSpec]
) -> list[tuple[tuple[str | int, ...], str]]:
    """(key path, message) of what the section names that is not a configured device."""
    known = {d.id for d in devices}
    problems: list[tuple[tuple[str | int, ...], str]] = []
    out = cfg.escalation.output
    if out is not None and out.device not in known:
        problems.append(
            (
                ("alarms", "escalation", "output", "device"),
                f"no device {out.device!r} is configured",
            )
        )
    for i, rule in enumerate(cfg.rules):
        for j, device_id in enumerate(rule.devices or ()):
            if device_id not in known:
                problems.append(
                    (("alarms", "rules", i, "devices", j), f"no device {device_id!r} is configured")
                )
    return problems
