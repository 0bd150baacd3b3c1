"""Body compression: zstd, with an earlier body of the same conversation as dictionary.

Agents resend the whole conversation every turn, so turn N's body is mostly turn N-1's:
compressed against it, a 150 KB body costs a few KB. Decoding follows the dictionary chain,
whose depth is capped so that no body needs more than MAX_DEPTH others to be read.
"""

from __future__ import annotations

import zstandard as zstd

LEVEL = 6
MAX_DEPTH = 32
RAW, ZSTD, ZSTD_DICT = "raw", "zstd", "zstd-dict"

_plain = zstd.ZstdCompressor(level=LEVEL)
_plain_d = zstd.ZstdDecompressor()


def compress(data: bytes, dictionary: bytes | None = None) -> tuple[str, bytes]:
    """(codec, payload): the smallest of raw, zstd, zstd against dictionary."""
    if dictionary:
        d = zstd.ZstdCompressionDict(dictionary, dict_type=zstd.DICT_TYPE_RAWCONTENT)
        payload = zstd.ZstdCompressor(level=LEVEL, dict_data=d).compress(data)
        codec = ZSTD_DICT
    else:
        payload, codec = _plain.compress(data), ZSTD
    if len(payload) >= len(data):
        return RAW, data  # already compressed on the wire (gzip SSE), or tiny
    return codec, payload


def decompress(codec: str, payload: bytes, size: int, dictionary: bytes | None = None) -> bytes:
    if codec == RAW:
        return payload
    if codec == ZSTD:
        return _plain_d.decompress(payload, max_output_size=size)
    if codec == ZSTD_DICT:
        if dictionary is None:
            raise ValueError("zstd-dict blob read without its dictionary")
        d = zstd.ZstdCompressionDict(dictionary, dict_type=zstd.DICT_TYPE_RAWCONTENT)
        return zstd.ZstdDecompressor(dict_data=d).decompress(payload, max_output_size=size)
    raise ValueError(f"unknown blob codec {codec!r}")


def shared_prefix(a: bytes, b: bytes, block: int = 4096) -> int:
    """Length of the common prefix: block compares at C speed, then bisection in the last block
    (both copy little, which matters on a thread that shares the GIL with the proxy)."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i : i + block] == b[i : i + block]:
        i += block
    i = min(i, n)
    lo, hi = i, min(i + block, n)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[i:mid] == b[i:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def shared_suffix(a: bytes, b: bytes, block: int = 4096) -> int:
    """Length of the common suffix, the same way as shared_prefix from the other end."""
    la, lb = len(a), len(b)
    n = min(la, lb)
    i = 0
    while i + block <= n and a[la - i - block : la - i] == b[lb - i - block : lb - i]:
        i += block
    lo, hi = i, min(i + block, n)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[la - mid : la - i] == b[lb - mid : lb - i]:
            lo = mid
        else:
            hi = mid - 1
    return lo
