"""`gateway watch`: follow a gateway's messages on a broker, one readable line each."""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import click
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from community_protocol.names import SchemaName
from community_protocol.topics import DEFAULT_PREFIX

__all__ = ["summarise", "watch"]


def _values(doc: dict[str, Any]) -> str:
    parts = []
    for name, v in doc.get("values", {}).items():
        value = v.get("value")
        shown = f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
        parts.append(f"{name}={shown}{v.get('unit', '')}")
    return " ".join(parts)


def summarise(topic: str, payload: bytes) -> str:
    """One line for a message: what it is, about which device, the essentials."""
    if not payload and "/alarms/" in topic:
        return f"ALARM  {topic.rsplit('/', 1)[-1]} closed: retained state removed"
    try:
        doc = json.loads(payload)
    except ValueError:
        return f"{topic}  (not JSON, {len(payload)} bytes)"
    if not isinstance(doc, dict):
        return f"{topic}  {payload[:80]!r}"
    name = doc.get("schema", {}).get("name", "") if isinstance(doc.get("schema"), dict) else ""
    device = doc.get("device", {}) if isinstance(doc.get("device"), dict) else {}
    loc = device.get("location", {})
    where = "/".join(str(loc[k]) for k in ("building", "floor", "unit") if loc.get(k) is not None)
    dev = f"{device.get('id', '?')} [{where}]"
    if name == SchemaName.EVENT:
        event = doc.get("event", {})
        data = json.dumps(event.get("data", {}), ensure_ascii=False) if event.get("data") else ""
        return f"EVENT  #{doc.get('seq')} {event.get('type')} {dev} {data}".rstrip()
    if name == SchemaName.TELEMETRY:
        return f"value  #{doc.get('seq')} {dev} {_values(doc)}"
    if name == SchemaName.STATUS:
        return f"STATUS {doc.get('gateway')} {doc.get('state')} session={doc.get('session')} {doc.get('reason', '')}".rstrip()
    if name == SchemaName.ALARM:
        ack = doc.get("ack") or {}
        by = f" ack by {ack.get('by')}" if ack.get("by") else ""
        return (
            f"ALARM  {doc.get('alarm_id')} {doc.get('type')}/{doc.get('severity')} "
            f"{doc.get('state')} {dev} {doc.get('cause')} x{doc.get('count')} "
            f"escalation={doc.get('escalation')}{by}"
        )
    if name == SchemaName.TICKET:
        alarm = doc.get("alarm", {}) if isinstance(doc.get("alarm"), dict) else {}
        by = f" by {doc.get('acknowledged_by')}" if doc.get("acknowledged_by") else ""
        return (
            f"TICKET {doc.get('ticket_id')} {doc.get('state')}{by} team={doc.get('team')} "
            f"alarm={alarm.get('gateway')}/{alarm.get('alarm_id')} ({alarm.get('type')})"
        )
    if name == SchemaName.SERVICE_REQUEST:
        return (
            f"REQUEST {doc.get('code')} {doc.get('category')} from kiosk {doc.get('kiosk')}"
            f" flat={doc.get('flat') or '-'}"
        )
    if name == SchemaName.AVAILABILITY:
        return f"avail  {dev} {doc.get('state')} {doc.get('reason', '')}".rstrip()
    if name == SchemaName.HEALTH:
        box = doc.get("outbox", {})
        pub = doc.get("publish", {})
        return (
            f"health outbox={box.get('depth')} dropped={box.get('dropped_telemetry')} "
            f"rate={pub.get('rate_per_s')}/s connected={pub.get('connected')}"
        )
    return f"{topic}  {payload[:120].decode(errors='replace')}"


@click.command()
@click.option("--broker", "broker_url", default="mqtt://127.0.0.1:1883", show_default=True)
@click.option("--topic", default=f"{DEFAULT_PREFIX}/#", show_default=True, help="Topic filter.")
@click.option("--seconds", type=float, default=None, help="Stop after this long.")
@click.option("--raw", is_flag=True, help="Print topic and payload as received.")
def watch(broker_url: str, topic: str, seconds: float | None, raw: bool) -> None:
    """Follow messages on a broker: events, readings, status, availability, health."""
    parts = urlsplit(broker_url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    done = threading.Event()

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            click.echo(f"broker refused: {rc}", err=True)
            done.set()
        else:
            c.subscribe(topic, qos=1)

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        stamp = time.strftime("%H:%M:%S")
        line = (
            f"{msg.topic} {msg.payload.decode(errors='replace')}"
            if raw
            else summarise(msg.topic, bytes(msg.payload))
        )
        click.echo(f"{stamp} {'(retained) ' if msg.retain else ''}{line}")

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    try:
        done.wait(seconds)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
