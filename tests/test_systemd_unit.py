"""The systemd units: they verify, they score as hardened, and the gateway runs inside them.

PID 1 is not systemd on CI machines, so the service cannot be started.  Instead:

- `systemd-analyze verify --root=TREE` checks both units as install.sh installed them
  into a tree.  verify insists that ExecStart's program exists and that the targets
  the units name exist, so the tree gets a copy of /lib/systemd/system and a stand-in
  program at /opt/community-gateway/venv/bin/gateway (the slow test in
  test_install_script.py verifies against the real program);
- `systemd-analyze security --offline=yes` scores the hardening;
- the real `gateway run` is started under the unit's own SystemCallFilter= (expanded by
  `systemd-analyze syscall-filter`, loaded with libseccomp), its RestrictAddressFamilies=
  and MemoryDenyWriteExecute= (the kernel's PR_SET_MDWE), and must publish as usual.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from tests.harness import GATEWAY, GatewayProc, Subscriber, topic_base, write_config
from tests.peers import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
SERVICE = "community-gateway.service"
FIRSTBOOT = "community-gateway-firstboot.service"
UNIT = ROOT / "systemd" / SERVICE
FIRSTBOOT_UNIT = ROOT / "systemd" / FIRSTBOOT
# Measured: 2.1 with AF_INET, serial devices and the adjtimex() exception (see the unit).
MAX_EXPOSURE = 2.2
# Measured: 1.6; it runs as root with five capabilities (was 8.6 EXPOSED unsandboxed).
MAX_FIRSTBOOT_EXPOSURE = 1.8


def install_tree(root: Path, *, gpio: bool = False) -> Path:
    """A root tree with the units installed by install.sh, ready for `verify --root`."""
    (root / "etc").mkdir(parents=True, exist_ok=True)
    if gpio:
        (root / "etc/group").write_text("dialout:x:20:\ngpio:x:997:\n")
    subprocess.run(
        ["bash", str(ROOT / "scripts/install.sh"), "--root", str(root), "--skip-venv"],
        check=True,
        capture_output=True,
    )
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", symlinks=True)
    program = root / "opt/community-gateway/venv/bin/gateway"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return root


def verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--recursive-errors=yes", f"--root={root}", unit],
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("gpio", [False, True], ids=["debian", "raspberry-pi-os"])
def test_both_units_verify_without_a_single_warning(tmp_path: Path, gpio: bool) -> None:
    root = install_tree(tmp_path / "root", gpio=gpio)
    dropin = root / "etc/systemd/system/community-gateway.service.d/gpio.conf"
    assert dropin.exists() == gpio
    for unit in (SERVICE, FIRSTBOOT):
        result = verify(root, unit)
        assert result.returncode == 0, result.stderr
        assert result.stderr == "" and result.stdout == "", result.stderr


def test_verify_as_used_here_does_catch_mistakes(tmp_path: Path) -> None:
    root = install_tree(tmp_path / "root")
    unit = root / "etc/systemd/system" / SERVICE
    unit.write_text(unit.read_text().replace("ProtectSystem=", "ProtectSytem="))
    typo = verify(root, SERVICE)
    assert typo.returncode != 0 and "Unknown key 'ProtectSytem'" in typo.stderr
    unit.write_text(UNIT.read_text())
    (root / "opt/community-gateway/launch").unlink()  # ExecStart's program
    missing = verify(root, SERVICE)
    assert missing.returncode != 0 and "is not executable" in missing.stderr


def exposure(unit: Path) -> tuple[float, str, str]:
    """`systemd-analyze security --offline=yes`: the score, its verdict, the whole table."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1)), found.group(2), result.stdout


