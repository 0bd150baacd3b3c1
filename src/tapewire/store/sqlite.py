"""The embedded SQLite backend: one file, WAL, migrated on open."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson

from tapewire.model import Exchange, ExchangeEnd, Headers, Outcome, header_value
from tapewire.store import Batch, ExchangeRow
from tapewire.store.blobs import MAX_DEPTH, compress, decompress, shared_prefix
from tapewire.store.migrations import migrate

_RECENT_PER_CHAIN = 4
_CHAINS_KEPT = 32
_READ_CACHE = 64


# Sets, never adds: a batch replayed after a crash writes the same row again.
_END_SQL = (
    "UPDATE exchanges SET status=?, response_headers=?, response_blob=?, response_encoding=?,"
    " response_size=?, response_truncated=?, response_sha256=?, upstream_headers_at=?,"
    " first_byte_at=?, last_byte_at=?, outcome=?, error=?, response_redactions=? WHERE id = ?"
)


def _open_readonly(path: Path) -> sqlite3.Connection:
    """For the reading commands: a store whose file or folder is not writable (a read-only
    mount, a full disk) can still be read. WAL needs its -shm file; where that cannot be
    made, read the file as it stands (immutable), which after a clean stop is all of it."""
    if not path.exists():
        raise FileNotFoundError(f"no database at {path}")
    uri = path.resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None, timeout=30)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
    conn.execute("PRAGMA query_only = 1")
    return conn


def _headers_json(headers: Headers) -> str:
    return orjson.dumps(headers).decode()


def _encoding(headers: Headers) -> str | None:
    value = header_value(headers, "content-encoding")
    return value.strip().lower() if value else None


class SQLiteStore:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self._recent: OrderedDict[str, list[tuple[str, bytes, int]]] = OrderedDict()
        self._read_cache: OrderedDict[str, bytes] = OrderedDict()
        if readonly:
            self.conn = _open_readonly(path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA busy_timeout = 30000")
        if self.conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            self.conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # so pruning can give space back
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        migrate(self.conn)

    # ---- writing -------------------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for ex in batch.begins:
                self._begin(ex)
            for end in batch.ends:
                self._end(end)
            for ctx in batch.contexts:
                c.execute(
                    "INSERT INTO run_contexts VALUES (?, ?, ?) ON CONFLICT(session) DO UPDATE"
                    " SET recorded_at = excluded.recorded_at, context = excluded.context",
                    (ctx.session, ctx.recorded_at, json.dumps(ctx.context, ensure_ascii=False)),
                )
            now = time.time()
            for reason, count in batch.drops.items():
                c.execute(
                    "INSERT INTO drops VALUES (?, ?, ?, NULL) ON CONFLICT(reason) DO UPDATE"
                    " SET count = count + excluded.count, last_at = excluded.last_at",
                    (reason, count, now),
                )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            self._recent.clear()  # may name blobs the rollback took back
            raise

    def _begin(self, ex: Exchange) -> None:
        blob = self._put_request_body(ex) if ex.request_size or ex.request_body else None
        e = ex.evidence
        self.conn.execute(
            "INSERT INTO exchanges (id, recorder, run, started_at, method, path, upstream,"
            " upstream_url, provider, session, claude_session, claude_agent, codex_session,"
            " codex_thread, request_headers, request_blob, request_encoding, request_size,"
            " request_truncated, request_sha256, request_end_at, redactions, outcome)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(id) DO NOTHING",
            (
                ex.id,
                ex.recorder,
                ex.run_id,
                ex.started_at,
                ex.method,
                ex.path,
                ex.upstream,
                ex.upstream_url,
                ex.provider,
                e.session,
                e.claude_session,
                e.claude_agent,
                e.codex_session,
                e.codex_thread,
                _headers_json(ex.request_headers),
                blob,
                ex.request_encoding or _encoding(ex.request_headers),
                ex.request_size,
                int(ex.request_truncated),
                ex.request_sha256,
                ex.request_end_at,
                ex.redactions,
                str(Outcome.IN_FLIGHT),
            ),
        )

    def _end(self, end: ExchangeEnd) -> None:
        known = end.response_sha256 if not end.redactions else None
        blob = self._put_blob(end.response_body, None, None, known) if end.response_body else None
        encoding = end.response_encoding or _encoding(end.response_headers)
        args = (
            end.status,
            _headers_json(end.response_headers),
            blob,
            encoding,
            end.response_size,
            int(end.response_truncated),
            end.response_sha256,
            end.upstream_headers_at,
            end.first_byte_at,
            end.last_byte_at,
            str(end.outcome),
            end.error,
            end.redactions,
        )
        if not self.conn.execute(_END_SQL, (*args, end.id)).rowcount:
            # Its begin record was lost (the journal write failed): keep what we have.
            self.conn.execute(
                "INSERT INTO exchanges (id, recorder, run, started_at, method, path, upstream,"
                " upstream_url, request_headers, request_size, request_truncated, outcome)"
                " VALUES (?, '', '', ?, '', '', '', '', '[]', 0, 1, 'in_flight')",
                (end.id, end.upstream_headers_at or time.time()),
            )
            self.conn.execute(_END_SQL, (*args, end.id))

    def _put_request_body(self, ex: Exchange) -> str:
        chain = ex.conversation_key()
        recent = self._recent_bodies(chain)
        body = ex.request_body
        best = max(recent, key=lambda r: shared_prefix(r[1], body), default=None)
        if best is not None and best[2] >= MAX_DEPTH:
            best = None
        # Unredacted, the body's hash as sent is its blob id: no second pass over it.
        known = ex.request_sha256 if not ex.redactions else None
        blob_id = self._put_blob(body, best, chain, known)
        depth = best[2] + 1 if best else 0
        recent.append((blob_id, body, depth))
        del recent[:-_RECENT_PER_CHAIN]
        return blob_id

    def _recent_bodies(self, chain: str) -> list[tuple[str, bytes, int]]:
        recent = self._recent.get(chain)
        if recent is None:
            rows = self.conn.execute(
                "SELECT id, depth FROM blobs WHERE chain = ? ORDER BY rowid DESC LIMIT ?",
                (chain, _RECENT_PER_CHAIN),
            ).fetchall()
            recent = [(bid, self.read_blob(bid), depth) for bid, depth in reversed(rows)]
            self._recent[chain] = recent
            while len(self._recent) > _CHAINS_KEPT:
                self._recent.popitem(last=False)
        self._recent.move_to_end(chain)
        return recent

    def _put_blob(
        self,
        data: bytes,
        dictionary: tuple[str, bytes, int] | None,
        chain: str | None = None,
        sha256: str | None = None,
    ) -> str:
        blob_id = sha256 or hashlib.sha256(data).hexdigest()
        if self.conn.execute("SELECT 1 FROM blobs WHERE id = ?", (blob_id,)).fetchone():
            return blob_id  # content-addressed: a resent body is stored once
        codec, payload = compress(data, dictionary[1] if dictionary else None)
        dict_id = dictionary[0] if dictionary and codec == "zstd-dict" else None
        depth = dictionary[2] + 1 if dict_id and dictionary else 0
        self.conn.execute(
            "INSERT INTO blobs (id, size, codec, dict_id, depth, chain, data) VALUES (?,?,?,?,?,?,?)",
            (blob_id, len(data), codec, dict_id, depth, chain, payload),
        )
        return blob_id

    def interrupt_stale(self, recorder: str, live_run: str) -> int:
        """Exchanges this journal began in a run that is gone can never end: say so."""
        return self.conn.execute(
            "UPDATE exchanges SET outcome = 'interrupted',"
            " error = coalesce(error, 'tapewire stopped before the exchange ended')"
            " WHERE outcome = 'in_flight' AND recorder = ? AND run != ?",
            (recorder, live_run),
        ).rowcount

    # ---- reading -------------------------------------------------------------------------

    def read_blob(self, blob_id: str) -> bytes:
        cached = self._read_cache.get(blob_id)
        if cached is not None:
            self._read_cache.move_to_end(blob_id)
            return cached
        row = self.conn.execute(
            "SELECT codec, data, size, dict_id FROM blobs WHERE id = ?", (blob_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"blob {blob_id} is missing")
        codec, payload, size, dict_id = row
        dictionary = self.read_blob(dict_id) if dict_id else None
        data = decompress(codec, payload, size, dictionary)
        self._read_cache[blob_id] = data
        while len(self._read_cache) > _READ_CACHE:
            self._read_cache.popitem(last=False)
        return data

    _COLUMNS = (
        "id, started_at, method, path, upstream, upstream_url, provider, status, outcome, error,"
        " session, claude_session, claude_agent, codex_session, codex_thread, request_headers,"
        " response_headers, request_size, response_size, request_truncated, response_truncated,"
        " redactions + response_redactions, request_end_at, upstream_headers_at, first_byte_at,"
        " last_byte_at,"
        " request_blob, response_blob, request_sha256, request_encoding, response_encoding"
    )

    def _row(self, r: tuple[Any, ...], with_bodies: bool) -> ExchangeRow:
        evidence_names = (
            "session",
            "claude_session",
            "claude_agent",
            "codex_session",
            "codex_thread",
        )
        row = ExchangeRow(
            id=r[0],
            started_at=r[1],
            method=r[2],
            path=r[3],
            upstream=r[4],
            upstream_url=r[5],
            provider=r[6],
            status=r[7],
            outcome=r[8],
            error=r[9],
            session=r[10],
            evidence={k: v for k, v in zip(evidence_names, r[10:15], strict=True) if v},
            request_headers=[(k, v) for k, v in orjson.loads(r[15])],
            response_headers=[(k, v) for k, v in orjson.loads(r[16] or "[]")],
            request_size=r[17],
            response_size=r[18],
            request_truncated=bool(r[19]),
            response_truncated=bool(r[20]),
            redactions=r[21],
            timings={
                "started": r[1],
                "request_end": r[22],
                "upstream_headers": r[23],
                "first_byte": r[24],
                "last_byte": r[25],
            },
            request_sha256=r[28],
            request_encoding=r[29],
            response_encoding=r[30],
        )
        if with_bodies:
            row.request_body = self.read_blob(r[26]) if r[26] else b""
            row.response_body = self.read_blob(r[27]) if r[27] else b""
        return row

    def exchanges(self, limit: int = 50, with_bodies: bool = False) -> list[ExchangeRow]:
        rows = self.conn.execute(
            f"SELECT {self._COLUMNS} FROM exchanges ORDER BY started_at DESC, id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [self._row(r, with_bodies) for r in rows]

    def exchange(self, exchange_id: str) -> ExchangeRow | None:
        r = self.conn.execute(
            f"SELECT {self._COLUMNS} FROM exchanges WHERE id = ?", (exchange_id,)
        ).fetchone()
        return self._row(r, True) if r else None

    def counts(self) -> dict[str, Any]:
        c = self.conn
        outcomes = dict(
            c.execute("SELECT outcome, count(*) FROM exchanges GROUP BY outcome").fetchall()
        )
        drops = {
            reason: {"count": count, "last_at": last_at}
            for reason, count, last_at in c.execute("SELECT reason, count, last_at FROM drops")
        }
        blob_bytes = c.execute(
            "SELECT coalesce(sum(size), 0), coalesce(sum(length(data)), 0) FROM blobs"
        ).fetchone()
        return {
            "exchanges": sum(outcomes.values()),
            "outcomes": outcomes,
            "drops": drops,
            "body_bytes": blob_bytes[0],
            "body_bytes_stored": blob_bytes[1],
        }

    def run_context(self, session: str) -> dict[str, Any] | None:
        r = self.conn.execute(
            "SELECT context FROM run_contexts WHERE session = ?", (session,)
        ).fetchone()
        return json.loads(r[0]) if r else None

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def close(self) -> None:
        if self.conn.execute("PRAGMA query_only").fetchone()[0]:
            self.conn.close()
            return
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()
