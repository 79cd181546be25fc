"""scripts/install.sh into a temporary root: layout, idempotence, upgrade, uninstall,
and the offline bundle of scripts/bundle.

Most tests skip the virtualenv (--skip-venv) to stay quick.  The slow ones build it for
real under the root and run the installed `gateway` where the image will have it: in a
mount namespace with the root's /opt mounted on /opt.  The offline ones install with no
network at all (a network namespace of their own).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bundles import shared_bundle
from tests.harness import GATEWAY

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install.sh"
BUNDLE_SCRIPT = ROOT / "scripts" / "bundle"
UNITS = "etc/systemd/system"
OFFLINE = ("unshare", "--net")  # no network at all, not even loopback
# Building venvs with pip: minutes on a loaded machine, more than the suite's 600 s
# per-test limit allows (pyproject.toml); install() itself gives up after 900 s.
pytestmark = pytest.mark.timeout(1800)


def no_index() -> dict[str, str]:
    """The environment of a site with no package index: no pip config, no local wheels."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PYTHON": sys.executable, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}


def install(
    root: Path,
    *args: str,
    prefix: tuple[str, ...] = (),
    ok: bool = True,
    script: Path = SCRIPT,
) -> subprocess.CompletedProcess[str]:
    """install.sh --root ROOT ARGS; with a prefix (OFFLINE) at a site with no index."""
    result = subprocess.run(
        [*prefix, "bash", str(script), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=no_index() if prefix else None,
    )
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def as_booted(root: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """Run a command with the tree's /opt at /opt, where the booted image has it."""
    script = f'mount --bind "{root}/opt" /opt && exec "$@"'
    return subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", *command],
        capture_output=True,
        text=True,
        timeout=120,
    )


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path with its type, mode, owner, mtime and content or link target."""
    seen: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            what: object = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            what = None
        seen[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, what)
    return seen


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("script", [SCRIPT, BUNDLE_SCRIPT], ids=["install.sh", "bundle"])
def test_shellcheck_is_clean(script: Path) -> None:
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_install_lays_out_the_tree_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    first = install(root, "--skip-venv")
    assert "the image makes system user community-gateway (groups dialout) when it boots" in (
        first.stdout
    )

    for unit in ("community-gateway.service", "community-gateway-firstboot.service"):
        installed = root / UNITS / unit
        assert installed.read_bytes() == (ROOT / "systemd" / unit).read_bytes()
        assert mode(installed) == 0o644
        link = root / UNITS / "multi-user.target.wants" / unit
        assert os.readlink(link) == f"/etc/systemd/system/{unit}"
    command = os.readlink(root / "usr/local/bin/gateway")
    assert command == "/opt/community-gateway/venv/bin/gateway"
    etc = root / "etc/community-gateway"
    assert mode(etc) == 0o700 and mode(etc / "secrets") == 0o700
    assert mode(root / "var/lib/community-gateway") == 0o700
    config = etc / "gateway.yaml"
    assert mode(config) == 0o600
    assert "path: /var/lib/community-gateway/outbox.db" in config.read_text()
    validated = subprocess.run([GATEWAY, "validate", "-c", str(config)], capture_output=True)
    assert validated.returncode == 0, validated.stderr
    assert not (root / UNITS / "community-gateway.service.d").exists(), "Debian: no gpio group"

    before = snapshot(root)
    second = install(root, "--skip-venv")
    assert snapshot(root) == before
    assert second.stdout == "" and second.stderr == "", "a run that changes nothing is silent"


def test_a_root_tree_gets_its_user_and_hands_it_the_config_when_the_image_boots(
    tmp_path: Path,
) -> None:
    # --root creates no user, and the service reads its config as that user: the image
    # makes the user at boot (systemd-sysusers), then hands it the config folder
    # (systemd-tmpfiles), as their boot services do with the image's root.
    root = tmp_path / "root"
    root.mkdir()
    install(root, "--skip-venv")
    for tool in (["systemd-sysusers"], ["systemd-tmpfiles", "--create"]):
        booted = subprocess.run([*tool, f"--root={root}"], capture_output=True, text=True)
        assert booted.returncode == 0, booted.stderr
    user = next(
        line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
        if line.startswith("community-gateway:")
    )
    owner = (int(user[2]), int(user[3]))
    assert user[5:] == ["/var/lib/community-gateway", "/usr/sbin/nologin"]
    assert "community-gateway" in next(
        line
        for line in (root / "etc/group").read_text().splitlines()
        if line.startswith("dialout:")
    )
    etc = root / "etc/community-gateway"
    for path, want in ((etc, 0o700), (etc / "secrets", 0o700), (etc / "gateway.yaml", 0o600)):
        st = path.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (want, *owner), path


def test_a_gpio_group_gets_a_drop_in_and_the_user_is_given_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/group").write_text("dialout:x:20:\ngpio:x:997:\n")
    (root / "etc/passwd").write_text(
        "community-gateway:x:4321:4322::/var/lib/community-gateway:/usr/sbin/nologin\n"
    )
    install(root, "--skip-venv")
    dropin = root / UNITS / "community-gateway.service.d/gpio.conf"
    assert "SupplementaryGroups=gpio" in dropin.read_text()
    for path in ("etc/community-gateway", "etc/community-gateway/secrets",
                 "etc/community-gateway/gateway.yaml", "var/lib/community-gateway"):  # fmt: skip
        st = (root / path).stat()
        assert (st.st_uid, st.st_gid) == (4321, 4322), path


def test_upgrade_keeps_config_and_state_and_restores_the_units(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install(root, "--skip-venv")
    config = root / "etc/community-gateway/gateway.yaml"
    config.write_text(config.read_text().replace("my-site", "sunrise-gardens"))
    secret = root / "etc/community-gateway/secrets/broker-password"
    secret.write_text("s3cret\n")
    outbox = root / "var/lib/community-gateway/outbox.db"
    outbox.write_bytes(b"SQLite format 3\0 pretend")
    unit = root / UNITS / "community-gateway.service"
    unit.write_text("# edited by hand\n")
    kept = {p: p.read_bytes() for p in (config, secret, outbox)}

    install(root, "--skip-venv", "--upgrade")
    assert {p: p.read_bytes() for p in kept} == kept
    assert unit.read_bytes() == (ROOT / "systemd/community-gateway.service").read_bytes()


def test_uninstall_keeps_data_unless_purged(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install(root, "--skip-venv")
    outbox = root / "var/lib/community-gateway/outbox.db"
    outbox.write_bytes(b"messages waiting")

    result = install(root, "--uninstall")
    assert "kept /etc/community-gateway and /var/lib/community-gateway" in result.stdout
    assert not (root / "opt/community-gateway").exists()
    assert not (root / "usr/local/bin/gateway").is_symlink()
    assert not list((root / UNITS).rglob("community-gateway*"))
    assert not list((root / "usr/lib").rglob("community-gateway*")), "sysusers.d, tmpfiles.d"
    assert (root / "etc/community-gateway/gateway.yaml").exists()
    assert outbox.read_bytes() == b"messages waiting"

    install(root, "--uninstall", "--purge")
    assert not (root / "etc/community-gateway").exists()
    assert not (root / "var/lib/community-gateway").exists()


def test_first_boot_after_install_replaces_the_example_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install(root, "--skip-venv")
    folder = root / "boot/firmware/community-gateway"
    folder.mkdir(parents=True)
    (folder / "gateway.yaml").write_text(
        "version: 1\nsite: {id: s}\ngateway: {id: g}\nbroker: {url: 'mqtt://10.0.0.2:1883'}\n"
        "outbox: {path: /var/lib/community-gateway/outbox.db}\n"
    )
    result = subprocess.run(
        [GATEWAY, "firstboot", "--root", str(root)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    installed = (root / "etc/community-gateway/gateway.yaml").read_text()
    assert "mqtt://10.0.0.2:1883" in installed


def verify_units(root: Path) -> None:
    """systemd accepts both units with the real program in place."""
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", symlinks=True)
    for unit in ("community-gateway.service", "community-gateway-firstboot.service"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", "--recursive-errors=yes", f"--root={root}", unit],
            capture_output=True,
            text=True,
        )
        assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    shutil.rmtree(root / "lib/systemd/system")


def assert_boots(root: Path) -> None:
    """The installed program runs from /opt, and the tree names no build-time path."""
    version = as_booted(root, "/opt/community-gateway/venv/bin/gateway", "--version")
    assert version.returncode == 0 and version.stdout.startswith("gateway, version "), version
    # What ExecStart= runs: the launcher (its #! is the system's python3) execs that venv.
    state = str(root / "var/lib/community-gateway")
    launched = as_booted(root, "/opt/community-gateway/launch", "--state", state, "--version")
    assert launched.returncode == 0 and launched.stdout == version.stdout, launched
    config = root / "etc/community-gateway/gateway.yaml"
    validated = as_booted(
        root, "/opt/community-gateway/venv/bin/gateway", "validate", "-c", str(config)
    )
    assert validated.returncode == 0, validated.stderr
    named = subprocess.run(
        ["grep", "-rlF", str(root), str(root / "opt")], capture_output=True, text=True
    )
    assert named.stdout == "", f"files that name the build folder:\n{named.stdout[:2000]}"


@pytest.mark.slow
def test_a_real_install_builds_a_working_venv_that_systemd_accepts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install(root)
    venv = root / "opt/community-gateway/venv"
    assert venv.is_symlink() and os.readlink(venv).startswith("venvs/")
    # The installed package is a copy, not a link to this checkout.
    where = subprocess.run(
        [str(venv / "bin/python"), "-c", "import gateway; print(gateway.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    assert os.path.realpath(where.strip()).startswith(str(root / "opt/community-gateway/venvs/"))
    assert_boots(root)
    verify_units(root)

    before = snapshot(root)
    again = install(root)
    assert snapshot(root) == before, "a second run does not touch the venv either"
    assert again.stdout == "", again.stdout


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of this checkout for this machine (one per run, shared with the update tests)."""
    return shared_bundle(tmp_path_factory)


def beside(seen: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    """A snapshot but for the time of venvs/, where a failed venv was made and removed."""
    return {k: v for k, v in seen.items() if k != "opt/community-gateway/venvs"}


def offline_possible() -> bool:
    return subprocess.run([*OFFLINE, "true"], capture_output=True).returncode == 0


@pytest.mark.slow
def test_the_offline_bundle_installs_with_no_network_and_a_failed_upgrade_changes_nothing(
    tmp_path: Path, bundle: Path
) -> None:
    if not offline_possible():
        pytest.skip("no network namespaces here (unshare --net)")
    root = tmp_path / "root"
    root.mkdir()
    first = install(root, "--bundle", str(bundle), prefix=OFFLINE)
    assert "from the bundle" in first.stdout
    assert_boots(root)
    verify_units(root)
    before = snapshot(root)

    # A copy damaged on its way to the site: refused before anything changes.
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    failed = install(root, "--upgrade", "--bundle", str(cut), prefix=OFFLINE, ok=False)
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1].startswith(
        f"install: error: {cut} is not a complete bundle"
    )

    # A bundle that lacks a dependency (made for another machine, edited by hand): pip
    # fails in the new venv beside the old one, and the old one goes on.
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xzf", str(bundle), "-C", str(unpacked)], check=True)
    (tree,) = unpacked.glob("community-gateway-*")
    wheels = tree / "wheels"
    (wheel,) = wheels.glob("pydantic_core-*.whl")
    wheel.unlink()
    sums = wheels / "SHA256SUMS"
    sums.write_text("".join(x for x in sums.read_text().splitlines(True) if wheel.name not in x))
    inner = tree / "scripts/install.sh"
    lacking = install(root, "--upgrade", prefix=OFFLINE, ok=False, script=inner)
    assert lacking.returncode == 1, lacking.stdout + lacking.stderr
    assert "No matching distribution found for pydantic-core" in lacking.stderr
    assert lacking.stderr.splitlines()[-1].startswith(
        "install: error: pip could not install the gateway from the bundle's wheels"
    )
    assert beside(snapshot(root)) == beside(before), "the previous install is untouched"
    assert_boots(root)

    # A wheel whose bytes changed: caught by the bundle's checksums.
    (tree / "wheels" / wheel.name).write_bytes(b"not a wheel")
    sums.write_text(sums.read_text() + f"{'0' * 64}  {wheel.name}\n")
    damaged = install(root, "--upgrade", prefix=OFFLINE, ok=False, script=inner)
    assert damaged.returncode == 1
    assert damaged.stderr.splitlines()[-1].startswith("install: error: the bundle is damaged")
    assert beside(snapshot(root)) == beside(before)


@pytest.mark.slow
def test_without_network_or_bundle_the_install_says_so_and_leaves_nothing_half_built(
    tmp_path: Path,
) -> None:
    if not offline_possible():
        pytest.skip("no network namespaces here (unshare --net)")
    root = tmp_path / "root"
    root.mkdir()
    result = install(root, prefix=OFFLINE, ok=False)
    assert result.returncode == 1
    last = result.stderr.splitlines()[-1]
    assert last.startswith("install: error: pip could not install the gateway from "), last
    assert "scripts/bundle" in last
    assert not list((root / "opt/community-gateway/venvs").iterdir()), "no half-built venv"
    assert not (root / "opt/community-gateway/venv").exists()
