"""The store, on each backend: migrated on open, bodies content-addressed and delta-compressed,
every body read back exactly, however long its dictionary chain."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tapewire.model import Evidence, Exchange, ExchangeEnd, Outcome, new_id
from tapewire.store import Batch, open_store, postgres_schema
from tapewire.store.blobs import MAX_DEPTH
from tapewire.store.location import DbRef
from tapewire.store.migrations import MIGRATIONS, pending
from tapewire.store.sqlite import SQLiteStore

# Each backend's own migrations, under the same names.
BACKEND_MIGRATIONS = {"sqlite": MIGRATIONS, "postgres": postgres_schema.MIGRATIONS}


def _exchange(body: bytes, session: str | None = "s1", started: float = 1.0) -> Exchange:
    return Exchange(
        id=new_id(), run_id="r", started_at=started, method="POST", path="/v1/messages",
        upstream="anthropic", upstream_url="http://x/v1/messages", provider="anthropic",
        request_headers=[("content-type", "application/json")], request_body=body,
        request_size=len(body), evidence=Evidence(session=session), recorder="j",
    )  # fmt: skip


def _end(ex: Exchange, body: bytes) -> ExchangeEnd:
    return ExchangeEnd(
        id=ex.id, status=200, response_headers=[("content-type", "text/event-stream")],
        response_body=body, response_truncated=False, response_size=len(body),
        upstream_headers_at=2.0, first_byte_at=2.1, last_byte_at=2.5,
        outcome=Outcome.COMPLETE, error=None,
    )  # fmt: skip


def _conversation(turns: int) -> list[bytes]:
    messages: list[dict[str, str]] = []
    bodies = []
    for i in range(turns):
        messages.append({"role": "user", "content": f"turn {i}: " + "context " * 200})
        bodies.append(json.dumps({"model": "m", "messages": messages}).encode())
    return bodies


def test_migrations_apply_once(db: DbRef, backend: str) -> None:
    migrations = BACKEND_MIGRATIONS[backend]
    assert [name for name, _ in migrations] == [name for name, _ in MIGRATIONS]
    store = open_store(db)
    assert pending(store.conn, migrations) == []
    applied = sorted(store.conn.execute("SELECT name, applied_at FROM _migrations").fetchall())
    assert [name for name, _ in applied] == [name for name, _ in migrations]
    store.close()
    store = open_store(db)  # reopening an up-to-date store changes nothing
    again = sorted(store.conn.execute("SELECT name, applied_at FROM _migrations").fetchall())
    assert again == applied
    store.close()


# About the SQLite file itself: its journal mode.
def test_a_sqlite_store_is_in_wal_mode(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "a.db").close()
    conn = sqlite3.connect(tmp_path / "a.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_long_conversation_round_trips_and_compresses(db: DbRef) -> None:
    store = open_store(db)
    bodies = _conversation(MAX_DEPTH + 10)  # longer than the chain cap
    for i, body in enumerate(bodies):
        ex = _exchange(body, started=float(i))
        store.write(Batch(begins=[ex], ends=[_end(ex, b"data: {}\n\n")]))
    store.close()
    store = open_store(db)  # cold: no cache
    rows = store.exchanges(limit=1000, with_bodies=True)
    assert [r.request_body for r in reversed(rows)] == bodies
    counts = store.counts()
    assert counts["body_bytes_stored"] < counts["body_bytes"] / 20
    depths = [d for (d,) in store.conn.execute("SELECT depth FROM blobs")]
    assert max(depths) <= MAX_DEPTH
    store.close()


def test_identical_bodies_are_stored_once(db: DbRef) -> None:
    store = open_store(db)
    body = b'{"model":"m","messages":[]}'
    exchanges = [_exchange(body) for _ in range(3)]
    store.write(Batch(begins=exchanges))
    assert store.conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 1
    assert store.counts()["outcomes"] == {"in_flight": 3}
    store.close()


def test_writing_a_batch_twice_changes_nothing(db: DbRef) -> None:
    """The ingester may replay a batch after a crash between commit and checkpoint."""
    store = open_store(db)
    ex = _exchange(b"{}")
    batch = Batch(begins=[ex], ends=[_end(ex, b"ok")], drops={})
    store.write(batch)
    store.write(Batch(begins=[_exchange(b"{}")], ends=[]))
    store.write(Batch(begins=[ex], ends=[_end(ex, b"ok")]))
    assert store.counts()["exchanges"] == 2
    redacted = _exchange(b"{}")
    redacted.redactions = 1
    redacted_end = _end(redacted, b"[REDACTED:x]")
    redacted_end.redactions = 2
    for _ in range(2):
        store.write(Batch(begins=[redacted], ends=[redacted_end]))
    row_r = store.exchange(redacted.id)
    assert row_r is not None and row_r.redactions == 3
    row = store.exchange(ex.id)
    assert row is not None and row.outcome == "complete" and row.response_body == b"ok"
    store.close()


def test_an_end_without_its_begin_is_kept(db: DbRef) -> None:
    store = open_store(db)
    ex = _exchange(b"{}")
    store.write(Batch(ends=[_end(ex, b"late")]))
    row = store.exchange(ex.id)
    assert row is not None
    assert row.response_body == b"late" and row.status == 200 and row.request_truncated
    store.close()


def test_interrupt_stale_marks_only_dead_runs_of_this_journal(db: DbRef) -> None:
    store = open_store(db)
    old, live, other = _exchange(b"1"), _exchange(b"2"), _exchange(b"3")
    live.run_id = "live"
    other.recorder = "another-proxy"
    store.write(Batch(begins=[old, live, other]))
    assert store.interrupt_stale("j", "live") == 1
    outcomes = {r.id: r.outcome for r in store.exchanges()}
    assert outcomes == {old.id: "interrupted", live.id: "in_flight", other.id: "in_flight"}
    store.close()


def test_shared_prefix_agrees_with_the_obvious_definition() -> None:
    import os.path
    import random

    from tapewire.store.blobs import shared_prefix

    rng = random.Random(7)
    for _ in range(500):
        a = rng.randbytes(rng.randint(0, 12000))
        b = a[: rng.randint(0, len(a))] + rng.randbytes(rng.randint(0, 50))
        assert shared_prefix(a, b) == len(os.path.commonprefix([a, b]))  # noqa: RUF071


def test_shared_suffix_agrees_with_the_obvious_definition() -> None:
    import random

    from tapewire.store.blobs import shared_suffix

    rng = random.Random(11)
    for _ in range(500):
        a = rng.randbytes(rng.randint(0, 12000))
        b = rng.randbytes(rng.randint(0, 50)) + a[rng.randint(0, len(a)) :]
        n = 0
        while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
            n += 1
        assert shared_suffix(a, b) == n


# About the SQLite file itself: its free pages (PostgreSQL's VACUUM is the server's own).
def test_a_clean_stop_gives_free_pages_back(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    SQLiteStore(path).close()
    empty = path.stat().st_size  # the schema alone
    store = SQLiteStore(path)
    store.conn.execute("CREATE TABLE scratch (b BLOB)")
    store.conn.execute("INSERT INTO scratch VALUES (zeroblob(400000))")
    store.conn.execute("DROP TABLE scratch")
    assert store.conn.execute("PRAGMA freelist_count").fetchone()[0] > 50
    store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert path.stat().st_size == empty  # the 400 kB went back to the file system
    finally:
        conn.close()
