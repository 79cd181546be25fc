"""Remote configuration without a broker: the checks of a desired document, and the trial's steps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from community_protocol.ed25519 import generate_key, load_private_key, load_public_key
from community_protocol.enums import ConfigResult
from gateway.fleet.check import Candidate, Refusal, check_desired
from gateway.fleet.restart import start_trial
from gateway.fleet.state import FleetFiles, Running
from gateway.fleet.trial import INTERRUPTED, STOPPED_IN_TRIAL, on_start, switch
from gateway.sdk.model import Identity
from tests.fleet_harness import signed_desired
from tests.harness import simulated_meter, write_config


@pytest.fixture
def setup(tmp_path: Path) -> tuple[FleetFiles, Ed25519PrivateKey, dict[str, Any]]:
    private, public, _ = generate_key(tmp_path / "keys", "config")
    config = write_config(
        tmp_path / "gateway.yaml",
        "mqtt://127.0.0.1:1883",
        [simulated_meter("m1", 1)],
        security={"config_keys": [str(public)]},
    )
    return FleetFiles(config), load_private_key(private), yaml.safe_load(config.read_text())


def _identity(doc: dict[str, Any]) -> Identity:
    return Identity(doc["site"]["id"], doc["gateway"]["id"])


def _check(
    files: FleetFiles, key: Ed25519PrivateKey, doc: dict[str, Any], version: int = 1, **kw: Any
) -> Candidate | Refusal:
    # The gateway is who the config on disk says, whatever the document names.
    identity = _identity(yaml.safe_load(files.config.read_text()))
    desired = signed_desired(key, identity, version, doc)
    public = load_public_key(files.config.parent / "keys" / "config.pub")
    return check_desired(
        desired,
        identity=identity,
        keys=[public],
        running=kw.pop("running", Running()),
        files=files,
        **kw,
    )


def test_a_good_document_is_a_candidate_and_leaves_no_file_behind(setup: Any) -> None:
    files, key, doc = setup
    doc["health"] = {"interval_s": 5}
    verdict = _check(files, key, doc)
    assert isinstance(verdict, Candidate) and verdict.version == 1
    assert yaml.safe_load(verdict.text)["health"] == {"interval_s": 5}
    assert not files.candidate_path.exists()


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d["security"].update(config_keys=[]), "security.config_keys"),
        (lambda d: d["gateway"].update(id="gw-other"), "gateway.id"),
        (
            lambda d: d["broker"].update(password={"file": "/nonexistent/secret"}),
            "broker.password.file",
        ),
        (lambda d: d["broker"].update(password="inline-secret"), "broker.password"),
        (lambda d: d["devices"][0]["driver"].update(rate_hz=0), "devices[0].driver.rate_hz"),
    ],
)
def test_a_config_that_must_not_run_is_refused_at_its_path(
    setup: Any, change: Any, path: str
) -> None:
    files, key, doc = setup
    change(doc)
    verdict = _check(files, key, doc)
    assert isinstance(verdict, Refusal), verdict
    assert path in [p["path"] for p in verdict.problems], verdict.problems


def test_an_old_or_rolled_back_version_is_ignored_quietly(setup: Any) -> None:
    files, key, doc = setup
    old = _check(files, key, doc, 3, running=Running(version=3))
    assert isinstance(old, Refusal) and old.quiet
    again = _check(files, key, doc, 4, running=Running(version=3), rolled_back=4)
    assert isinstance(again, Refusal) and again.quiet
    assert isinstance(
        _check(files, key, doc, 5, running=Running(version=3), rolled_back=4), Candidate
    )


def _switched(files: FleetFiles, key: Ed25519PrivateKey, doc: dict[str, Any]) -> bytes:
    before = files.config.read_bytes()
    doc["health"] = {"interval_s": 7}
    verdict = _check(files, key, doc)
    assert isinstance(verdict, Candidate)
    switch(files, verdict, Running(), 30.0)
    return before


def test_a_start_tries_a_trial_once_and_the_next_start_rolls_it_back(setup: Any) -> None:
    files, key, doc = setup
    before = _switched(files, key, doc)
    trial = on_start(files)
    assert trial is not None and trial.attempts == 1
    assert files.config.read_bytes() != before
    # That start died without committing (kill -9, power cut): the next one rolls back.
    assert on_start(files) is None
    assert files.config.read_bytes() == before
    assert files.read_trial() is None
    last = files.read_state().last
    assert last is not None and last.result is ConfigResult.ROLLED_BACK
    assert last.reason == STOPPED_IN_TRIAL and not last.audited


def test_a_switch_killed_before_the_config_was_replaced_is_rolled_back(setup: Any) -> None:
    files, key, doc = setup
    before = _switched(files, key, doc)
    files.config.write_bytes(before)  # as if killed between the trial file and the config
    assert on_start(files) is None
    assert files.config.read_bytes() == before
    last = files.read_state().last
    assert last is not None and last.reason == INTERRUPTED


def test_a_candidate_that_does_not_load_here_is_rolled_back_before_the_start(
    setup: Any, tmp_path: Path
) -> None:
    files, key, doc = setup
    before = _switched(files, key, doc)
    # The secret it names disappeared between the check and the start.
    text = files.config.read_text().replace("interval_s: 7", "interval_s: -1")
    trial = files.read_trial()
    assert trial is not None
    files.config.write_text(text)
    from gateway.fleet.state import sha256_of

    files.write_trial(replace(trial, sha256=sha256_of(text.encode())))
    assert start_trial(files.config) is None
    assert files.config.read_bytes() == before
    last = files.read_state().last
    assert last is not None and "does not load" in last.reason


def test_config_status_says_what_runs_what_is_pending_and_how_the_last_went(setup: Any) -> None:
    from click.testing import CliRunner

    from gateway.fleet.cli import config

    files, key, doc = setup

    def status() -> str:
        result = CliRunner().invoke(config, ["status", "-c", str(files.config)])
        assert result.exit_code == 0, result.output
        return result.output

    assert "version 0 (installed on site)" in status()
    assert "pending     nothing" in status()
    _switched(files, key, doc)
    assert "pending     version 1 signed by ops-test: switched, not started yet" in status()
    on_start(files)
    assert "being tried now" in status()
    on_start(files)  # that start died: rolled back
    out = status()
    assert "pending     nothing" in out
    assert "last        version 1: rolled_back" in out and STOPPED_IN_TRIAL in out
    files.config.write_text(files.config.read_text() + "\n# edited on site\n")
    files.write_state(replace(files.read_state(), running=Running(version=2, sha256="ab" * 32)))
    assert "changed on site" in status()
