"""`gateway watch`: one readable line per message, for installers and the demo."""

from __future__ import annotations

import json

from gateway.cli.watch import summarise

BASE = "community/v1/site/gw"
DEVICE = {"id": "smoke-b2-1", "kind": "smoke", "location": {"building": "2", "floor": 1}}


def test_alarm_states_show_type_state_device_and_who_acknowledged() -> None:
    doc = {
        "schema": {"name": "community.alarm", "version": 1},
        "alarm_id": "k3f9-7",
        "type": "fire",
        "severity": "critical",
        "state": "acknowledged",
        "device": DEVICE,
        "cause": "smoke.alarm",
        "count": 2,
        "escalation": 1,
        "ack": {"by": "staff-li", "note": "", "at": "x", "via": "web"},
    }
    line = summarise(f"{BASE}/alarms/k3f9-7", json.dumps(doc).encode())
    assert line == (
        "ALARM  k3f9-7 fire/critical acknowledged smoke-b2-1 [2/1] smoke.alarm x2 "
        "escalation=1 ack by staff-li"
    )
    assert summarise(f"{BASE}/alarms/k3f9-7", b"") == (
        "ALARM  k3f9-7 closed: retained state removed"
    )


def test_tickets_and_service_requests_get_their_own_lines() -> None:
    ticket = {
        "schema": {"name": "community.ticket", "version": 1},
        "ticket_id": "T-000001",
        "state": "open",
        "team": "fire-safety",
        "acknowledged_by": None,
        "alarm": {"gateway": "gw", "alarm_id": "k3f9-7", "type": "fire"},
    }
    assert summarise("community/v1/central/tickets/T-000001", json.dumps(ticket).encode()) == (
        "TICKET T-000001 open team=fire-safety alarm=gw/k3f9-7 (fire)"
    )
    request = {
        "schema": {"name": "community.service_request", "version": 1},
        "code": "K7M2QX",
        "category": "repair",
        "kiosk": "lobby",
        "flat": None,
    }
    assert summarise(f"{BASE}/requests/K7M2QX", json.dumps(request).encode()) == (
        "REQUEST K7M2QX repair from kiosk lobby flat=-"
    )
