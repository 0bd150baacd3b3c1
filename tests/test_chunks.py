"""Each response's chunk map: where its reads from the upstream broke and when each arrived, so
that a replay can serve the recorded chunking and pacing. Captured on the hot path, carried by
the journal's end record, stored in `exchanges.response_chunks`, read as
`ExchangeRow.response_chunks`."""

from __future__ import annotations

import io
import itertools
import json
import time
from pathlib import Path

import aiohttp
import pytest

from conftest import settings_for, stored
from fakeprovider import FakeProvider
from tapewire.capture import recorder as recorder_module
from tapewire.capture.recorder import Pacing
from tapewire.journal.format import decode_at, encode
from tapewire.journal.records import end_record, to_end
from tapewire.model import ChunkMap, Evidence, Exchange, ExchangeEnd, Outcome, new_id
from tapewire.service import Service, ServiceThread
from tapewire.store import Batch, ExchangeRow, open_store, postgres_schema
from tapewire.store import migrations as migrations_module
from tapewire.store import postgres as postgres_module
from tapewire.store.location import DbRef
from tapewire.store.migrations import MIGRATIONS, pending

# ---- helpers -------------------------------------------------------------------------------


async def _arrivals(
    url: str, headers: dict[str, str], body: bytes | io.BytesIO
) -> tuple[list[float], bytes]:
    """Seconds from sending to each chunk's arrival at the agent, and the whole body."""
    times, data = [], b""
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        start = time.perf_counter()
        async with http.post(url, headers=headers, data=body) as resp:
            async for chunk in resp.content.iter_any():
                times.append(time.perf_counter() - start)
                data += chunk
    return times, data


def _check_map(row: ExchangeRow) -> list[tuple[int, float]]:
    """The invariants every recorded map keeps: sizes sum to the bytes on the wire (and to
    the stored body when it is whole), the first at 0 ms, times never going back."""
    chunks = row.response_chunks
    assert chunks is not None, row.id
    sizes = [size for size, _ in chunks]
    ms = [at for _, at in chunks]
    assert all(size > 0 for size in sizes)
    assert sum(sizes) == row.response_size
    if not row.response_truncated and not row.redactions:
        assert row.response_body is not None and sum(sizes) == len(row.response_body)
    if chunks:
        assert ms[0] == 0.0
        assert ms == sorted(ms)
        assert all(round(at, 1) == at for at in ms)  # 0.1 ms resolution
    return chunks


def _exchange(body: bytes = b"{}") -> Exchange:
    return Exchange(
        id=new_id(), run_id="r", started_at=1.0, method="POST", path="/v1/messages",
        upstream="anthropic", upstream_url="http://x/v1/messages", provider="anthropic",
        request_headers=[], request_body=body, request_size=len(body),
        evidence=Evidence(session="s1"), recorder="j",
    )  # fmt: skip


def _end(ex: Exchange, body: bytes, chunks: ChunkMap | None) -> ExchangeEnd:
    return ExchangeEnd(
        id=ex.id, status=200, response_headers=[], response_body=body,
        response_truncated=False, response_size=len(body), upstream_headers_at=2.0,
        first_byte_at=2.1, last_byte_at=2.5, outcome=Outcome.COMPLETE, error=None,
        response_chunks=chunks,
    )  # fmt: skip


# ---- through a real proxy --------------------------------------------------------------------


async def test_a_paced_stream_keeps_its_chunks_and_gaps(
    fake: FakeProvider, recorder: Service
) -> None:
    events, gap_ms = 5, 50
    headers = {"x-fake-scenario": "paced", "x-fake-events": str(events),
               "x-fake-delay-ms": str(gap_ms)}  # fmt: skip
    _, body = await _arrivals(recorder.url + "/v1/chat/completions", headers, b"{}")
    (row,) = stored(recorder).exchanges(with_bodies=True)
    assert row.response_body == body
    chunks = _check_map(row)
    # One read per event, as the fake wrote them, each about 50 ms after the one before.
    sent = [f"data: {json.dumps({'i': k})}\n\n".encode() for k in range(events)]
    assert [size for size, _ in chunks] == [len(s) for s in sent]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(chunks)]
    assert all(abs(g - gap_ms) < 20 for g in gaps), gaps
    # The map's span matches the record's own first and last byte.
    first, last = row.timings["first_byte"], row.timings["last_byte"]
    assert first is not None and last is not None
    assert abs(chunks[-1][1] - (last - first) * 1000) < 20


