"""The 17-turn Claude Code recording, replayed through tapewire by a fake upstream that serves
its recorded gzip bytes in event-sized writes: the agent side and the upstream side each see
exactly the recorded bytes, the store keeps them exactly, and no credential is kept anywhere."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from conftest import RECORDING, settings_for, stored
from fakeprovider import FakeProvider, RecordedTurn, load_recording
from tapewire.model import header_value
from tapewire.service import ServiceThread
from tapewire.store import location, open_store
from tapewire.store.location import DbRef

TURNS = load_recording(RECORDING)
# Recorded headers that describe the original connection, not the message.
CONNECTION_HEADERS = {"transfer-encoding", "content-length", "date", "connection"}


def _credentials(i: int) -> dict[str, str]:
    """Credential values unique to this test, to search for afterwards."""
    return {
        "authorization": f"Bearer sk-ant-oat01-CREDENTIAL{i:02d}xyzzyNEVERSTORED",
        "x-api-key": f"sk-ant-api03-APIKEY{i:02d}plughNEVERSTORED",
        "cookie": f"session=COOKIE{i:02d}NEVERSTORED",
    }


def _request_headers(turn: RecordedTurn, i: int) -> list[tuple[str, str]]:
    creds = _credentials(i)
    headers = [(k, creds.get(k.lower(), v)) for k, v in turn.request_headers]
    return [*headers, ("x-api-key", creds["x-api-key"]), ("cookie", creds["cookie"])]


async def _replay(url: str) -> list[tuple[int, list[tuple[str, str]], bytes]]:
    results = []
    async with aiohttp.ClientSession(
        auto_decompress=False, skip_auto_headers={"User-Agent", "Accept-Encoding", "Accept"}
    ) as http:
        for i, turn in enumerate(TURNS):
            async with http.post(
                url + "/v1/messages?beta=true",
                headers=_request_headers(turn, i),
                data=turn.request_body,
            ) as resp:
                body = await resp.read()
                headers = [(k.decode(), v.decode()) for k, v in resp.raw_headers]
                results.append((resp.status, headers, body))
    return results


def _files_under(*paths: Path) -> list[Path]:
    found = []
    for p in paths:
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(q for q in p.rglob("*") if q.is_file())
    return found


def _every_value(db: DbRef) -> bytes:
    """Every value of every table of the store (FTS5's and the search vectors too), as bytes:
    what anyone who can read the database sees."""
    store = open_store(db, readonly=True)
    conn = store.conn  # type: ignore[attr-defined]
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
                if location.is_postgres(db)
                else "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        ]
        assert {"exchanges", "blobs", "nodes"} <= set(tables)
        out = bytearray()
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table}"):
                for value in row:
                    out += bytes(value) if isinstance(value, bytes | memoryview) else b"%r" % value
        return bytes(out)
    finally:
        store.close()


async def test_recorded_claude_session_passes_byte_exact(
    fake: FakeProvider, tmp_path: Path, db: DbRef, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert len(TURNS) == 17
    settings = settings_for(fake, tmp_path, db=db)
    with ServiceThread(settings) as service:
        results = await _replay(service.url)
        store = stored(service)
        rows = {r.id: r for r in store.exchanges(limit=100, with_bodies=True)}
        # The live segment stays until the proxy stops: read what the journal holds now.
        journal = [p.read_bytes() for p in _files_under(settings.journal_dir)]

    for i, (turn, (status, headers, body)) in enumerate(zip(TURNS, results, strict=True)):
        # The agent gets the provider's bytes: status, headers (less hop-by-hop), gzip body.
        assert status == turn.status
        assert body == turn.response_body, turn.name
        assert header_value(headers, "content-encoding") == "gzip"
        recorded = [(k, v) for k, v in turn.response_headers if k.lower() not in CONNECTION_HEADERS]
        received = [(k, v) for k, v in headers if k.lower() not in CONNECTION_HEADERS]
        assert received == recorded
        # The provider gets the agent's bytes.
        upstream = fake.received[i]
        assert upstream.body == turn.request_body
        assert upstream.raw_path == "/v1/messages?beta=true"
        assert ("authorization", _credentials(i)["authorization"]) in upstream.headers

    # The store holds each exchange whole: request and the still-compressed response.
    assert len(rows) == 17
    by_request = {r.request_body: r for r in rows.values()}
    for turn in TURNS:
        row = by_request[turn.request_body]
        assert row.outcome == "complete"
        assert row.response_body == turn.response_body
        assert header_value(row.response_headers, "content-encoding") == "gzip"
        assert row.response_encoding == "gzip"
        assert row.evidence["claude_session"] == "ac9b5a71-50d4-47c2-b771-4d5c3e96d899"
        assert row.redactions == 0
        assert row.timings["first_byte"] is not None
    assert sum(1 for r in rows.values() if "claude_agent" in r.evidence) == 2
    counts = store.counts()
    assert counts["body_bytes"] == sum(len(t.request_body) + len(t.response_body) for t in TURNS)
    # Resent conversations are stored as deltas: a small fraction of the raw bytes.
    assert counts["body_bytes_stored"] < counts["body_bytes"] * 0.1

    # Credentials were forwarded, and are nowhere in the database, the journal or the logs.
    assert sum(map(len, journal)) > sum(len(t.request_body) for t in TURNS)
    files = _files_under(settings.journal_dir)
    if isinstance(db, Path):  # the file itself as well: its free pages, its WAL
        files += _files_under(db, Path(f"{db}-wal"))
    values = _every_value(db)
    assert b"x-claude-code-session-id" in values  # the headers that were kept are in there
    everything = b"".join([*(p.read_bytes() for p in files), *journal, values])
    logs = caplog.text.encode()
    for i in range(len(TURNS)):
        for value in _credentials(i).values():
            assert value.encode() not in everything
            assert value.encode() not in logs
    # The header names stay, so a reader can tell how a request authenticated.
    some = next(iter(rows.values()))
    assert ("authorization", "") in some.request_headers
