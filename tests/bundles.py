"""Offline bundles (scripts/bundle) of a source tree for the install and update tests.

A bundle costs about 17 s of CPU (pip builds the gateway's wheels and collects every
dependency), and the install tests and the update tests each need one of this checkout,
on different xdist workers. `shared_bundle` builds it once per test run for all of
them: in a folder beside the workers' own temporary folders, named by a hash of the
tree's files, under a file lock, so the second worker waits for the first one's build
instead of making its own (and an edit to the tree during the run makes a new one). The
bundle is only read; a test that writes beside it (a manifest) links it into a folder of
its own first (`own_copy`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

__all__ = ["make_bundle", "own_copy", "shared_bundle", "tree_files"]

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
