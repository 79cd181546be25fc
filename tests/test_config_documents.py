"""The remote configuration documents: builders pass their schemas, signatures bind gateway and content."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from community_protocol.documents import config_desired_document, config_reported_document
from community_protocol.ed25519 import SignatureError, key_id, sign_config, verify_config
from community_protocol.enums import ClockState, ConfigResult
from community_protocol.ids import Identity
from community_protocol.schemas import validator
from community_protocol.signing import config_message
from community_protocol.signing import signed_message as command_message
from community_protocol.topics import Topics

GW = Identity("site-a", "gw-1")
NOW = datetime(2026, 12, 6, 17, 0, tzinfo=UTC)


def _desired(key: Ed25519PrivateKey, **change: Any) -> dict[str, Any]:
    doc = config_desired_document(
        GW,
        version=3,
        config={"version": 1, "devices": [], "broker": {"url": "mqtt://127.0.0.1:1883"}},
        signed_by="ops-li",
        issued_at=NOW,
    )
    doc.update(change)
    return sign_config(key, doc)


def test_a_signed_desired_document_passes_its_schema_and_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    doc = _desired(key)
    assert list(validator("config-desired").iter_errors(doc)) == []
    assert verify_config(GW, [key.public_key()], doc) == key_id(key.public_key())


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        (lambda d: d.update(version=4), "does not verify"),
        (lambda d: d["config"].update(devices=[{"id": "x"}]), "does not verify"),
        (lambda d: d.update(signed_by="someone-else"), "does not verify"),
        (lambda d: d.pop("auth"), "not signed"),
        (lambda d: d["auth"].update(key_id="0" * 16), "not a key this gateway trusts"),
        (lambda d: d["auth"].update(sig="not base64!"), "does not verify"),
        (lambda d: d["auth"].update(key_id="ABC"), "16 hex digits"),
    ],
)
def test_a_changed_or_unsigned_document_does_not_verify(tamper: Any, why: str) -> None:
    key = Ed25519PrivateKey.generate()
    doc = _desired(key)
    tamper(doc)
    with pytest.raises(SignatureError, match=why):
        verify_config(GW, [key.public_key()], doc)


def test_a_document_signed_for_another_gateway_does_not_verify_here() -> None:
    key = Ed25519PrivateKey.generate()
    other = _desired(key, gateway="gw-2")
    # Even with the gateway field rewritten, the signature names gw-2.
    other["gateway"] = "gw-1"
    with pytest.raises(SignatureError, match="does not verify"):
        verify_config(GW, [key.public_key()], other)


def test_a_command_signature_never_passes_as_a_configuration_signature() -> None:
    key = Ed25519PrivateKey.generate()
    doc = _desired(key)
    body = {k: v for k, v in doc.items() if k != "auth"}
    assert config_message(GW, body) != command_message("site-a/gw-1", "", "", body)
    forged = key.sign(command_message("site-a/gw-1", "x", "y", body))
    doc["auth"]["sig"] = base64.b64encode(forged).decode()
    with pytest.raises(SignatureError):
        verify_config(GW, [key.public_key()], doc)


@pytest.mark.parametrize("result", list(ConfigResult))
def test_the_reported_builder_makes_valid_documents(result: ConfigResult) -> None:
    doc = config_reported_document(
        GW,
        version=0,
        sha256="ab" * 32,
        applied_at=None,
        signed_by=None,
        result=result,
        desired_version=None if result is ConfigResult.APPLIED else 2,
        previous_version=None,
        problems=[{"path": "devices[3].port", "message": "Field required"}],
        ts=NOW,
        clock=ClockState.UNSYNCED,
        reason="why",
    )
    assert list(validator("config-reported").iter_errors(doc)) == []


def test_the_config_topics_are_in_the_gateways_subtree() -> None:
    topics = Topics("community/v1", GW)
    assert topics.config_desired == "community/v1/site-a/gw-1/config/desired"
    assert topics.config_reported == "community/v1/site-a/gw-1/config/reported"
    fleet = Topics.fleet("community/v1")
    assert fleet.config_reported == "community/v1/+/+/config/reported"
