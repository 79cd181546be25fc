"""Remote configuration that breaks the broker credentials or TLS is rolled back by the gateway.

The gateway runs with mutual TLS and a password; a signed configuration that passes
every check on the gateway (the files exist, parse and match) but that the broker
refuses, a wrong password or a CA that did not sign the broker's certificate, must
bring the previous configuration back within the trial time, by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fleet_harness import Platform, config_status, signed_desired
from tests.harness import GatewayProc, Subscriber
from tests.test_fleet_e2e import TRIAL_S, _reports, _wait_result
from tests.test_tls_uplink import config_for, tls_broker

__all__ = ["tls_broker"]  # the fixture, used by name

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.mark.parametrize("wrong", ["password", "ca"])
def test_credentials_or_tls_the_broker_refuses_are_rolled_back(
    tmp_path: Path, tls_broker: Any, wrong: str
) -> None:
    broker, pki, port = tls_broker
    config = config_for(tmp_path, broker, pki, port, ca=pki.ca, password="right-password")
    platform = Platform(config, broker.port, tmp_path / "keys")
    doc = yaml.safe_load(config.read_text())
    doc["security"] = {"config_keys": [str(platform.public)], "config_trial_s": TRIAL_S}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    before = config.read_bytes()
    sub = Subscriber(broker.port, f"{platform.base}/#").start()
    gw = GatewayProc(config).start()
    try:
        assert sub.wait(lambda ms: _reports(ms)), gw.log()[-2000:]
        wanted = platform.current()
        if wrong == "password":
            other = tmp_path / "secrets" / "new-password"
            other.write_text("not-the-password\n")
            wanted["broker"]["password"] = {"file": str(other)}
        else:
            # Without a client certificate the CA is not checked against one: it loads.
            wanted["broker"]["tls"] = {"ca_file": str(pki.other_ca)}
        platform.publish(signed_desired(platform.key, platform.identity, 1, wanted))
        report = _wait_result(sub, "rolled_back", 1, timeout=TRIAL_S + 30)
        assert report["version"] == 0
        assert f"within {TRIAL_S} s" in report["reason"]
        expected = {"password": "credentials", "ca": "ca_file"}[wrong]
        assert expected in report["reason"], report["reason"]
        assert config.read_bytes() == before
        assert config_status(config)["trial"] is None
        assert gw.running()
    finally:
        gw.terminate()
        sub.stop()
