"""A software update delivered over MQTT in chunks: the announce's `transfer` and each chunk's bytes.

The platform announces a transfer in the `cmd/update` command (command-request.json
`$defs/update`, with `transfer` instead of `url`): the bundle's size and SHA-256 (the
signed manifest's), its chunk size and chunk count, and a transfer id.  Then it
publishes each chunk on `cmd/update/chunk` (QoS 1, not retained) as one line of JSON,
`{"transfer": ID, "index": N}` (update-chunk.json), a newline, and the chunk's raw
bytes.  Chunk N holds the bundle's bytes from N * chunk_size; every chunk but the last
is exactly chunk_size long.  docs/fleet.md, "Software updates over MQTT", has the rest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "MAX_CHUNK_BYTES",
    "MAX_HEADER_BYTES",
    "MIN_CHUNK_BYTES",
    "ChunkError",
    "Transfer",
    "chunk_count",
    "decode_chunk",
    "encode_chunk",
    "missing_ranges",
]

DEFAULT_CHUNK_BYTES = 64 * 1024
MIN_CHUNK_BYTES = 1024
# A chunk waits in the gateway's memory until it is written: a few of these at most.
MAX_CHUNK_BYTES = 256 * 1024
MAX_HEADER_BYTES = 256
_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ChunkError(ValueError):
    """A transfer or a chunk that is not well formed; the message says why, in one line."""


def chunk_count(size: int, chunk_size: int) -> int:
    """How many chunks of `chunk_size` hold `size` bytes."""
    return -(-size // chunk_size)


@dataclass(frozen=True, slots=True)
class Transfer:
    """What an announce names: the transfer id, the bundle's size and hash, its chunks."""

    id: str
    size: int
    sha256: str
    chunk_size: int
    chunks: int

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ChunkError("transfer.id must be 8 to 64 letters, digits, '_' or '-'")
        if self.size < 1:
            raise ChunkError("transfer.size must be at least 1")
        if not _SHA256.match(self.sha256):
            raise ChunkError("transfer.sha256 must be 64 lowercase hex digits")
        if not MIN_CHUNK_BYTES <= self.chunk_size <= MAX_CHUNK_BYTES:
            raise ChunkError(
                f"transfer.chunk_size must be {MIN_CHUNK_BYTES} to {MAX_CHUNK_BYTES} bytes"
            )
        if self.chunks != chunk_count(self.size, self.chunk_size):
            raise ChunkError(
                f"transfer.chunks is {self.chunks}; {self.size} bytes in chunks of"
                f" {self.chunk_size} are {chunk_count(self.size, self.chunk_size)}"
            )

    @classmethod
    def parse(cls, doc: Any) -> Transfer:
        """The transfer of an announce's `transfer` object; ChunkError why not."""
        if not isinstance(doc, dict):
            raise ChunkError("transfer must be an object")
        fields: dict[str, Any] = {}
        for key, kind in (
            ("id", str),
            ("size", int),
            ("sha256", str),
            ("chunk_size", int),
            ("chunks", int),
        ):
            value = doc.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ChunkError(f"transfer.{key} is missing or not a {kind.__name__}")
            fields[key] = value
        return cls(**fields)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "size": self.size,
            "sha256": self.sha256,
            "chunk_size": self.chunk_size,
            "chunks": self.chunks,
        }

    def span(self, index: int) -> tuple[int, int]:
        """(offset, length) of chunk `index` in the bundle."""
        offset = index * self.chunk_size
        return offset, min(self.chunk_size, self.size - offset)


def encode_chunk(transfer: str, index: int, data: bytes) -> bytes:
    """The payload of one chunk: its header line, then its bytes."""
    header = json.dumps({"transfer": transfer, "index": index}, separators=(",", ":"))
    return header.encode() + b"\n" + data


def decode_chunk(payload: bytes) -> tuple[str, int, bytes]:
    """(transfer id, index, bytes) of a chunk's payload; ChunkError when it is not one."""
    end = payload.find(b"\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        raise ChunkError(f"no header line in the first {MAX_HEADER_BYTES} bytes")
    try:
        header = json.loads(payload[:end])
    except ValueError:
        raise ChunkError("the header line is not JSON") from None
    if not isinstance(header, dict):
        raise ChunkError("the header line is not a JSON object")
    transfer, index = header.get("transfer"), header.get("index")
    if not isinstance(transfer, str) or not isinstance(index, int) or isinstance(index, bool):
        raise ChunkError("the header needs a string 'transfer' and an integer 'index'")
    return transfer, index, payload[end + 1 :]


def missing_ranges(have: bytes | bytearray, chunks: int, limit: int = 64) -> list[list[int]]:
    """The chunks not yet received, as [first, last] ranges (at most `limit` of them).

    `have` is a bitmap: bit i of byte i // 8 set when chunk i is in.
    """
    out: list[list[int]] = []
    start: int | None = None
    for i in range(chunks + 1):
        missing = i < chunks and not have[i // 8] >> (i % 8) & 1
        if missing and start is None:
            start = i
        elif not missing and start is not None:
            out.append([start, i - 1])
            start = None
            if len(out) >= limit:
                break
    return out