async def test_a_plain_json_response_has_a_map(fake: FakeProvider, recorder: Service) -> None:
    req = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})
    _, body = await _arrivals(recorder.url + "/v1/chat/completions", {}, req.encode())
    (row,) = stored(recorder).exchanges(with_bodies=True)
    assert row.response_body == body and json.loads(body)["object"] == "chat.completion"
    assert len(_check_map(row)) >= 1


async def test_tapewire_own_error_answer_is_one_chunk(
    fake: FakeProvider, recorder: Service
) -> None:
    _, body = await _arrivals(recorder.url + "/u/nowhere/v1/chat/completions", {}, b"{}")
    (row,) = stored(recorder).exchanges(with_bodies=True)
    assert row.outcome == "upstream_error"
    assert row.response_chunks == [(len(body), 0.0)]


def test_the_recorded_claude_session_stores_maps_summing_to_each_body(recorded_db: DbRef) -> None:
    store = open_store(recorded_db, readonly=True)
    try:
        rows = store.exchanges(limit=100, with_bodies=True)
    finally:
        store.close()
    assert len(rows) == 17
    for row in rows:
        assert row.outcome == "complete" and not row.response_truncated
        chunks = _check_map(row)
        assert row.response_body is not None
        assert sum(size for size, _ in chunks) == len(row.response_body) == row.response_size


async def test_a_truncated_body_keeps_the_whole_wire_map(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    """The record keeps at most 1 MiB; the map still describes every byte the agent got,
    and the kept part ends on a chunk boundary (the tee keeps or drops whole chunks)."""
    payload = bytes(range(256)) * (5 * 4096)  # 5 MiB echoed back
    settings = settings_for(fake, tmp_path, db=db, exchange_cap=1024 * 1024)
    with ServiceThread(settings) as service:
        _, body = await _arrivals(
            service.url + "/v1/chat/completions", {"x-fake-scenario": "echo"}, io.BytesIO(payload)
        )
        assert body == payload
        (row,) = stored(service).exchanges(with_bodies=True)
    assert row.response_truncated and row.response_size == len(payload)
    chunks = _check_map(row)
    assert row.response_body is not None and 0 < len(row.response_body) < len(payload)
    assert payload.startswith(row.response_body)
    ends = list(itertools.accumulate(size for size, _ in chunks))
    assert len(row.response_body) in ends


@pytest.mark.parametrize(("digits", "kept"), [(19, True), (5, False)])
async def test_redaction_keeps_the_map_only_when_the_length_holds(
    fake: FakeProvider, tmp_path: Path, db: DbRef, digits: int, kept: bool
) -> None:
    """`internal-id-<digits>` is redacted to `internal-id-[REDACTED:custom-1]`: with 19
    digits the body keeps its length (and every chunk offset), with 5 it shrinks."""
    secret = "internal-id-" + "7" * digits
    payload = json.dumps({"text": "x" * 10_000 + secret + "y" * 10_000}).encode()
    settings = settings_for(fake, tmp_path, db=db, redact_patterns=[r"internal-id-(\d+)"])
    with ServiceThread(settings) as service:
        _, body = await _arrivals(
            service.url + "/v1/chat/completions", {"x-fake-scenario": "echo"}, payload
        )
        assert body == payload  # the agent gets the secret: redaction is for the record
        (row,) = stored(service).exchanges(with_bodies=True)
    assert row.response_body is not None and secret.encode() not in row.response_body
    assert (len(row.response_body) == len(payload)) is kept
    if kept:
        chunks = row.response_chunks
        assert chunks is not None and sum(s for s, _ in chunks) == len(row.response_body)
    else:
        assert row.response_chunks is None


# ---- the capture cap -----------------------------------------------------------------------


def test_past_the_cap_the_last_entry_takes_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "CHUNK_CAP", 4)
    pacing = Pacing()
    for k in range(10):
        pacing.add(100 + k, 1000.0 + k * 0.01)  # 10 ms apart
    m = pacing.map()
    assert m.sizes == [100, 101, 102, 103 + sum(range(104, 110))]
    assert sum(m.sizes) == sum(range(100, 110))
    assert m.ms == [0.0, 10.0, 20.0, 30.0]  # the merged entry keeps its own arrival


