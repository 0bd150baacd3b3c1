"""Undo a captured body's Content-Encoding: the policy of tests/fixtures/content-encoding.

The header lists codings in the order they were applied, so layers come off right to left.
Tokens are split on ",", trimmed and matched case-insensitively; `identity` (and an empty or
absent header) is no layer at all, and a body with no layers is handed back as it came, not
copied.

Readable codings: gzip / x-gzip (concatenated members), zstd (concatenated frames), and,
beyond the fixture corpus, deflate (zlib-wrapped, or raw as some servers send it) and br.

Every failure is a `DecodeError` of one of three kinds:
  unsupported  a coding with no decoder; checked for every layer before any is decoded
  oversize     a layer's output would pass `cap` (MAX_DECODED_BYTES): the bomb guard
  undecodable  corrupt input, a resource bound refused up front (a zstd window above
               MAX_ZSTD_WINDOW), an empty body under a real coding, or a stream that ended
               early without producing anything
and its message names the failing token and the whole header.

A stream that ends early after producing output (a gzip member short its trailer, a cut
deflate, zstd or br stream) is salvaged: the output so far, with `truncated=True`.

A layer's output is never held past `cap` bytes (in a buffer BytesIO grows by an eighth at a
time), plus the one step of at most 256 KiB in flight (br's decoder rounds a step up, to
~600 KiB): a bomb is refused at that cost. A layer that fits is handed back without a copy.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import brotli
import zstandard

MAX_DECODED_BYTES = 48 * 1024 * 1024
"""Per-layer output cap: a layer decoding to exactly this much is accepted, one more refused."""

MAX_ZSTD_WINDOW = 32 * 1024 * 1024
"""zstd frames declaring a larger window (windowLog > 25) are refused before they expand."""

_STEP = 256 * 1024  # output per call: decoders are driven in steps of at most this
_PIECE_FIRST, _PIECE_MAX = 1024, 64 * 1024  # input per call: see _Input
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

Kind = Literal["unsupported", "oversize", "undecodable"]


@dataclass(frozen=True)
class Decoded:
    data: bytes
    truncated: bool  # the stream ended early and `data` is what it produced (salvaged)


class DecodeError(ValueError):
    def __init__(self, kind: Kind, message: str) -> None:
        super().__init__(message)
        self.kind: Kind = kind


class _LayerError(Exception):
    """One layer's failure, before decode() names the token and header on it."""

    def __init__(self, kind: Kind, reason: str) -> None:
        super().__init__(reason)
        self.kind: Kind = kind
        self.reason = reason


def _oversize(cap: int) -> _LayerError:
    return _LayerError("oversize", f"decodes to more than {cap} bytes")


