"""Offline bundles (scripts/bundle) of a source tree for the install and update tests.

A bundle costs about 17 s of CPU (pip builds the gateway's wheels and collects every
dependency), and the install tests and the update tests each need one of this checkout,
on different xdist workers. `shared_bundle` builds it once per test run for all of
them: in a folder beside the workers' own temporary folders, named by a hash of the
tree's files, under a file lock, so the second worker waits for the first one's build
instead of making its own (and an edit to the tree during the run makes a new one). The
bundle is only read; a test that writes beside it (a manifest) links it into a folder of
its own first (`own_copy`).

The update tests' second release B differs from A in its version alone, so `derive_bundle`
makes it from A's bundle: the gateway's wheel built again from B's tree, every other
wheel A's. scripts/bundle would ask the package index for every dependency again
(about 8 s of CPU of its 17); A's build is what tests that script.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

__all__ = ["derive_bundle", "make_bundle", "own_copy", "shared_bundle", "tree_files"]

ROOT = Path(__file__).resolve().parent.parent


def tree_files(tree: Path) -> list[str]:
    """The files a bundle of `tree` holds: git's, committed or not, minus what it ignores."""
    listed = subprocess.run(
        ["git", "-C", str(tree), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sorted(name for name in (f.decode() for f in listed if f) if (tree / name).is_file())


def make_bundle(out: Path, tree: Path = ROOT) -> Path:
    """A bundle of `tree` for this machine, made by its scripts/bundle into `out` (pip's cache)."""
    made = subprocess.run(
        ["bash", str(tree / "scripts" / "bundle"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert made.returncode == 0, made.stdout + made.stderr
    (found,) = out.glob("community-gateway-*.tar.gz")
    assert made.stdout.splitlines()[-1].startswith(f"bundle: wrote {found} (")
    return found


def derive_bundle(base: Path, tree: Path, out: Path) -> Path:
    """`base` (a bundle) as scripts/bundle would make it of `tree`, whose version differs.

    Only the gateway's own wheel is built (from `tree`); the protocol's and the
    dependencies' wheels are `base`'s, the tree's files are `tree`'s, and BUNDLE and
    wheels/SHA256SUMS are written again, in the layout scripts/bundle writes.
    """
    version = tomllib.loads((tree / "pyproject.toml").read_text())["project"]["version"]
    work = out / "work"
    with tarfile.open(base) as archive:
        archive.extractall(work, filter="tar")
    (old,) = work.iterdir()
    name = old.name.rsplit("-", 1)[0] + f"-{version}"  # community-gateway-<version>
    new = work / name
    shutil.copytree(tree, new)  # a copy of a tree's files (tree_files), as the kit makes
    wheels = old / "wheels"
    for wheel in wheels.glob("community_gateway-*.whl"):
        wheel.unlink()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--disable-pip-version-check", "--wheel-dir", str(wheels), str(tree)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    wheels.rename(new / "wheels")
    sums = "".join(
        f"{hashlib.sha256(w.read_bytes()).hexdigest()}  {w.name}\n"
        for w in sorted((new / "wheels").glob("*.whl"))
    )
    (new / "wheels" / "SHA256SUMS").write_text(sums)
    stamp = (old / "BUNDLE").read_text().replace(f"version={old.name.rsplit('-', 1)[1]}\n", "")
    (new / "BUNDLE").write_text(stamp.replace("\narch=", f"\nversion={version}\narch=", 1))
    shutil.rmtree(old)
    bundle = out / base.name.replace(old.name, name, 1)
    subprocess.run(["tar", "-czf", str(bundle), "-C", str(work), name], check=True)
    shutil.rmtree(work)
    return bundle


def _tree_key(tree: Path) -> str:
    digest = hashlib.sha256()
    for name in tree_files(tree):
        digest.update(name.encode() + b"\0" + (tree / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _run_folder(factory: pytest.TempPathFactory) -> Path:
    # Under xdist each worker's base folder is popen-gwN inside the run's own.
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_bundle(factory: pytest.TempPathFactory, tree: Path = ROOT) -> Path:
    """The bundle of `tree` as it is now, built by whichever worker of this run asks first."""
    folder = _run_folder(factory) / f"bundle-{_tree_key(tree)}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even on failure
        found = sorted(folder.glob("community-gateway-*.tar.gz"))
        return found[0] if found else make_bundle(folder, tree)


def own_copy(bundle: Path, folder: Path) -> Path:
    """`bundle` linked (or copied) into `folder`, so files written beside it stay the caller's."""
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / bundle.name
    try:
        os.link(bundle, mine)
    except OSError:
        shutil.copy2(bundle, mine)
    return mine