def unset_checks(unit: Path) -> set[str]:
    checks = json.loads(
        subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", "--json=short", str(unit)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return {c["name"] for c in checks if c["set"] is False}


SERVICE_SETTINGS = ("NoNewPrivileges=", "ProtectSystem=", "ProtectHome=", "PrivateTmp=",
                    "MemoryDenyWriteExecute=", "LockPersonality=", "RestrictSUIDSGID=",
                    "ProtectKernelModules=", "RestrictAddressFamilies=~AF_NETLINK",
                    "CapabilityBoundingSet=~CAP_SYS_ADMIN", "User=/DynamicUser=")  # fmt: skip
# First boot parses files anyone with the SD card can write, as root: it gets what it
# needs to install them and nothing else.
FIRSTBOOT_SETTINGS = ("NoNewPrivileges=", "ProtectSystem=", "PrivateNetwork=",
                      "PrivateDevices=", "MemoryDenyWriteExecute=",
                      "CapabilityBoundingSet=~CAP_SYS_ADMIN",
                      "RestrictAddressFamilies=~AF_(INET|INET6)",
                      "SystemCallFilter=~@mount")  # fmt: skip


@pytest.mark.parametrize(
    ("unit", "limit", "required"),
    [
        (UNIT, MAX_EXPOSURE, SERVICE_SETTINGS),
        (FIRSTBOOT_UNIT, MAX_FIRSTBOOT_EXPOSURE, FIRSTBOOT_SETTINGS),
    ],
    ids=["service", "first boot"],
)
def test_hardening_scores_ok(
    capsys: pytest.CaptureFixture[str], unit: Path, limit: float, required: tuple[str, ...]
) -> None:
    score, verdict, table = exposure(unit)
    with capsys.disabled():
        sys.stderr.write(f"\nsystemd-analyze security {unit.name}: {score} {verdict}\n")
    assert score <= limit and verdict == "OK", table
    unset = unset_checks(unit)
    for name in required:
        assert name not in unset, f"{name} is not set"


def test_the_first_boot_unit_has_bounded_time_and_memory() -> None:
    settings = dict(
        line.split("=", 1) for line in FIRSTBOOT_UNIT.read_text().splitlines() if "=" in line
    )
    assert settings["MemoryMax"] == "640M" and int(settings["TimeoutStartSec"]) <= 60


# ---- the gateway inside the unit's sandbox ------------------------------------------------


def unit_settings(name: str, unit: Path = UNIT) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in unit.read_text().splitlines()
        if line.startswith(f"{name}=")
    ]


@cache
def expand(item: str) -> frozenset[str]:
    """A syscall name, or every syscall of a @group (recursively)."""
    if not item.startswith("@"):
        return frozenset([item])
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", item], capture_output=True, text=True, check=True
    ).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        word = line.strip()
        if word and not word.startswith("#"):
            names |= expand(word)
    return frozenset(names)


def allowed_syscalls(filters: list[str]) -> set[str]:
    """What the unit's SystemCallFilter= lines allow, in systemd's order of application."""
    allowed: set[str] = set()
    for value in filters:
        names = set().union(*(expand(i) for i in value.lstrip("~").split()))
        allowed = allowed - names if value.startswith("~") else allowed | names
    # systemd always lets these through, so that the service can start at all.
    return allowed | {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}


LAUNCHER = r"""
import ctypes, errno, os, socket, sys

names, argv = sys.argv[1].split(","), sys.argv[3:]
families = [f for f in sys.argv[2].split(",") if f]
seccomp = ctypes.CDLL("libseccomp.so.2", use_errno=True)
seccomp.seccomp_init.restype = ctypes.c_void_p
seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
seccomp.seccomp_rule_add_array.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
seccomp.seccomp_load.argtypes = [ctypes.c_void_p]

class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

ALLOW, EQ = 0x7FFF0000, 4
ctx = seccomp.seccomp_init(0x00050000 | errno.EPERM)  # SystemCallErrorNumber=EPERM
for name in names:
    nr = seccomp.seccomp_syscall_resolve_name(name.encode())
    if nr != -1 and name != "socket":
        seccomp.seccomp_rule_add_array(ctx, ALLOW, nr, 0, None)
nr = seccomp.seccomp_syscall_resolve_name(b"socket")
for family in families:  # RestrictAddressFamilies=: socket() for these families only
    cmp = ArgCmp(0, EQ, getattr(socket, family), 0)
    seccomp.seccomp_rule_add_array(ctx, ALLOW, nr, 1, ctypes.byref(cmp))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit("this kernel has no PR_SET_MDWE (Linux 6.3+)")
if seccomp.seccomp_load(ctx) != 0:
    sys.exit("seccomp_load failed")
os.execv(argv[0], argv)
"""

PROBE = r"""
import ctypes, mmap, socket
libc = ctypes.CDLL(None, use_errno=True)
print("mdwe", libc.prctl(66, 0, 0, 0, 0))  # PR_GET_MDWE
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("wx allowed")
except OSError as exc:
    print("wx refused", exc.errno)
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
    print("netlink allowed")
except OSError as exc:
    print("netlink refused", exc.errno)
print("adjtimex", libc.adjtimex(ctypes.byref(ctypes.create_string_buffer(512))), ctypes.get_errno())
"""


def sandboxed(filters: list[str], unit: Path = UNIT) -> list[str]:
    """The command prefix that runs a program the way the unit would."""
    allowed = unit_settings("RestrictAddressFamilies", unit)[0].split()
    families = ",".join(f for f in allowed if f != "none")
    names = ",".join(sorted(allowed_syscalls(filters)))
    return [sys.executable, "-c", LAUNCHER, names, families]