class _Output:
    """One layer's output: refused before it holds more than the cap, and gathered without
    a closing copy (a single chunk is kept as it is; BytesIO hands back its own buffer)."""

    def __init__(self, cap: int) -> None:
        self.cap, self.size = cap, 0
        self._first = b""
        self._rest: io.BytesIO | None = None

    def room(self) -> int:
        """How much the next step may produce: >= 1 while under the cap (0 means no limit
        to zlib), one past the cap at most, so that reaching it is seen."""
        return min(_STEP, self.cap + 1 - self.size)

    def add(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        if self.size > self.cap:
            raise _oversize(self.cap)
        if self._rest is not None:
            self._rest.write(chunk)
        elif not self._first:
            self._first = chunk
        else:
            self._rest = io.BytesIO()
            self._rest.write(self._first)
            self._rest.write(chunk)
            self._first = b""

    def done(self, truncated: bool) -> tuple[bytes, bool]:
        """The output, and whether the stream ended early; an early end that produced
        nothing is no salvage."""
        if truncated and not self.size:
            raise _LayerError("undecodable", "stream ended before producing any output")
        return (self._first if self._rest is None else self._rest.getvalue()), truncated


class _Input:
    """The encoded bytes, handed to a decoder in pieces that start small and double. Decoders
    copy what they leave of a piece (zlib's unconsumed_tail, every unused_data), so feeding
    whole remainders would make a body of many small members or frames quadratic."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self.pos, self._size = 0, _PIECE_FIRST

    def more(self) -> bool:
        return self.pos < len(self._view)

    def piece(self) -> memoryview:
        piece = self._view[self.pos : self.pos + self._size]
        self.pos += len(piece)
        self._size = min(2 * self._size, _PIECE_MAX)
        return piece

    def next_stream(self, unused: int) -> None:
        """The stream fed last ended `unused` bytes before the end of what it was fed."""
        self.pos -= unused
        self._size = _PIECE_FIRST


def _inflate(data: bytes, cap: int, wbits: int, members: bool) -> tuple[bytes, bool]:
    """A zlib-family stream; with `members`, a series of them (RFC 1952 2.2)."""
    src, out = _Input(data), _Output(cap)
    while True:
        d = zlib.decompressobj(wbits)
        pending: bytes | memoryview = b""
        while not d.eof:
            if pending or src.more():
                chunk = d.decompress(pending or src.piece(), out.room())
            else:  # the input has run out: take what an output step held back, if any
                chunk = d.decompress(b"", out.room())
                if not chunk:
                    return out.done(truncated=True)
            out.add(chunk)
            pending = d.unconsumed_tail
        src.next_stream(len(d.unused_data))
        if not src.more():
            return out.done(truncated=False)
        if not members:
            raise _LayerError("undecodable", "bytes after the end of the stream")


def _gzip(data: bytes, cap: int) -> tuple[bytes, bool]:
    return _inflate(data, cap, wbits=16 + zlib.MAX_WBITS, members=True)


def _deflate(data: bytes, cap: int) -> tuple[bytes, bool]:
    # RFC 9110 deflate is zlib-wrapped, but servers also send raw deflate. The wrapper's
    # two-byte header (method 8, window <= 32K, check bits) is never how an encoder starts a
    # raw stream, so it decides which this is.
    wrapped = (
        len(data) >= 2
        and data[0] & 0x0F == 8
        and data[0] >> 4 <= 7
        and ((data[0] << 8) | data[1]) % 31 == 0
    )
    return _inflate(data, cap, wbits=zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS, members=False)


def _zstd(data: bytes, cap: int) -> tuple[bytes, bool]:
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW)
    # First pass: measure, holding one step at a time. The stream reader needs no declared
    # content size (the one-shot decompress() does) and stops at the cap, so a bomb costs
    # cap + 1 bytes of decoding and two steps of memory.
    total = 0
    with dctx.stream_reader(data, read_across_frames=True) as reader:
        while chunk := reader.read(_STEP):
            total += len(chunk)
            if total > cap:
                raise _oversize(cap)
    # Second pass, now known to fit: frame by frame, which is what tells a frame that ended
    # from one that was cut off (the reader hands back a cut frame's blocks without a word).
    src, out = _Input(data), _Output(cap)
    while src.more():
        head = data[src.pos : src.pos + 5]
        if head[:4] == _ZSTD_MAGIC and len(head) == 5 and head[4] & 0x08:
            raise _LayerError("undecodable", "reserved bit set in a frame header")
        frame = dctx.decompressobj()
        while not frame.eof and src.more():
            out.add(frame.decompress(src.piece()))  # cannot pass the cap now; checked still
        if not frame.eof:
            return out.done(truncated=True)
        src.next_stream(len(frame.unused_data))
    return out.done(truncated=False)


def _brotli(data: bytes, cap: int) -> tuple[bytes, bool]:
    d = brotli.Decompressor()
    out, pending = _Output(cap), data
    while True:
        chunk: bytes = d.process(pending, output_buffer_limit=out.room())
        out.add(chunk)
        if d.is_finished():
            return out.done(truncated=False)
        if not (chunk or pending):  # drained, and waiting for input that never came
            return out.done(truncated=True)
        pending = b""


_Decoder = Callable[[bytes, int], tuple[bytes, bool]]
_DECODERS: dict[str, _Decoder] = {
    "gzip": _gzip,
    "x-gzip": _gzip,
    "deflate": _deflate,
    "zstd": _zstd,
    "br": _brotli,
}


def decode(data: bytes, content_encoding: str | None, cap: int = MAX_DECODED_BYTES) -> Decoded:
    """Undo every layer of `content_encoding`, last applied first. With no layers, `data` is
    returned itself. Each layer's output is capped at `cap` bytes. Raises DecodeError."""
    header = content_encoding or ""
    layers = [t for t in (t.strip() for t in header.split(",")) if t and t.lower() != "identity"]
    for token in layers:  # an unreadable layer anywhere refuses the body before any work
        if token.lower() not in _DECODERS:
            raise DecodeError(
                "unsupported", f"unsupported content-encoding {token!r} in {header!r}"
            )
    truncated = False
    for token in reversed(layers):
        try:
            if not data:
                raise _LayerError("undecodable", "empty body")
            data, cut = _DECODERS[token.lower()](data, cap)
        except _LayerError as e:
            raise DecodeError(e.kind, _message(token, header, e.reason)) from None
        except (zlib.error, zstandard.ZstdError, brotli.error) as e:
            raise DecodeError("undecodable", _message(token, header, str(e))) from e
        truncated = truncated or cut
    return Decoded(data, truncated)


def _message(token: str, header: str, reason: str) -> str:
    return f"{token} layer of content-encoding {header!r}: {reason}"
