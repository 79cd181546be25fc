"""The text of an alarm SMS, short enough for one or two messages, in zh or en.

A person reads it on a phone's lock screen: what, where, since when, and whether it was
escalated; the alarm's short number identifies it when they call the office.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any, Literal

__all__ = ["alarm_text", "place"]

Language = Literal["zh", "en"]

_TYPE = {
    "fire": ("火警", "FIRE"),
    "care": ("求助", "CARE"),
    "wellness": ("关怀", "WELLNESS"),
    "security": ("安防", "SECURITY"),
    "maintenance": ("维护", "MAINTENANCE"),
}
_CAUSE = {
    "smoke.alarm": ("烟感报警", "smoke detected"),
    "elderly.sos": ("紧急按钮", "SOS button pressed"),
    "elderly.fall": ("跌倒报警", "fall detected"),
    "elderly.inactivity": ("长时间无活动", "no activity"),
    "door.forced": ("门被强行打开", "door forced"),
    "door.held_open": ("门长时间未关", "door held open"),
    "device.tamper": ("设备被拆", "tamper"),
    "device.fault": ("设备故障", "device fault"),
    "device.battery_low": ("电量低", "battery low"),
    "meter.counter_anomaly": ("表计读数异常", "meter reading anomaly"),
    "offline": ("设备离线", "device offline"),
}


def place(location: dict[str, str], lang: Language) -> str:
    """`1号楼3层301室` or `bldg 1, floor 3, unit 301`, from a device's location."""
    building, floor, unit = (location.get(k) for k in ("building", "floor", "unit"))
    if lang == "zh":
        # "1楼" reads as "first floor": a building number takes 号楼.
        out = f"{building}号楼" if building and building.isdigit() else (building or "")
        out += f"{floor}层" if floor and floor.lstrip("-").isdigit() else (floor or "")
        out += f"{unit}室" if unit and unit.isdigit() else (unit or "")
        return out
    parts = [f"bldg {building}" if building else "", f"floor {floor}" if floor else ""]
    parts.append(f"unit {unit}" if unit else "")
    return ", ".join(p for p in parts if p)


def alarm_text(doc: dict[str, Any], *, site_name: str, lang: Language, zone: tzinfo) -> str:
    """The SMS for an alarm document (protocol/community_protocol/schemas/alarm.json)."""
    zh = lang == "zh"
    kind = _TYPE.get(doc["type"], (doc["type"], doc["type"].upper()))[0 if zh else 1]
    cause = _CAUSE.get(doc["cause"], (doc["cause"], doc["cause"]))[0 if zh else 1]
    device = doc["device"]
    where = place(device.get("location", {}), lang)
    name = device.get("name") or device["id"]
    raised = datetime.fromisoformat(doc["raised_at"]).astimezone(zone).strftime("%H:%M")
    level = int(doc.get("escalation", 0))
    number = doc["alarm_id"]
    if zh:
        head = f"【{kind}】{site_name} {where} {name}：{cause}。"
        state = f"{raised}起未确认，已升级第{level}级。" if level else f"{raised}发生，请尽快处理。"
        return f"{head}{state}编号{number}"
    head = f"[{kind}] {site_name}, {where}, {name}: {cause}."
    state = (
        f" Not acknowledged since {raised}, escalated to level {level}."
        if level
        else f" Since {raised}, please respond."
    )
    return f"{head}{state} Alarm {number}"
