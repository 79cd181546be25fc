"""Installing a verified update beside the running release, switching to it, and committing or rolling back.

The layout, in the service's state folder (the only place the sandboxed service may
write; docs/fleet.md, "Software updates"):

    releases/<version>/          the unpacked bundle, and venv/ built from its wheels
    current -> .../venv          the release that runs (absent: the installed
                                 /opt/community-gateway/venv); switched by one rename
    update/state.json            the trial in progress and the last result (launch.py)
    update/download/             the archive while it is fetched

Nothing here changes what runs until `switch`: fetching, checking and building a venv
happen beside the running release and are thrown away on any failure.  `switch`
writes the trial first (with the previous release to go back to), then points
`current` at the new venv; the launcher counts the starts of the trial and the new
release's health gate calls `commit`, or `rollback` when the gate is not passed in time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from community_protocol.enums import UpdateResult

from . import launch
from .update import Manifest, UpdateRefused

__all__ = [
    "Layout",
    "commit",
    "fetch",
    "install_release",
    "make_venv",
    "rollback",
    "running_pip",
    "switch",
]

log = logging.getLogger(__name__)

CHUNK = 1 << 16
PIP_TIMEOUT_S = 900.0


class Layout:
    """Where releases, the `current` link and the update state live."""

    def __init__(self, state_dir: Path, factory: Path) -> None:
        self.state_dir = state_dir
        self.factory = factory  # the venv install.sh made: what runs without `current`
        self.releases = state_dir / "releases"
        self.download = state_dir / "update" / "download"

    def current(self) -> str:
        """What `current` names now (the installed venv when there is no link)."""
        link = self.state_dir / launch.CURRENT
        return os.readlink(link) if link.is_symlink() else str(self.factory)

    def state(self) -> dict[str, Any]:
        return launch.read_state(self.state_dir)


def fetch(url: str, manifest: Manifest, into: Path, *, timeout_s: float = 30.0) -> Path:
    """Download the archive to `into`, checking its size and SHA-256 on the way; UpdateRefused why not.

    file:// and http(s):// only.  Reading stops one byte past the manifest's size, so a
    wrong or hostile server can neither fill the disk nor keep the gateway waiting
    longer than `timeout_s` per read.
    """
    if not url.startswith(("file://", "http://", "https://")):
        raise UpdateRefused(f"the update URL must be file://, http:// or https://, not {url!r}")
    into.mkdir(parents=True, exist_ok=True)
    target = into / manifest.archive
    digest, got = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(target, "wb") as out:
            while got <= manifest.size:
                block = resp.read(CHUNK)
                if not block:
                    break
                got += len(block)
                if got > manifest.size:
                    break
                digest.update(block)
                out.write(block)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        target.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise UpdateRefused(f"cannot fetch {url}: {reason}") from None
    if got != manifest.size:
        target.unlink(missing_ok=True)
        more = "more than" if got > manifest.size else f"{got} bytes, not"
        raise UpdateRefused(f"{url} gave {more} the {manifest.size} bytes the manifest says")
    if digest.hexdigest() != manifest.sha256:
        target.unlink(missing_ok=True)
        raise UpdateRefused(
            f"{url} does not have the SHA-256 the manifest says (damaged or replaced)"
        )
    return target


def _unpack(archive: Path, into: Path) -> Path:
    """The bundle's top folder, unpacked into `into` (no links out, no absolute paths)."""
    # tarfile (and the compression modules it loads) only when a bundle comes: every
    # gateway holds this module for the health gate of a release, few ever unpack one.
    import tarfile

    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UpdateRefused(f"the archive does not unpack: {exc}") from None
    tops = [p for p in into.iterdir() if p.is_dir() and (p / "BUNDLE").is_file()]
    if len(tops) != 1:
        raise UpdateRefused("the archive is not a bundle of scripts/bundle (no */BUNDLE)")
    return tops[0]