def probe(filters: list[str]) -> dict[str, list[str]]:
    out = subprocess.run(
        [*sandboxed(filters), sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if "no PR_SET_MDWE" in out.stderr or "libseccomp.so.2" in out.stderr:
        pytest.skip(f"cannot emulate the unit's sandbox here: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    return {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines()}


def test_the_sandbox_emulation_enforces_what_the_unit_says() -> None:
    seen = probe(unit_settings("SystemCallFilter"))
    assert seen["mdwe"] == ["1"], "MemoryDenyWriteExecute is in force after exec"
    assert seen["wx"][0] == "refused"
    assert seen["netlink"][0] == "refused"
    # gateway/sdk/clock.py asks the kernel whether NTP set the clock: it must be allowed.
    assert int(seen["adjtimex"][0]) >= 0, seen
    # Without the unit's last SystemCallFilter= line (adjtimex clock_adjtime ...), or
    # with ProtectClock=yes (which blocks @clock), the clock check fails with EPERM and
    # every message is marked unsynced forever.  glibc's adjtimex() is clock_adjtime().
    without = probe(unit_settings("SystemCallFilter")[:-1])
    assert without["adjtimex"] == ["-1", "1"], without


@pytest.fixture
def plain_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.remove()


@pytest.mark.broker
def test_the_gateway_runs_under_the_units_syscall_filter_and_mdwe(
    tmp_path: Path, plain_broker: Mosquitto
) -> None:
    probe(unit_settings("SystemCallFilter"))  # skips where the sandbox cannot be emulated
    smoke = {
        "id": "smoke-1",
        "kind": "smoke",
        "location": {"building": "1"},
        "driver": {"type": "simulated", "events": [{"type": "smoke.alarm", "every_s": 0.5}]},
    }
    # `localhost`, not 127.0.0.1: name resolution must work without AF_NETLINK.
    config = write_config(
        tmp_path / "gw.yaml",
        f"mqtt://localhost:{plain_broker.port}",
        [smoke],
        clock={"check": "kernel"},
    )
    sub = Subscriber(plain_broker.port, f"{topic_base(config)}/#").start()
    proc = GatewayProc(config)
    cmd = [*sandboxed(unit_settings("SystemCallFilter")), GATEWAY, "run", "-c", str(config)]
    log = open(config.parent / "gateway.log", "ab")  # noqa: SIM115
    proc.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    try:
        assert sub.wait(lambda ms: any(m.topic.endswith("/events") for m in ms)), proc.log()
        assert sub.wait(lambda ms: any(m.topic.endswith("/health") for m in ms)), proc.log()
    finally:
        proc.proc.send_signal(signal.SIGTERM)
        code = proc.proc.wait(timeout=20)
        sub.stop()
    assert code == 0, proc.log()
    assert "Traceback" not in proc.log() and "Operation not permitted" not in proc.log()
    health = [m.json() for m in sub.matching("/health")][-1]
    assert health["boot_id"], "/proc/sys/kernel/random/boot_id is readable"


def test_first_boot_installs_a_card_under_its_units_syscall_filter_and_mdwe() -> None:
    from tests.test_firstboot import GOOD, image

    probe(unit_settings("SystemCallFilter", FIRSTBOOT_UNIT))  # skips where it cannot run
    work = Path(tempfile.mkdtemp(prefix="firstboot-sandbox-"))
    try:
        work.chmod(0o755)  # the checking child runs as the service user
        root, folder = image(work, GOOD)
        filters = unit_settings("SystemCallFilter", FIRSTBOOT_UNIT)
        cmd = [*sandboxed(filters, FIRSTBOOT_UNIT), GATEWAY, "firstboot", "--root", str(root)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        report = (folder / "FIRSTBOOT-REPORT.txt").read_text()
        assert report.splitlines()[0].endswith(": INSTALLED"), report
        assert (root / "etc/community-gateway/secrets/ca.crt").stat().st_uid == 4321
        # A refusal needs the same calls (the checking child, its limits) and more.
        (folder / "gateway.yaml.installed").rename(folder / "gateway.yaml")
        (folder / "gateway.yaml").write_text(GOOD.replace("mqtts://", "http://"))
        refused = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "Operation not permitted" not in refused.stderr
        assert "broker.url" in (folder / "FIRSTBOOT-REPORT.txt").read_text()
    finally:
        shutil.rmtree(work, ignore_errors=True)
