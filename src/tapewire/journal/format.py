"""The journal's record framing: self-checking, so a torn tail or a bad stretch is found and skipped.

A record is ``MAGIC | u32 payload length | u32 crc32(payload) | payload``; the payload is
``u32 meta length | meta JSON | sections…`` where the meta names each section's length.
Bodies travel as raw sections, never inside JSON.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

MAGIC = b"TWJ1"
_HEAD = struct.Struct("<4sII")
_META_LEN = struct.Struct("<I")
HEAD_SIZE = _HEAD.size
FORMAT_VERSION = 1


@dataclass
class Record:
    meta: dict[str, Any]
    sections: list[bytes]

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])


def encode(meta: dict[str, Any], sections: Sequence[bytes] = ()) -> list[bytes]:
    """The record as buffers for one os.writev call (no copy of the bodies)."""
    meta = {**meta, "v": FORMAT_VERSION, "sections": [len(s) for s in sections]}
    meta_bytes = orjson.dumps(meta)
    meta_head = _META_LEN.pack(len(meta_bytes))
    length = len(meta_head) + len(meta_bytes) + sum(len(s) for s in sections)
    crc = zlib.crc32(meta_head)
    crc = zlib.crc32(meta_bytes, crc)
    for s in sections:
        crc = zlib.crc32(s, crc)
    return [_HEAD.pack(MAGIC, length, crc), meta_head, meta_bytes, *sections]


class Torn(Exception):
    """Not enough bytes for a whole record (yet)."""


class Corrupt(Exception):
    """Bytes that are not a valid record at this offset."""


def decode_at(buf: bytes, offset: int) -> tuple[Record, int]:
    """Decode the record at offset; returns it and the offset just past it."""
    end_head = offset + HEAD_SIZE
    if end_head > len(buf):
        raise Torn
    magic, length, crc = _HEAD.unpack_from(buf, offset)
    if magic != MAGIC:
        raise Corrupt(f"no record magic at {offset}")
    end = end_head + length
    if end > len(buf):
        raise Torn
    payload = memoryview(buf)[end_head:end]
    if zlib.crc32(payload) != crc:
        raise Corrupt(f"checksum mismatch at {offset}")
    (meta_len,) = _META_LEN.unpack_from(payload, 0)
    pos = _META_LEN.size + meta_len
    meta: dict[str, Any] = orjson.loads(payload[_META_LEN.size : pos])
    sections = []
    for n in meta.get("sections", []):
        sections.append(bytes(payload[pos : pos + n]))
        pos += n
    return Record(meta, sections), end


def resync(buf: bytes, offset: int) -> int:
    """The next offset after a bad one where a record could start, or len(buf)."""
    found = buf.find(MAGIC, offset + 1)
    if found < 0:  # keep a tail that may be the start of a magic cut by the read's end
        return max(offset + 1, len(buf) - len(MAGIC) + 1)
    return found