def _check_wheels(tree: Path) -> Path:
    wheels = tree / "wheels"
    sums = wheels / "SHA256SUMS"
    if not sums.is_file():
        raise UpdateRefused("the bundle has no wheels/SHA256SUMS")
    for line in sums.read_text().splitlines():
        want, _, name = line.partition("  ")
        path = wheels / name.lstrip("*")
        if "/" in name or not path.is_file():
            raise UpdateRefused(f"the bundle lacks the wheel {name}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != want:
            raise UpdateRefused(f"the bundle's wheel {name} is damaged")
    return wheels


def _run(cmd: list[str], what: str, cwd: Path) -> str:
    # The bundle's wheels only: no index, no pip config of the machine, no PIP_* variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=env,
            timeout=PIP_TIMEOUT_S,
            check=False,
            cwd=cwd,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UpdateRefused(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UpdateRefused(f"{what} failed: {last}")
    return done.stdout.strip()


def running_pip(python: str) -> list[Path]:
    """The running release's pip (its package and metadata folders), if `python` is ours.

    Found through its metadata, not `find_spec("pip")`: asking the import system for
    pip makes setuptools' distutils shim stand down for the rest of the process.
    """
    if os.path.realpath(python) != os.path.realpath(getattr(sys, "_base_executable", "")):
        return []  # another interpreter: its pip must be its own
    try:
        dist = importlib.metadata.distribution("pip")
    except importlib.metadata.PackageNotFoundError:
        return []
    found = [Path(str(dist.locate_file(name))) for name in ("pip", f"pip-{dist.version}.dist-info")]
    return found if all(p.is_dir() for p in found) else []


def make_venv(python: str, venv: Path, cwd: Path, pip: list[Path] | None = None) -> None:
    """A virtualenv with pip in it, for the bundle's wheels.

    `python -m venv` runs ensurepip, which installs pip and setuptools from its wheels
    and compiles them: 3.2 s of CPU on an x86 VM, several times that on a Pi. The running
    release's pip (`running_pip`, unless `pip` names the folders), for the same
    interpreter, is that program installed and compiled already, so its files are copied
    instead (a tenth of a second); without one, ensurepip as before. The new release
    gets a pip either way, for the update after.
    """
    pip = running_pip(python) if pip is None else pip
    if not pip:
        _run([python, "-I", "-m", "venv", str(venv)], "making the virtualenv", cwd)
        return
    _run([python, "-I", "-m", "venv", "--without-pip", str(venv)], "making the virtualenv", cwd)
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    try:
        for folder in pip:
            shutil.copytree(folder, site / folder.name, symlinks=True)
    except OSError as exc:
        raise UpdateRefused(f"copying pip into the virtualenv failed: {exc}") from None


def install_release(layout: Layout, manifest: Manifest, archive: Path, python: str) -> Path:
    """Build releases/<version>/venv offline from the bundle's wheels; the venv, once it runs."""
    final = layout.releases / manifest.version
    venv = final / "venv"
    done = final / ".complete"
    if done.exists():
        return venv  # built and checked by an earlier attempt (a kill before the switch)
    layout.releases.mkdir(parents=True, exist_ok=True)
    work = layout.releases / f".{manifest.version}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        tree = _unpack(archive, work / "unpacked")
        _check_wheels(tree)
        # A venv names its own folder in its scripts: it is built where it will run.
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)
        wheels = final / "unpacked" / tree.name / "wheels"
        # -I and the release's own folder as cwd: nothing of the running release (its
        # PYTHONPATH, a checkout's metadata in the cwd) can stand in for the new one.
        make_venv(python, venv, final)
        pip = [
            str(venv / "bin" / "python"),
            "-I",
            "-m",
            "pip",
            "install",
            "--no-compile",
            "--quiet",
        ]
        _run([*pip, "--no-index", "--find-links", str(wheels), "community-gateway"], "pip", final)
        check = "from importlib.metadata import version; import gateway.cli; print(version('community-gateway'))"
        got = _run(
            [str(venv / "bin" / "python"), "-I", "-c", check], "starting the new program", final
        )
        if got != manifest.version:
            raise UpdateRefused(f"the bundle installs version {got}, not {manifest.version}")
        shutil.rmtree(final / "unpacked", ignore_errors=True)
        done.touch()  # only now: a kill during pip leaves no release that looks built
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        raise
    return venv


def switch(
    layout: Layout, manifest: Manifest, venv: Path, *, max_starts: int, deadline_s: float
) -> dict[str, Any]:
    """Record the trial, then point `current` at `venv`; the trial as written."""
    state = layout.state()
    trial = {
        "version": manifest.version,
        "previous": layout.current(),
        "venv": str(venv),
        "starts": 0,
        "max_starts": max_starts,
        "deadline_s": deadline_s,
        "signed_by": manifest.key_id,
    }
    state["trial"] = trial
    launch.write_state(layout.state_dir, state)
    launch.point(layout.state_dir, str(venv))
    log.warning(
        "version %s in place (signed by key %s); restarting to try it",
        manifest.version,
        manifest.key_id,
    )
    return trial


def _finish(
    layout: Layout, result: UpdateResult, reason: str, *, back: bool
) -> dict[str, Any] | None:
    state = layout.state()
    trial = state.get("trial")
    if not isinstance(trial, dict):
        return None
    if back:
        launch.point(layout.state_dir, str(trial.get("previous") or layout.factory))
    state["trial"] = None
    # audited: the running gateway sends the event itself (the launcher's rollbacks are
    # sent by the release that starts after them).
    state["last"] = {
        "version": trial.get("version"),
        "result": str(result),
        "reason": reason,
        "audited": True,
    }
    launch.write_state(layout.state_dir, state)
    return trial


def commit(layout: Layout) -> dict[str, Any] | None:
    """The running trial passed its health gate: it stays; older releases go.  The trial, or None."""
    trial = _finish(layout, UpdateResult.COMMITTED, "", back=False)
    if trial is not None:
        keep = {Path(str(trial.get("venv", ""))).parent.name}
        for old in layout.releases.glob("*") if layout.releases.is_dir() else ():
            # The previous release stays for an operator's manual rollback; no other.
            if old.name not in keep and str(old / "venv") != trial.get("previous"):
                shutil.rmtree(old, ignore_errors=True)
    return trial


def rollback(layout: Layout, reason: str) -> dict[str, Any] | None:
    """Point `current` back at the release before the trial and record why.  The trial, or None."""
    return _finish(layout, UpdateResult.ROLLED_BACK, reason, back=True)
