"""Undo a body's content-encoding (gzip, x-gzip, deflate, zstd, br where available, stacked)."""

from __future__ import annotations

import zlib

import zstandard

DEFAULT_CAP = 256 * 1024 * 1024


class DecodeError(ValueError):
    pass


def _one(data: bytes, coding: str, cap: int) -> bytes:
    if coding in ("gzip", "x-gzip"):
        out = bytearray()
        while data:  # concatenated gzip members are one body
            d = zlib.decompressobj(wbits=31)
            out += d.decompress(data, cap - len(out))
            if d.unconsumed_tail:
                raise DecodeError(f"decoded body exceeds {cap} bytes")
            data = d.unused_data
        return bytes(out)
    if coding == "deflate":
        try:
            return zlib.decompress(data)
        except zlib.error:
            return zlib.decompress(data, wbits=-15)  # raw deflate, as some servers send
    if coding == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(data).read(cap + 1)[:cap]
    if coding == "br":
        try:
            import brotli  # type: ignore[import-not-found]
        except ImportError as e:
            raise DecodeError("br needs the brotli package") from e
        result: bytes = brotli.decompress(data)
        return result
    if coding == "identity":
        return data
    raise DecodeError(f"unsupported content-encoding {coding!r}")


def decode(data: bytes, content_encoding: str | None, cap: int = DEFAULT_CAP) -> bytes:
    """Decode every layer, last applied first; raises DecodeError."""
    if not content_encoding:
        return data
    layers = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    try:
        for coding in reversed(layers):
            data = _one(data, coding, cap)
    except (zlib.error, zstandard.ZstdError) as e:
        raise DecodeError(f"{content_encoding}: {e}") from e
    return data
