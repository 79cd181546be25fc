"""Staff accounts: a JSON secrets file of ids, names and scrypt hashes of PINs/passwords.

The file (mode 0600) holds `{"version": 1, "staff": [{"id", "name", "hash"}]}`; a hash is
`scrypt$N$r$p$salt$key` (base64), so the parameters travel with it and can be raised
later without invalidating old entries.  Nothing here ever stores or logs a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from gateway.sdk.files import write_private
from gateway.web.settings import WebConfig

__all__ = [
    "MIN_SECRET_LEN",
    "StaffCache",
    "StaffError",
    "StaffFile",
    "StaffMember",
    "hash_secret",
    "staff_file_of",
    "verify_secret",
]

log = logging.getLogger(__name__)

MIN_SECRET_LEN = 6
MAX_SECRET_LEN = 128
# scrypt cost: about 50 ms and 16 MiB per check on a small ARM board; with the sign-in
# rate limit that keeps guessing a 6-digit PIN far slower than anyone would notice.
_N, _R, _P = 2**14, 8, 1
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class StaffError(Exception):
    """The staff file or a staff entry is wrong; the text says what and where."""


@dataclass(frozen=True, slots=True)
class StaffMember:
    """One staff account as stored (the hash, never the secret)."""

    id: str
    name: str
    hash: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_secret(secret: str) -> str:
    """A salted scrypt hash of `secret`, with its parameters, ready for the staff file."""
    check_secret(secret)
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(key)}"


def verify_secret(secret: str, stored: str) -> bool:
    """True if `secret` matches the stored hash; False for a malformed hash too."""
    if len(secret) > MAX_SECRET_LEN:
        return False  # and no scrypt of megabytes of input from a hostile client
    try:
        algo, n, r, p, salt, key = stored.split("$")
        if algo != "scrypt":
            return False
        want = base64.b64decode(key)
        got = hashlib.scrypt(
            secret.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=64 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def check_id(staff_id: str) -> None:
    if not _ID.match(staff_id):
        raise StaffError(
            f"staff id {staff_id!r} must be 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )


def check_secret(secret: str) -> None:
    if not MIN_SECRET_LEN <= len(secret) <= MAX_SECRET_LEN:
        raise StaffError(
            f"a PIN or password has {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters "
            f"(this one has {len(secret)})"
        )


class StaffFile:
    """The staff secrets file: load, add, remove; written atomically with mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, StaffMember]:
        """Every account by id; an absent file is an empty list, a broken one StaffError."""
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StaffError(f"{self.path}: cannot read: {exc.strerror}") from exc
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StaffError(f"{self.path}: not JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise StaffError(f'{self.path}: expected an object with "version": 1')
        entries = doc.get("staff")
        if not isinstance(entries, list):
            raise StaffError(f'{self.path}: "staff" must be a list')
        out: dict[str, StaffMember] = {}
        for i, entry in enumerate(entries):
            where = f"{self.path}: staff[{i}]"
            if not isinstance(entry, dict) or set(entry) != {"id", "name", "hash"}:
                raise StaffError(f"{where}: needs exactly the keys id, name, hash")
            if not all(isinstance(entry[k], str) for k in ("id", "name", "hash")):
                raise StaffError(f"{where}: id, name and hash are strings")
            try:
                check_id(entry["id"])
            except StaffError as exc:
                raise StaffError(f"{where}: {exc}") from exc
            if entry["id"] in out:
                raise StaffError(f"{where}: duplicate id {entry['id']!r}")
            if not entry["hash"].startswith("scrypt$"):
                raise StaffError(f"{where}: hash is not an scrypt hash (never store a PIN)")
            out[entry["id"]] = StaffMember(entry["id"], entry["name"], entry["hash"])
        return out

    def _save(self, members: dict[str, StaffMember]) -> None:
        doc = {
            "version": 1,
            "staff": [{"id": m.id, "name": m.name, "hash": m.hash} for m in members.values()],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        owner = None
        if os.geteuid() == 0:
            # `gateway staff add` run as root (sudo) on an installed box: the file must
            # belong to the gateway's user, who owns the state folder, or it cannot sign
            # anybody in.
            folder = self.path.parent.stat()
            owner = (folder.st_uid, folder.st_gid)
        text = json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
        write_private(self.path, text.encode("utf-8"), owner=owner)

    def add(self, staff_id: str, name: str, secret: str, *, replace: bool = False) -> None:
        """Add an account (or replace its name and secret with `replace`)."""
        check_id(staff_id)
        members = self.load()
        if staff_id in members and not replace:
            raise StaffError(f"staff id {staff_id!r} exists; use --replace to set a new PIN")
        members[staff_id] = StaffMember(staff_id, name, hash_secret(secret))
        self._save(members)

    def remove(self, staff_id: str) -> None:
        members = self.load()
        if staff_id not in members:
            raise StaffError(f"no staff id {staff_id!r} in {self.path}")
        del members[staff_id]
        self._save(members)


def staff_file_of(cfg: WebConfig, state_dir: Path) -> StaffFile:
    """The staff file a config names, by default staff.json in the gateway's state dir."""
    return StaffFile(cfg.staff_file or state_dir / "staff.json")


@dataclass
class StaffCache:
    """The staff file, re-read when it changes, so `gateway staff add` needs no restart."""

    file: StaffFile
    mtime: float | None = None
    members: dict[str, StaffMember] | None = None

    def get(self) -> dict[str, StaffMember]:
        try:
            mtime = self.file.path.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if self.members is None or mtime != self.mtime:
            try:
                self.members = self.file.load()
            except StaffError as exc:
                log.error("staff file unusable, nobody can sign in: %s", exc)
                self.members = {}
            self.mtime = mtime
        return self.members
