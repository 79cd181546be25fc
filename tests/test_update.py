"""Software updates: the signed manifest, the bounded fetch, the database guard, the launcher's rollback.

The launcher runs as a real process over release folders whose `bin/gateway` are tiny
scripts (one that crashes, one that cannot even import, one that works); the
databases are real files made by the gateway's own stores.  The whole path over a
real bundle is in test_update_e2e.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import platform
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from community_protocol.ed25519 import sign_update
from gateway.alarms.store import AlarmStore
from gateway.fleet import launch
from gateway.fleet.update import (
    KIND,
    LocalDatabase,
    UpdateRefused,
    check_manifest,
    release_schemas,
    schema_problems,
)
from gateway.fleet.update_install import (
    Layout,
    commit,
    fetch,
    make_venv,
    rollback,
    running_pip,
    switch,
)
from gateway.storage.outbox_sql import SCHEMA_VERSION
from tests.peers import free_port

LAUNCH = Path(launch.__file__)
PY = "{}.{}".format(*sys.version_info[:2])


def body(version: str = "9.9.9", data: bytes = b"bundle", **extra: Any) -> dict[str, Any]:
    return {
        "kind": KIND,
        "version": version,
        "archive": {
            "name": f"community-gateway-{version}.tar.gz",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        "arch": platform.machine(),
        "python": PY,
        "schemas": release_schemas(),
        **extra,
    }


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_a_manifest_signed_by_a_trusted_update_key_is_accepted(key: Ed25519PrivateKey) -> None:
    m = check_manifest(sign_update(key, body()), [key.public_key()])
    assert m.version == "9.9.9" and m.size == len(b"bundle")
    assert m.schemas["outbox"] == (0, SCHEMA_VERSION)


def test_a_manifest_not_signed_right_is_refused_saying_why(key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    signed = sign_update(key, body())
    cases = {
        "not signed": body(),
        "is not an update key this gateway trusts": sign_update(other, body()),
        "does not verify": {**signed, "version": "9.9.10"},
        "built for": sign_update(key, body(arch="riscv64")),
        "not a version": sign_update(key, body(version="../../etc")),
        "must be a plain file name": sign_update(
            key, {**body(), "archive": {**body()["archive"], "name": "../x.tar.gz"}}
        ),
    }
    for why, doc in cases.items():
        with pytest.raises(UpdateRefused, match=why):
            check_manifest(doc, [key.public_key()])
    with pytest.raises(UpdateRefused, match="trusts no update key"):
        check_manifest(signed, [])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, list[bytes]]]:
    """A loopback HTTP server answering every GET with the bytes in `payload[0]`."""
    payload = [b""]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            # The gateway hangs up on an answer longer than promised: as tested.
            with contextlib.suppress(ConnectionError):
                self.wfile.write(payload[0])

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/bundle.tar.gz", payload
    server.shutdown()
    server.server_close()


def test_fetch_checks_size_and_hash_and_leaves_nothing_behind(
    tmp_path: Path, key: Ed25519PrivateKey, served: tuple[str, list[bytes]]
) -> None:
    data = os.urandom(200_000)
    m = check_manifest(sign_update(key, body(data=data)), [key.public_key()])
    src = tmp_path / "b.tar.gz"
    src.write_bytes(data)
    into = tmp_path / "dl"
    assert fetch(src.as_uri(), m, into).read_bytes() == data
    url, payload = served
    payload[0] = data
    assert fetch(url, m, into).read_bytes() == data
    # Replaced on the server, longer than announced (a disk filler), shorter, absent.
    for served_bytes, why in [
        (data[:-1] + b"x", "SHA-256"),
        (data + os.urandom(10_000_000), "more than the 200000 bytes"),
        (data[:1000], "1000 bytes, not the 200000"),
    ]:
        payload[0] = served_bytes
        with pytest.raises(UpdateRefused, match=why):
            fetch(url, m, into)
        assert list(into.iterdir()) == []
    with pytest.raises(UpdateRefused, match="cannot fetch"):
        fetch((tmp_path / "absent").as_uri(), m, into)
    with pytest.raises(UpdateRefused, match="file://, http:// or https://"):
        fetch("ftp://example.org/b", m, into)


def test_a_release_that_would_migrate_a_database_past_this_one_is_refused(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    alarms = tmp_path / "alarms.db"
    store = AlarmStore(alarms)
    store.open()
    store.close()
    mine = AlarmStore.schema.version
    dbs = [
        LocalDatabase("alarm database", alarms, mine),
        LocalDatabase("outbox", tmp_path / "none.db", 2),
    ]

    def check(lo: int, hi: int) -> list[str]:
        schemas = {**release_schemas(), "alarm database": {"min": lo, "max": hi}}
        return schema_problems(
            check_manifest(sign_update(key, body(schemas=schemas)), [key.public_key()]), dbs
        )

    assert check(0, mine) == []  # same schema: both releases read the file
    (newer,) = check(0, mine + 1)
    assert f"to schema {mine + 1}, which this version (schema {mine}) cannot read" in newer
    (older,) = check(0, mine - 1)
    assert f"newer than its schema {mine - 1}" in older
    (gap,) = check(mine + 1, mine + 1)
    assert f"migrates from schema {mine + 1} on" in gap


def fake_release(folder: Path, behaviour: str) -> Path:
    """A venv stand-in whose `bin/gateway` records its start, then `behaviour` (shell)."""
    program = folder / "bin" / "gateway"
    program.parent.mkdir(parents=True)
    program.write_text(
        f'#!/bin/sh\necho "{folder.name} $COMMUNITY_GATEWAY_RELEASES $*" >> "$STARTS"\n{behaviour}\n'
    )
    program.chmod(0o755)
    return folder


def run_launcher(state: Path, factory: Path, starts: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-I",
            str(LAUNCH),
            "--state",
            str(state),
            "--factory",
            str(factory),
            "run",
            "-c",
            "x.yaml",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "STARTS": str(starts)},
    )


@pytest.mark.parametrize(
    "broken",
    ["exit 1", "exec python3 -c 'import gateway_that_does_not_exist'"],
    ids=["crashes", "cannot-import"],
)
def test_a_release_that_crash_loops_is_switched_back_before_it_starts_again(
    tmp_path: Path, broken: str
) -> None:
    state, starts = tmp_path / "state", tmp_path / "starts.log"
    factory = fake_release(tmp_path / "factory", "exit 0")
    layout = Layout(state, factory)
    new = try_release(layout, "2.0", broken)
    assert layout.current() == str(new)
    # systemd's Restart=always: the launcher starts again after each crash.
    codes = [run_launcher(state, factory, starts) for _ in range(3)]
    ran = [line.split()[0] for line in starts.read_text().splitlines()]
    assert ran == ["venv", "venv", "factory"]  # two tries, then the old release
    assert [c.returncode for c in codes] == [1, 1, 0]
    assert "rolled back to" in codes[2].stderr and "started 2 times" in codes[2].stderr
    assert layout.current() == str(factory)
    doc = layout.state()
    assert doc["trial"] is None and doc["last"]["result"] == "rolled_back"
    # The gateway learns where the releases are (for its health gate and commit).
    assert starts.read_text().splitlines()[0].split()[1:] == [str(state), "run", "-c", "x.yaml"]
    # Later starts run the old release, with nothing more to do.
    again = run_launcher(state, factory, starts)
    assert again.stderr == "" and starts.read_text().splitlines()[-1].startswith("factory")


KEY = Ed25519PrivateKey.generate()


def try_release(layout: Layout, version: str, behaviour: str = "exit 0") -> Path:
    """A release of `version` installed under the state folder and switched to."""
    venv = fake_release(layout.state_dir / "releases" / version / "venv", behaviour)
    manifest = check_manifest(sign_update(KEY, body(version=version)), [KEY.public_key()])
    switch(layout, manifest, venv, max_starts=2, deadline_s=60)
    return venv


def test_a_committed_release_stays_and_a_failed_gate_switches_back(tmp_path: Path) -> None:
    state, starts = tmp_path / "state", tmp_path / "starts.log"
    factory = fake_release(tmp_path / "factory", "exit 0")
    layout = Layout(state, factory)
    v2 = try_release(layout, "2.0")
    run_launcher(state, factory, starts)
    assert layout.state()["trial"]["starts"] == 1
    assert commit(layout) is not None
    for _ in range(3):  # committed: no trial, no counting, never switched back
        run_launcher(state, factory, starts)
    assert {line.split()[0] for line in starts.read_text().splitlines()} == {"venv"}
    assert layout.state()["last"]["result"] == "committed"
    # 3.0 fails its health gate: the gateway itself switches back to 2.0.
    try_release(layout, "3.0")
    rollback(layout, "no broker within 60 s")
    assert layout.current() == str(v2)
    assert layout.state()["last"] == {
        "version": "3.0",
        "result": "rolled_back",
        "reason": "no broker within 60 s",
        "audited": True,
    }


def test_a_switch_killed_before_the_link_moved_is_undone_at_the_next_start(tmp_path: Path) -> None:
    state, starts = tmp_path / "state", tmp_path / "starts.log"
    factory = fake_release(tmp_path / "factory", "exit 0")
    layout = Layout(state, factory)
    try_release(layout, "2.0")
    launch.point(state, str(factory))  # as if killed after the trial was written
    assert run_launcher(state, factory, starts).returncode == 0
    assert starts.read_text().startswith("factory")
    doc = layout.state()
    assert doc["trial"] is None and "interrupted" in doc["last"]["reason"]


def test_the_launcher_runs_the_installed_program_when_the_state_is_damaged(tmp_path: Path) -> None:
    state, starts = tmp_path / "state", tmp_path / "starts.log"
    factory = fake_release(tmp_path / "factory", "exit 0")
    (state / "update").mkdir(parents=True)
    (state / launch.STATE_FILE).write_text("{not json")
    assert run_launcher(state, factory, starts).returncode == 0
    assert starts.read_text().startswith("factory")
    # A `current` that points nowhere (a release folder removed by hand): the installed one.
    os.symlink(tmp_path / "gone", state / "current")
    assert run_launcher(state, factory, starts).returncode == 0
    assert starts.read_text().splitlines()[-1].startswith("factory")


def test_state_writes_are_atomic_renames(tmp_path: Path) -> None:
    launch.write_state(tmp_path, {"trial": None})
    launch.point(tmp_path, "/a")
    launch.point(tmp_path, "/b")
    assert os.readlink(tmp_path / "current") == "/b"
    assert json.loads((tmp_path / launch.STATE_FILE).read_text()) == {"trial": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "update"]
    assert [p.name for p in (tmp_path / "update").iterdir()] == ["state.json"]


def _pip_in(venv: Path) -> tuple[int, list[str]]:
    """`pip --version`'s exit status in `venv`, and the top-level names beside pip."""
    ran = subprocess.run(
        [str(venv / "bin/python"), "-I", "-m", "pip", "--version"], capture_output=True
    )
    site = next((venv / "lib").glob("python3.*/site-packages"))
    return ran.returncode, sorted(
        p.name.split("-")[0] for p in site.iterdir() if not p.name.startswith("_")
    )


