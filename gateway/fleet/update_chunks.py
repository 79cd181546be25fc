"""The staging file of an update delivered over MQTT in chunks: bounded, resumable, checked.

One transfer at a time lives in `update/transfer/` of the state folder:

    transfer.json    the announce (transfer id, size, SHA-256, chunk size and count), the
                     signed manifest, and a bitmap of the chunks on disk
    bundle.part      the bundle, written chunk by chunk at each chunk's offset

Nothing is opened without a signed announce (the caller checked the manifest), and the
size is refused over the configured limit, or when the disk has not room for the bundle
and its install, before anything is written.  A chunk lands at its own offset, so a
redelivered chunk, or one out of order, changes nothing.  The bitmap is written after
the data it describes is synced (`flush`), so after a restart or a power cut the chunks
it names are on disk, and only the others are asked for again.  When the signed manifest
has the archive's block hashes (`archive.blocks`), each block is checked the moment its
last chunk lands: a block that does not match (a chunk damaged, or forged by someone
who may publish on `cmd/`, arriving before the real one) has its chunks forgotten, so
they are asked for again, and the rest of the transfer stands.  A complete bundle is
checked against the manifest's SHA-256 before it is handed to the install (`finish`);
anything wrong there discards the whole folder.  Blocking: called in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from community_protocol.chunks import ChunkError, Transfer, missing_ranges

from . import launch
from .update import Blocks, Manifest, UpdateRefused, archive_blocks

__all__ = ["INSTALL_ROOM", "Staged", "Staging"]

log = logging.getLogger(__name__)

# Beside the bundle, its install needs room for the unpacked bundle and a virtualenv:
# about twice the bundle, plus this much for the rest of the gateway's files meanwhile.
INSTALL_ROOM = 64 * 1024 * 1024
_STATE = "transfer.json"
_PART = "bundle.part"


@dataclass
class Staged:
    """One transfer in progress: what was announced, and which chunks are on disk."""

    transfer: Transfer
    manifest: dict[str, Any]  # the signed manifest as announced (checked again at a start)
    have: bytearray = field(default_factory=bytearray)
    blocks: Blocks | None = None  # the manifest's block hashes, when it has them
    bad_blocks: int = 0  # blocks that did not match and were asked for again

    @property
    def received(self) -> int:
        return sum(bin(b).count("1") for b in self.have)

    @property
    def complete(self) -> bool:
        return self.received == self.transfer.chunks

    def has(self, index: int) -> bool:
        return bool(self.have[index // 8] >> (index % 8) & 1)

    def missing(self, limit: int = 64) -> list[list[int]]:
        return missing_ranges(self.have, self.transfer.chunks, limit)


class Staging:
    """The transfer folder of one gateway (see the module docstring)."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.staged: Staged | None = None
        self._dirty = False

    @property
    def part(self) -> Path:
        return self.folder / _PART

    def open(self, transfer: Transfer, manifest: Manifest, doc: dict[str, Any]) -> Staged:
        """Start `transfer` of `manifest`'s bundle; UpdateRefused when it cannot be taken."""
        if (transfer.size, transfer.sha256) != (manifest.size, manifest.sha256):
            raise UpdateRefused(
                "the transfer's size and SHA-256 are not the signed manifest's archive's"
            )
        if transfer.size > self.max_bytes:
            raise UpdateRefused(
                f"the bundle is {transfer.size} bytes, over this gateway's limit of"
                f" {self.max_bytes} (security.update_max_bytes)"
            )
        self.discard()
        self.folder.mkdir(parents=True, exist_ok=True)
        need = 2 * transfer.size + INSTALL_ROOM
        free = shutil.disk_usage(self.folder).free
        if free < need:
            raise UpdateRefused(
                f"{self.folder} has {free // 2**20} MiB free; the bundle and its install"
                f" need {need // 2**20} MiB"
            )
        # Sparse: the file takes room as chunks arrive, within the size checked above.
        with open(self.part, "wb") as f:
            f.truncate(transfer.size)
        self.staged = Staged(transfer, doc, bytearray(-(-transfer.chunks // 8)), manifest.blocks)
        self._save()
        return self.staged

    def load(self) -> Staged | None:
        """The transfer a previous run left, or None (a damaged folder is discarded)."""
        try:
            doc = json.loads((self.folder / _STATE).read_text(encoding="utf-8"))
            transfer = Transfer.parse(doc["transfer"])
            have = bytearray(base64.b64decode(doc["have"], validate=True))
            manifest = doc["manifest"]
            if len(have) != -(-transfer.chunks // 8) or not isinstance(manifest, dict):
                raise ValueError("the bitmap does not fit the transfer")
            if self.part.stat().st_size != transfer.size:
                raise ValueError("the staged bundle has the wrong size")
            blocks = archive_blocks(manifest)
        except FileNotFoundError:
            self.discard()
            return None
        except (OSError, ValueError, KeyError, TypeError, ChunkError, UpdateRefused) as exc:
            log.warning("update transfer in %s discarded: %s", self.folder, exc)
            self.discard()
            return None
        self.staged = Staged(transfer, manifest, have, blocks)
        return self.staged

    def write(self, index: int, data: bytes) -> bool:
        """Put chunk `index` at its offset; False when it is not one this transfer wants."""
        staged = self.staged
        if staged is None or not 0 <= index < staged.transfer.chunks:
            return False
        offset, length = staged.transfer.span(index)
        if len(data) != length:
            return False
        if staged.has(index):
            return True  # redelivered: the same place, already written
        fd = os.open(self.part, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
        staged.have[index // 8] |= 1 << (index % 8)
        self._dirty = True
        if staged.blocks is not None:
            self._check_blocks(staged, staged.blocks, offset, length)
        return True

    def _check_blocks(self, staged: Staged, blocks: Blocks, offset: int, length: int) -> None:
        """Hash each block the chunk at `offset` completes; forget the chunks of a bad one."""
        transfer = staged.transfer
        for b in range(offset // blocks.size, (offset + length - 1) // blocks.size + 1):
            start, size = blocks.span(b, transfer.size)
            chunks = range(
                start // transfer.chunk_size, (start + size - 1) // transfer.chunk_size + 1
            )
            if not all(staged.has(c) for c in chunks):
                continue
            with open(self.part, "rb") as f:
                f.seek(start)
                digest = hashlib.sha256(f.read(size)).hexdigest()
            if digest == blocks.sha256[b]:
                continue
            for c in chunks:
                staged.have[c // 8] &= ~(1 << (c % 8)) & 0xFF
            staged.bad_blocks += 1
            log.warning(
                "update transfer %s: block %d (chunks %d-%d) does not have the manifest's"
                " SHA-256 (a chunk damaged or replaced on the way); asking for it again",
                transfer.id,
                b,
                chunks[0],
                chunks[-1],
            )

    def flush(self) -> None:
        """Sync the chunks written, then record them: the bitmap never names unsynced data."""
        if self.staged is None or not self._dirty:
            return
        fd = os.open(self.part, os.O_WRONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._save()

    def finish(self) -> Path:
        """The complete bundle once its SHA-256 is the manifest's; UpdateRefused (and discarded) if not."""
        staged = self.staged
        assert staged is not None and staged.complete
        self.flush()
        digest = hashlib.sha256()
        with open(self.part, "rb") as f:
            while block := f.read(1 << 16):
                digest.update(block)
        if digest.hexdigest() != staged.transfer.sha256:
            self.discard()
            raise UpdateRefused(
                "the bundle received over MQTT does not have the SHA-256 the manifest says"
                " (a chunk was damaged or replaced)"
            )
        return self.part

    def discard(self) -> None:
        """Remove the transfer folder and forget the transfer."""
        self.staged = None
        self._dirty = False
        shutil.rmtree(self.folder, ignore_errors=True)

    def _save(self) -> None:
        staged = self.staged
        assert staged is not None
        doc = {
            "transfer": staged.transfer.as_dict(),
            "manifest": staged.manifest,
            "have": base64.b64encode(bytes(staged.have)).decode(),
        }
        launch.write_json(self.folder / _STATE, doc)
        self._dirty = False
