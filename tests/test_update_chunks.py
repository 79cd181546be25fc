"""Updates over MQTT, the parts without a broker: the chunk format, the staging file, the receiver.

The staging file is bounded (a size over the limit is refused before anything is
written), takes chunks in any order and more than once, survives a restart with the
chunks it synced, and hands over only a bundle whose SHA-256 is the manifest's.  The
receiver drops every chunk until a transfer is open, and ends an idle one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import random
from pathlib import Path

import pytest

from community_protocol.chunks import (
    ChunkError,
    Transfer,
    chunk_count,
    decode_chunk,
    encode_chunk,
    missing_ranges,
)
from gateway.fleet.update import (
    MIN_BLOCK_BYTES,
    Blocks,
    Manifest,
    UpdateRefused,
    archive_blocks,
    block_hashes,
)
from gateway.fleet.update_chunks import Staged, Staging
from gateway.fleet.update_transfer import ChunkReceiver
from tests.driverkit import until

CHUNK = 1024


def _bundle(size: int = 10 * CHUNK + 300) -> bytes:
    return random.Random(size).randbytes(size)


def _parts(data: bytes) -> tuple[Transfer, Manifest]:
    digest = hashlib.sha256(data).hexdigest()
    transfer = Transfer("t-0123456789", len(data), digest, CHUNK, chunk_count(len(data), CHUNK))
    manifest = Manifest("9.9.9", "b.tar.gz", len(data), digest, "x86_64", "3.11", {}, "k" * 16)
    return transfer, manifest


def _chunk(data: bytes, transfer: Transfer, index: int) -> bytes:
    offset, length = transfer.span(index)
    return data[offset : offset + length]


def test_a_chunk_is_a_header_line_then_raw_bytes() -> None:
    payload = encode_chunk("t-0123456789", 7, b"\n\x00raw")
    assert payload.startswith(b'{"transfer":"t-0123456789","index":7}\n')
    assert decode_chunk(payload) == ("t-0123456789", 7, b"\n\x00raw")
    for bad in (b"no header at all" * 30, b"[1]\nx", b'{"transfer": 1, "index": 0}\nx'):
        with pytest.raises(ChunkError):
            decode_chunk(bad)
    with pytest.raises(
        ChunkError, match=r"transfer\.chunks is 2; 2049 bytes in chunks of 1024 are 3"
    ):
        Transfer("t-0123456789", 2049, "0" * 64, 1024, 2)


def test_missing_chunks_are_ranges() -> None:
    have = bytearray(2)
    for i in (0, 1, 4, 9):
        have[i // 8] |= 1 << (i % 8)
    assert missing_ranges(have, 11) == [[2, 3], [5, 8], [10, 10]]
    assert missing_ranges(have, 11, limit=1) == [[2, 3]]


def test_a_bundle_over_the_limit_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = _bundle()
    transfer, manifest = _parts(data)
    staging = Staging(tmp_path / "transfer", max_bytes=len(data) - 1)
    with pytest.raises(UpdateRefused, match="over this gateway's limit"):
        staging.open(transfer, manifest, {})
    assert not (tmp_path / "transfer").exists()
    # A transfer whose size or hash is not the signed manifest's is refused too.
    other = Transfer(transfer.id, transfer.size, "0" * 64, CHUNK, transfer.chunks)
    with pytest.raises(UpdateRefused, match="not the signed manifest's"):
        Staging(tmp_path / "transfer", 1 << 30).open(other, manifest, {})


def test_chunks_out_of_order_and_redelivered_make_the_bundle(tmp_path: Path) -> None:
    data = _bundle()
    transfer, manifest = _parts(data)
    staging = Staging(tmp_path / "transfer", 1 << 30)
    staging.open(transfer, manifest, {"version": "9.9.9"})
    order = list(range(transfer.chunks)) * 2
    random.Random(1).shuffle(order)
    for index in order:
        assert staging.write(index, _chunk(data, transfer, index))
    assert not staging.write(transfer.chunks, b"x")  # past the end
    assert not staging.write(0, b"short")  # not a chunk's length
    assert staging.staged is not None and staging.staged.complete
    assert staging.finish().read_bytes() == data


def test_a_restart_keeps_the_synced_chunks_and_asks_for_the_rest(tmp_path: Path) -> None:
    data = _bundle()
    transfer, manifest = _parts(data)
    first = Staging(tmp_path / "transfer", 1 << 30)
    doc = {"version": "9.9.9", "archive": {"size": len(data)}}  # as signed, in short
    first.open(transfer, manifest, doc)
    for index in (0, 1, 2, 5):
        first.write(index, _chunk(data, transfer, index))
    first.flush()
    first.write(6, _chunk(data, transfer, 6))  # written, not yet synced nor recorded
    again = Staging(tmp_path / "transfer", 1 << 30)
    staged = again.load()
    assert staged is not None and staged.manifest == doc
    assert staged.missing() == [[3, 4], [6, transfer.chunks - 1]]
    for index in range(transfer.chunks):
        again.write(index, _chunk(data, transfer, index))
    assert again.finish().read_bytes() == data
    # A damaged state file is not trusted: the folder goes.
    (tmp_path / "transfer" / "transfer.json").write_text("{")
    assert Staging(tmp_path / "transfer", 1 << 30).load() is None
    assert not (tmp_path / "transfer").exists()


def test_a_damaged_chunk_is_refused_and_the_file_deleted(tmp_path: Path) -> None:
    data = _bundle()
    transfer, manifest = _parts(data)
    staging = Staging(tmp_path / "transfer", 1 << 30)
    staging.open(transfer, manifest, {})
    for index in range(transfer.chunks):
        chunk = bytearray(_chunk(data, transfer, index))
        if index == 3:
            chunk[10] ^= 0xFF
        staging.write(index, bytes(chunk))
    with pytest.raises(UpdateRefused, match="SHA-256"):
        staging.finish()
    assert not (tmp_path / "transfer").exists() and staging.staged is None


def test_the_receiver_drops_chunks_without_a_transfer_and_ends_an_idle_one(
    tmp_path: Path,
) -> None:
    asyncio.run(_receiver(tmp_path))


async def _receiver(tmp_path: Path) -> None:
    data = _bundle()
    transfer, manifest = _parts(data)
    receiver = ChunkReceiver(Staging(tmp_path / "transfer", 1 << 30), idle_s=0.5)
    receiver.on_chunk(encode_chunk(transfer.id, 0, _chunk(data, transfer, 0)))
    assert receiver.dropped == 1 and not (tmp_path / "transfer").exists()
    done: list[Staged] = []
    ended: list[str] = []

    async def complete(staged: Staged) -> None:
        done.append(staged)

    async def expired(_staged: Staged, reason: str) -> None:
        ended.append(reason)

    task = asyncio.create_task(receiver.run(complete, expired))
    try:
        receiver.staging.open(transfer, manifest, {"version": "9.9.9"})
        receiver.opened()
        receiver.on_chunk(encode_chunk("t-another-one", 0, b"x" * CHUNK))  # another transfer
        for index in range(transfer.chunks):
            receiver.on_chunk(encode_chunk(transfer.id, index, _chunk(data, transfer, index)))
            await asyncio.sleep(0)
        await until(lambda: bool(done))
        assert receiver.dropped == 2 and receiver.staging.finish().read_bytes() == data
        receiver.staging.discard()
        # A second transfer that stalls after one chunk ends after idle_s, its file gone.
        receiver.staging.open(transfer, manifest, {"version": "9.9.9"})
        receiver.opened()
        receiver.on_chunk(encode_chunk(transfer.id, 0, _chunk(data, transfer, 0)))
        await until(lambda: bool(ended))
        assert "1 of 11 chunks, then nothing for 0.5 s" in ended[0]
        assert not (tmp_path / "transfer").exists()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_free_disk_is_checked_before_writing(tmp_path: Path) -> None:
    transfer, _ = _parts(_bundle())
    big = Transfer(transfer.id, 1 << 50, transfer.sha256, 1 << 18, chunk_count(1 << 50, 1 << 18))
    huge = Manifest("9.9.9", "b", 1 << 50, transfer.sha256, "x86_64", "3.11", {}, "k" * 16)
    with pytest.raises(UpdateRefused, match="MiB free"):
        Staging(tmp_path / "transfer", 1 << 62).open(big, huge, {})
    assert not any(os.scandir(tmp_path / "transfer"))


# ---- block hashes: a damaged or forged chunk costs its block, not the transfer ------


def _with_blocks(data: bytes, chunk_size: int) -> tuple[Transfer, Manifest, Blocks]:
    digest = hashlib.sha256(data).hexdigest()
    size = MIN_BLOCK_BYTES
    blocks = Blocks(
        size,
        tuple(hashlib.sha256(data[i : i + size]).hexdigest() for i in range(0, len(data), size)),
    )
    transfer = Transfer(
        "t-blocks-01", len(data), digest, chunk_size, chunk_count(len(data), chunk_size)
    )
    manifest = Manifest(
        "9.9.9", "b.tar.gz", len(data), digest, "x86_64", "3.11", {}, "k" * 16, blocks
    )
    return transfer, manifest, blocks


def test_a_forged_chunk_costs_its_block_which_is_asked_for_again(tmp_path: Path) -> None:
    # Chunks of 48 KiB do not divide a block (1 MiB): chunk 21 lies across blocks 0 and 1.
    data = random.Random(7).randbytes(2 * MIN_BLOCK_BYTES + 5000)
    transfer, manifest, _ = _with_blocks(data, 48 * 1024)
    doc = {
        "archive": {
            "size": len(data),
            "blocks": {"size": MIN_BLOCK_BYTES, "sha256": list(manifest.blocks.sha256)},
        }
    }  # type: ignore[union-attr]
    staging = Staging(tmp_path / "transfer", 1 << 30)
    staging.open(transfer, manifest, doc)
    forged = 30  # in block 1; it arrives before the real one, which is then dropped
    staging.write(forged, bytes(len(_chunk(data, transfer, forged))))
    for index in range(transfer.chunks):
        staging.write(index, _chunk(data, transfer, index))
    staged = staging.staged
    assert staged is not None and not staged.complete and staged.bad_blocks == 1
    # Block 1 is bytes 1 MiB .. 2 MiB: chunks 21 (shared with block 0) to 42 (shared with 2).
    assert staged.missing() == [[21, 42]]
    staging.flush()
    again = Staging(tmp_path / "transfer", 1 << 30)  # a restart keeps the good blocks
    resumed = again.load()
    assert resumed is not None and resumed.missing() == [[21, 42]] and resumed.blocks is not None
    for index in range(21, 43):
        again.write(index, _chunk(data, transfer, index))
    assert resumed.complete and resumed.bad_blocks == 0
    assert again.finish().read_bytes() == data


def test_without_block_hashes_a_damaged_chunk_still_fails_the_whole_bundle(tmp_path: Path) -> None:
    data = random.Random(8).randbytes(MIN_BLOCK_BYTES + 100)
    transfer, manifest, _ = _with_blocks(data, 64 * 1024)
    staging = Staging(tmp_path / "transfer", 1 << 30)
    staging.open(transfer, dataclasses.replace(manifest, blocks=None), {})  # an older manifest
    staging.write(3, bytes(64 * 1024))
    for index in range(transfer.chunks):
        staging.write(index, _chunk(data, transfer, index))
    assert staging.staged is not None and staging.staged.complete
    with pytest.raises(UpdateRefused, match="SHA-256"):
        staging.finish()


@pytest.mark.parametrize(
    ("blocks", "why"),
    [
        ({"size": MIN_BLOCK_BYTES, "sha256": []}, "do not cover"),
        ({"size": 4096, "sha256": ["0" * 64]}, "do not cover"),
        ({"size": MIN_BLOCK_BYTES, "sha256": ["XYZ"]}, "64 lowercase hex digits"),
        ([1, 2], "must be"),
    ],
)
def test_malformed_block_hashes_are_refused_saying_what(blocks: object, why: str) -> None:
    with pytest.raises(UpdateRefused, match=why):
        archive_blocks({"archive": {"size": 5000, "blocks": blocks}})


def test_the_manifest_has_a_hash_per_block_of_the_archive(tmp_path: Path) -> None:
    archive = tmp_path / "b.tar.gz"
    data = random.Random(9).randbytes(3 * MIN_BLOCK_BYTES + 1)
    archive.write_bytes(data)
    written = block_hashes(archive)
    assert written["size"] == MIN_BLOCK_BYTES and len(written["sha256"]) == 4
    assert written["sha256"][3] == hashlib.sha256(data[3 * MIN_BLOCK_BYTES :]).hexdigest()
    parsed = archive_blocks({"archive": {"size": len(data), "blocks": written}})
    assert parsed is not None and parsed.sha256 == tuple(written["sha256"])