def test_a_release_venv_gets_the_running_releases_pip_for_the_update_after(tmp_path: Path) -> None:
    python = getattr(sys, "_base_executable", sys.executable)
    make_venv(python, tmp_path / "venv", tmp_path)
    status, names = _pip_in(tmp_path / "venv")
    assert status == 0  # the next update builds its venv with this one's pip
    assert set(names) == {"pip"}, names  # copied, not ensurepip's pip and setuptools


def test_without_a_pip_of_its_own_the_release_venv_is_made_by_ensurepip(tmp_path: Path) -> None:
    make_venv(getattr(sys, "_base_executable", sys.executable), tmp_path / "venv", tmp_path, pip=[])
    status, names = _pip_in(tmp_path / "venv")
    assert status == 0 and "pip" in names, names


def test_looking_for_the_running_pip_leaves_setuptools_importable() -> None:
    # A test worker failed importing setuptools after find_spec("pip") had made its
    # distutils shim stand down; the update service must not do that to its process.
    code = (
        "import sys; from gateway.fleet.update_install import running_pip\n"
        "assert running_pip(getattr(sys, '_base_executable', sys.executable))\n"
        "import setuptools"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    other = running_pip("/nonexistent/python3")
    assert other == []  # another interpreter's venv gets its own pip, from ensurepip