def test_pacing_rounds_to_a_tenth_of_a_millisecond() -> None:
    pacing = Pacing()
    pacing.add(1, 5.0)
    pacing.add(2, 5.0123456)
    assert pacing.map() == ChunkMap([1, 2], [0.0, 12.3])


# ---- the journal -----------------------------------------------------------------------------


def test_the_end_record_carries_the_map_and_old_records_still_read() -> None:
    ex = _exchange()
    ex.status, ex.response_body, ex.response_size = 200, b"abcdef", 6
    ex.outcome = Outcome.COMPLETE
    ex.response_chunks = ChunkMap([2, 4], [0.0, 50.3])
    meta, sections = end_record(ex)
    assert meta["chunk_sizes"] == [2, 4] and meta["chunk_ms"] == [0.0, 50.3]
    record, _ = decode_at(b"".join(encode(meta, sections)), 0)
    assert to_end(record).response_chunks == ChunkMap([2, 4], [0.0, 50.3])

    old = {k: v for k, v in meta.items() if not k.startswith("chunk_")}  # before the field
    record, _ = decode_at(b"".join(encode(old, sections)), 0)
    end = to_end(record)
    assert end.response_chunks is None and end.response_body == b"abcdef"


# ---- the store -------------------------------------------------------------------------------


def test_short_maps_are_json_text_and_long_ones_zstd(db: DbRef) -> None:
    store = open_store(db)
    short, long_ = _exchange(b"1"), _exchange(b"2")
    sizes = [17 + k % 300 for k in range(5000)]
    ms = [round(k * 1.7, 1) for k in range(5000)]
    body = b"x" * sum(sizes)
    store.write(Batch(
        begins=[short, long_],
        ends=[_end(short, b"abc", ChunkMap([1, 2], [0.0, 3.5])),
              _end(long_, body, ChunkMap(sizes, ms))],
    ))  # fmt: skip
    raw = dict(store.conn.execute("SELECT id, response_chunks FROM exchanges").fetchall())
    assert json.loads(raw[short.id]) == {"sizes": [1, 2], "ms": [0.0, 3.5]}
    assert isinstance(raw[long_.id], bytes) and raw[long_.id].startswith(b"\x28\xb5\x2f\xfd")
    assert len(raw[long_.id]) < len(json.dumps({"sizes": sizes, "ms": ms})) / 2
    store.close()
    store = open_store(db)
    row_short, row_long = store.exchange(short.id), store.exchange(long_.id)
    assert row_short is not None and row_short.response_chunks == [(1, 0.0), (2, 3.5)]
    assert row_long is not None and row_long.response_chunks == list(zip(sizes, ms, strict=True))
    store.close()


def test_a_store_from_before_0004_opens_reads_and_migrates(
    db: DbRef, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each backend applies its own list of migrations: both stop at 0003_findings here.
    module, migrations = (
        (migrations_module, MIGRATIONS)
        if backend == "sqlite"
        else (postgres_module, postgres_schema.MIGRATIONS)
    )
    with monkeypatch.context() as m:
        m.setattr(module, "MIGRATIONS", migrations[:3])  # up to 0003_findings
        old = open_store(db)
        ex = _exchange()
        old.write(Batch(begins=[ex]))
        old.conn.execute(
            "UPDATE exchanges SET outcome = 'complete', status = 200, response_size = 0"
            " WHERE id = ?",
            (ex.id,),
        )
        assert "response_chunks" not in old._column_names("exchanges")
        old.close()

    # A reader never migrates: it reads the old schema, with no maps.
    reader = open_store(db, readonly=True)
    row = reader.exchange(ex.id)
    assert row is not None and row.outcome == "complete" and row.response_chunks is None
    reader.close()

    store = open_store(db)  # a writer applies 0004
    conn = store.conn
    assert pending(conn, migrations) == []
    names = sorted(r[0] for r in conn.execute("SELECT name FROM _migrations"))
    assert names == [name for name, _ in migrations] and "0004_response_chunks" in names
    row = store.exchange(ex.id)
    assert row is not None and row.response_chunks is None  # captured before the column
    new = _exchange()
    store.write(Batch(begins=[new], ends=[_end(new, b"hello", ChunkMap([5], [0.0]))]))
    row = store.exchange(new.id)
    assert row is not None and row.response_chunks == [(5, 0.0)]
    store.close()
