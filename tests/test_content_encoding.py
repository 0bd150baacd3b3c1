"""content_encoding.decode against the language-neutral corpus in
tests/fixtures/content-encoding (see its README), plus what tapewire adds to it."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import brotli
import pytest
import zstandard

from tapewire.content_encoding import (
    MAX_DECODED_BYTES,
    MAX_ZSTD_WINDOW,
    Decoded,
    DecodeError,
    decode,
)
from tapewire.journal.ingest import Ingester
from tapewire.redact import Redactor
from tapewire.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = FIXTURES / "content-encoding"
CASES = sorted((CORPUS / "cases").glob("*.json"), key=lambda p: p.name)

# Where tapewire deliberately departs from the corpus: {case name: the `expect` tapewire holds
# instead}. The corpus calls br and deflate unsupported because no Go or Rust capture path emits
# them; tapewire decodes both (SDKs such as httpx with brotli installed advertise br), so a
# plain-JSON body labelled br is a br stream that fails to decode, not a coding nobody reads.
# The message must still name the coding.
TAPEWIRE_EXPECT: dict[str, dict[str, Any]] = {
    "error-unsupported-encoding": {
        "outcome": "error",
        "error": {"class": "undecodable", "message_contains": ["br"]},
    },
}

JSON_PING = b'{"model":"claude-sonnet-4-6","messages":[{"role":"user","content":"ping"}]}'


# ---- building bodies from recipes ----------------------------------------------------------


def plaintext(form: dict[str, Any]) -> bytes:
    (kind, value), *_ = form.items()
    assert len(form) == 1, form
    if kind == "utf8":
        return str(value).encode()
    if kind == "repeat_utf8":
        return str(value["text"]).encode() * int(value["count"])
    if kind == "repeat_byte":
        return bytes([int(value["byte"])]) * int(value["count"])
    raise AssertionError(f"unknown plaintext form {kind!r}")


def encode(layer: str, data: bytes) -> bytes:
    if layer in ("gzip", "x-gzip"):
        c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return c.compress(data) + c.flush()
    if layer == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    if layer == "deflate":
        return zlib.compress(data)
    if layer == "br":
        return bytes(brotli.compress(data, quality=5))
    raise AssertionError(f"no encoder for {layer!r}")


def build(recipe: dict[str, Any], plain: bytes) -> bytes:
    members = int(recipe.get("members", 1))
    assert 1 <= members <= max(1, len(plain))
    size = len(plain) // members
    cuts = [plain[i * size : (i + 1) * size] for i in range(members - 1)]
    cuts.append(plain[(members - 1) * size :])  # the remainder goes on the last
    parts = []
    for cut in cuts:
        part = cut
        for layer in recipe["layers"]:  # applied left to right, as the header lists them
            part = encode(layer, part)
        parts.append(part)
    body = b"".join(parts)
    truncate = recipe.get("truncate")
    if truncate:
        ((how, n),) = truncate.items()
        if how == "drop_tail_bytes":
            body = body[: len(body) - n]
        elif how == "keep_head_bytes":
            body = body[:n]
        elif how == "keep_head_ratio":
            body = body[: len(body) * n[0] // n[1]]
        else:
            raise AssertionError(f"unknown truncate form {how!r}")
    return body


class Corpus:
    """Cases by name, with bodies built once: the cap cases are 48 MiB of plaintext each."""

    def __init__(self) -> None:
        self.cases = {p.stem: json.loads(p.read_bytes()) for p in CASES}
        self._built: dict[str, tuple[bytes | None, bytes]] = {}

    def body(self, name: str) -> tuple[bytes | None, bytes]:
        """(plaintext where the body is a recipe, body)."""
        if name not in self._built:
            spec = self.cases[name]["body"]
            if "bytes_b64" in spec:
                self._built[name] = None, base64.b64decode(spec["bytes_b64"], validate=True)
            else:
                plain = plaintext(spec["build"]["plaintext"])
                self._built[name] = plain, build(spec["build"], plain)
        return self._built[name]


@pytest.fixture(scope="module")
def corpus() -> Iterator[Corpus]:
    c = Corpus()
    yield c
    c._built.clear()


def same(got: bytes, want: bytes) -> None:
    """Byte equality without pytest diffing 48 MiB on failure."""
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
        pytest.fail(f"decoded {len(got)} bytes, wanted {len(want)}; first difference at {at}")


# ---- the corpus -----------------------------------------------------------------------------


def test_corpus_is_there() -> None:
    assert len(CASES) >= 27
    assert set(TAPEWIRE_EXPECT) <= {p.stem for p in CASES}, "an override names no case"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path, corpus: Corpus) -> None:
    case = corpus.cases[path.stem]
    assert case["name"] == path.stem
    expect = TAPEWIRE_EXPECT.get(case["name"], case["expect"])
    plain, body = corpus.body(case["name"])
    outcome = expect["outcome"]

    if outcome == "error":
        with pytest.raises(DecodeError) as info:
            decode(body, case["encoding"])
        assert info.value.kind == expect["error"]["class"], str(info.value)
        for part in expect["error"].get("message_contains", []):
            assert part in str(info.value)
        return

    result = decode(body, case["encoding"])
    assert isinstance(result, Decoded)
    assert result.truncated is (outcome == "salvaged"), outcome
    want = expect["decoded"]
    if want.get("equals_plaintext"):
        assert plain is not None
        same(result.data, plain)
    elif "bytes_b64" in want:
        same(result.data, base64.b64decode(want["bytes_b64"], validate=True))
    else:
        assert want.get("nonempty_prefix_of_plaintext")
        assert plain is not None
        assert result.data
        same(result.data, plain[: len(result.data)])
    if case["category"] == "identity":
        assert result.data is body  # no layers: handed back, not copied


def digest(corpus: Path) -> str:
    seal = hashlib.sha256()
    for path in sorted((corpus / "cases").glob("*.json"), key=lambda p: p.name):
        seal.update(f"{path.name}  {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return "sha256:" + seal.hexdigest()


@pytest.mark.parametrize("name", ["content-encoding", "thread"])
def test_vendored_corpus_matches_its_digest(name: str) -> None:
    assert digest(FIXTURES / name) == (FIXTURES / name / "DIGEST").read_text().strip()


# ---- beyond the corpus ----------------------------------------------------------------------


def words(n: int, seed: int = 1) -> bytes:
    """Text that compresses like text: cut anywhere, a prefix of it is still recoverable."""
    rng = random.Random(seed)
    vocab = [bytes(rng.choices(b"abcdefghijklmnop", k=rng.randint(2, 9))) for _ in range(500)]
    return b" ".join(rng.choices(vocab, k=n))


@pytest.mark.parametrize("coding", ["deflate", "br", "gzip", "zstd"])
def test_each_coding_round_trips(coding: str) -> None:
    result = decode(encode(coding, JSON_PING), coding.upper())
    assert result == Decoded(JSON_PING, False)


def test_raw_deflate_is_read_too() -> None:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decode(c.compress(JSON_PING) + c.flush(), "deflate") == Decoded(JSON_PING, False)


def test_stacked_through_every_coding() -> None:
    body = JSON_PING
    for layer in ("br", "deflate", "gzip", "zstd"):
        body = encode(layer, body)
    assert decode(body, "br, deflate, identity, gzip, zstd") == Decoded(JSON_PING, False)


@pytest.mark.parametrize("coding", ["deflate", "br", "gzip", "zstd"])
def test_cut_stream_is_salvaged(coding: str) -> None:
    plain = words(100_000)
    body = encode(coding, plain)
    result = decode(body[: len(body) * 3 // 4], coding)
    assert result.truncated
    assert 0 < len(result.data) < len(plain)
    assert plain.startswith(result.data)


@pytest.mark.parametrize("coding", ["deflate", "br", "gzip", "zstd"])
def test_cut_before_any_output_is_undecodable(coding: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(encode(coding, JSON_PING)[:2], coding)
    assert info.value.kind == "undecodable"
    assert "before producing any output" in str(info.value)


@pytest.mark.parametrize("coding", ["deflate", "br", "gzip, zstd"])
def test_empty_body_under_any_coding_is_undecodable(coding: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(b"", coding)
    assert info.value.kind == "undecodable"


@pytest.mark.parametrize("header", ["compress", "gzip, x-compress", "zstd,br,lzma"])
def test_unsupported_is_refused_before_any_layer_is_decoded(header: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(b"not decoded", header)  # were a layer tried first, this would be undecodable
    assert info.value.kind == "unsupported"
    assert header in str(info.value)


@pytest.mark.parametrize("coding", ["deflate", "br", "gzip"])
def test_bytes_after_the_stream_are_undecodable(coding: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(encode(coding, JSON_PING) + b"trailing", coding)
    assert info.value.kind == "undecodable"


def test_a_corrupt_layer_names_token_and_header() -> None:
    body = encode("zstd", b"not gzip inside")
    with pytest.raises(DecodeError) as info:
        decode(body, "GZip , zstd")
    assert info.value.kind == "undecodable"
    assert "GZip" in str(info.value)
    assert "'GZip , zstd'" in str(info.value)


@pytest.mark.parametrize("coding", ["deflate", "br", "gzip", "zstd"])
def test_cap_is_inclusive_per_coding(coding: str) -> None:
    plain = words(20_000)
    body = encode(coding, plain)
    assert decode(body, coding, cap=len(plain)).data == plain
    with pytest.raises(DecodeError) as info:
        decode(body, coding, cap=len(plain) - 1)
    assert info.value.kind == "oversize"


def test_cap_is_per_layer() -> None:
    plain = bytes(1000)
    inner = encode("gzip", plain)
    body = encode("zstd", inner)
    assert decode(body, "gzip, zstd", cap=len(plain)).data == plain  # each layer under it
    with pytest.raises(DecodeError) as info:
        decode(body, "gzip, zstd", cap=len(plain) - 1)
    assert info.value.kind == "oversize"
    assert info.value.args[0].startswith("gzip layer")


def test_zstd_without_a_content_size_decodes_to_the_cap() -> None:
    plain = words(20_000)
    chunks = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    body = chunks.compress(plain) + chunks.flush()
    assert zstandard.get_frame_parameters(body).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert decode(body, "zstd", cap=len(plain)).data == plain
    with pytest.raises(DecodeError) as info:
        decode(body, "zstd", cap=len(plain) - 1)
    assert info.value.kind == "oversize"


def test_zstd_window_bound_is_the_decoders() -> None:
    assert MAX_ZSTD_WINDOW == 1 << 25
    assert MAX_DECODED_BYTES == 48 << 20
    plain = bytes(range(256)) * 4096  # 1 MiB
    bodies = {}
    for window_log in (25, 26):  # streamed, so the encoder keeps the window it was given
        params = zstandard.ZstdCompressionParameters.from_level(
            3, window_log=window_log, write_content_size=False
        )
        frame = zstandard.ZstdCompressor(compression_params=params).compressobj()
        bodies[window_log] = frame.compress(plain) + frame.flush()
        assert zstandard.get_frame_parameters(bodies[window_log]).window_size == 1 << window_log
    assert decode(bodies[25], "zstd").data == plain
    with pytest.raises(DecodeError) as info:
        decode(bodies[26], "zstd")
    assert info.value.kind == "undecodable"


@pytest.mark.parametrize("coding", ["deflate", "br", "gzip", "zstd"])
def test_a_bomb_costs_at_most_the_cap(coding: str) -> None:
    bomb = encode(coding, bytes(16 << 20))  # 16 MiB of zeros, a few KiB encoded
    cap = 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError) as info:
            decode(bomb, coding, cap=cap)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.kind == "oversize"
    # what Python holds at once: the output up to the cap (in a buffer grown an eighth at a
    # time) and a step in flight, 256 KiB (br's decoder rounds it up to ~600 KiB); the bomb
    # itself decodes to 16 times the cap
    assert peak < cap + cap // 8 + (1 << 20), peak


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
def test_many_small_members_cost_linear_time(coding: str) -> None:
    # 100k one-byte members: fed whole remainders, each member's leftover copy makes this
    # ~100 GB of memcpy; fed in pieces, a fraction of a second
    body = encode(coding, b"x") * 100_000
    start = time.perf_counter()
    assert decode(body, coding) == Decoded(b"x" * 100_000, False)
    assert time.perf_counter() - start < 5


# ---- the ingester's redaction step, which must scan what a salvage recovers -----------------

SECRET = "sk-ant-api03-" + "Zq3" * 30 + "AA"  # built from pieces: no key-shaped literal here


def ingester(tmp_path: Path) -> Ingester:
    def no_store() -> Store:
        raise AssertionError("the redaction step opens no store")

    return Ingester(tmp_path, no_store, recorder="r", run="run", redactor=Redactor())


def test_a_salvaged_body_holding_a_secret_is_stored_decoded_and_redacted(tmp_path: Path) -> None:
    plain = json.dumps({"messages": [{"role": "user", "content": f"key={SECRET}"}]}).encode()
    cut = encode("gzip", plain)[:-8]  # the trailer never arrived
    assert decode(cut, "gzip") == Decoded(plain, True)
    body, decoded, count = ingester(tmp_path)._redact(cut, "gzip")
    assert (decoded, count) == (True, 1)
    assert SECRET.encode() not in body
    assert b"[REDACTED:" in body


def test_a_salvaged_body_without_secrets_is_kept_as_sent(tmp_path: Path) -> None:
    cut = encode("zstd", words(100_000))
    cut = cut[: len(cut) * 3 // 4]
    assert decode(cut, "zstd").truncated
    assert ingester(tmp_path)._redact(cut, "zstd")[2] == 0  # the caller keeps the wire bytes


def test_an_undecodable_body_is_kept_as_sent(tmp_path: Path) -> None:
    body = b"labelled gzip, and not"
    assert ingester(tmp_path)._redact(body, "gzip") == (body, False, 0)


def test_plain_text_under_a_false_label_is_scanned_as_it_is(tmp_path: Path) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": f"key={SECRET}"}]}).encode()
    stored, decoded, count = ingester(tmp_path)._redact(body, "gzip")  # not gzip at all
    assert (decoded, count) == (False, 1)
    assert SECRET.encode() not in stored
