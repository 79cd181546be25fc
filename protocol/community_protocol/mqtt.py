"""The paho-mqtt pieces both products need, written once (the `mqtt` extra: paho-mqtt 2).

The gateway's adapter (gateway/mqtt/client.py) and the central side's
(community_central/broker.py) build their clients from their own settings; what
does not depend on those settings is here: PUBLISH properties by name, whether a
CONNACK refusal is about the credentials, and stopping a client's network thread
within a bounded time.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["publish_properties", "refused_credentials", "stop_loop"]

log = logging.getLogger(__name__)


def publish_properties(**values: Any) -> Properties:
    """PUBLISH properties from keyword names, e.g. ResponseTopic=..., CorrelationData=b'...'."""
    props = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def refused_credentials(reason_code: Any) -> bool:
    """Whether a CONNACK refusal is about the user name or password (MQTT 5 and 3.1.1)."""
    text = str(reason_code)
    return "Not authorized" in text or "Bad user name or password" in text


def stop_loop(client: mqtt.Client, name: str, timeout_s: float) -> bool:
    """Disconnect and wait at most `timeout_s` for paho's network thread; whether it ended.

    Not `loop_stop`: it joins without a timeout, and in paho 2.2 it reads the thread
    twice while the thread clears it on exit, so a thread that ended in between makes
    it raise AttributeError.
    """
    thread = client._thread  # paho names its network thread nowhere else
    client.disconnect()
    if thread is None or thread is threading.current_thread():
        return True
    thread.join(timeout_s)
    if thread.is_alive():
        log.warning("MQTT connection %s: paho did not stop within %.1f s", name, timeout_s)
        return False
    return True
