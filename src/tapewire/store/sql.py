"""What the SQL backends share: the tables, the writes and the reads, in SQL both SQLite and
PostgreSQL run. A backend (`sqlite.py`, `postgres.py`) brings its connection, its dialect's few
differences (the hooks at the top of `SQLStore`) and its full-text search."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import orjson
import zstandard

from tapewire.model import ChunkMap, Exchange, ExchangeEnd, Frame, Headers, Outcome, header_value
from tapewire.store import Batch, ExchangeRow
from tapewire.store.blobs import MAX_DEPTH, compress, decompress, shared_prefix
from tapewire.store.derived import Derived
from tapewire.store.migrations import DERIVED_TABLES
from tapewire.store.retention import Retention
from tapewire.store.transfer import Transfer

# When an exchange ended: derivation takes exchanges in this order.
_ENDED = "coalesce(e.last_byte_at, e.upstream_headers_at, e.started_at)"
_RECENT_PER_CHAIN = 4
_CHAINS_KEPT = 32
_READ_CACHE = 64
# Severities as analysis names them (analysis/findings.py), stored as their rank.
SEVERITY_NAMES = ("info", "warning", "error")
SEVERITY_RANK = {name: i for i, name in enumerate(SEVERITY_NAMES)}


# Sets, never adds: a batch replayed after a crash writes the same row again.
_END_SQL = (
    "UPDATE exchanges SET status=?, response_headers=?, response_blob=?, response_encoding=?,"
    " response_size=?, response_truncated=?, response_sha256=?, upstream_headers_at=?,"
    " first_byte_at=?, last_byte_at=?, outcome=?, error=?, response_redactions=?,"
    " response_chunks=?, ws_frames=? WHERE id = ?"
)


def _headers_json(headers: Headers) -> str:
    return orjson.dumps(headers).decode()


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


_PACK_OVER = 512  # bytes of JSON worth compressing one node's content
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # JSON never starts with it


def _pack(content: Any) -> bytes:
    raw = orjson.dumps(content)
    if len(raw) <= _PACK_OVER:
        return raw
    packed = zstandard.ZstdCompressor(level=6).compress(raw)
    return packed if len(packed) < len(raw) else raw


def unpack(data: bytes | str, unzstd: zstandard.ZstdDecompressor | None = None) -> Any:
    """A node's content. Pass a decompressor to reuse: making one costs more than using it."""
    if isinstance(data, bytes) and data.startswith(_ZSTD_MAGIC):
        data = (unzstd or zstandard.ZstdDecompressor()).decompress(data)
    return orjson.loads(data)


def _pack_chunks(chunks: ChunkMap | None, zstd: zstandard.ZstdCompressor) -> str | bytes | None:
    """A response's chunk map for its column: JSON text, readable by any SQLite tool, unless
    over 512 bytes (some 45 reads), when zstd takes it to about half: the column sits in
    the exchanges row itself, which every listing reads."""
    if chunks is None:
        return None
    raw = orjson.dumps({"sizes": chunks.sizes, "ms": chunks.ms})
    if len(raw) > _PACK_OVER:
        packed = zstd.compress(raw)
        if len(packed) < len(raw):
            return packed
    return raw.decode()


def _pack_frames(frames: list[Frame] | None, zstd: zstandard.ZstdCompressor) -> str | bytes | None:
    """A WebSocket exchange's frames for their column, packed like a chunk map."""
    if frames is None:
        return None
    raw = orjson.dumps([f.as_json() for f in frames])
    if len(raw) > _PACK_OVER:
        packed = zstd.compress(raw)
        if len(packed) < len(raw):
            return packed
    return raw.decode()


def _unpack_frames(
    data: str | bytes | None, unzstd: zstandard.ZstdDecompressor
) -> list[Frame] | None:
    return None if data is None else [Frame.from_json(e) for e in unpack(data, unzstd)]


def _unpack_chunks(
    data: str | bytes | None, unzstd: zstandard.ZstdDecompressor
) -> list[tuple[int, float]] | None:
    if data is None:
        return None
    value = unpack(data, unzstd)
    return list(zip(value["sizes"], value["ms"], strict=True))


def _encoding(headers: Headers) -> str | None:
    value = header_value(headers, "content-encoding")
    return value.strip().lower() if value else None


# What an imported agent transcript says beyond the conversation (docs/import.md): cwd, git
# branch, harness version, local commands, subagent links. Keyed by the harness's own session
# id, so that it attaches to a wire capture of the same session. Written by `tapewire import`,
# not derived: `tapewire rederive` keeps it.
_TRANSCRIPT_FACTS = """
CREATE TABLE IF NOT EXISTS transcript_facts (
    session TEXT PRIMARY KEY,     -- the harness's session id
    harness TEXT NOT NULL,        -- claude-code | codex
    facts TEXT NOT NULL,          -- JSON object
    source_file TEXT NOT NULL,    -- the main transcript file it was read from
    imported_at {real} NOT NULL   -- the first import
)
"""


_TURN_COLUMNS = (
    "exchange", "session", "thread", "kind", "api", "model", "response_model", "response_id",
    "started_at", "duration_ms", "ttfb_ms", "status", "outcome", "stop_reason", "error",
    "request_node", "response_node", "response_nodes", "input_nodes", "tools_doc", "params",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "cache_write_1h_tokens", "reasoning_tokens", "cost_usd", "stream",
)  # fmt: skip
# Derived again (a rederive, a retried batch): the turn is rewritten whole.
_TURN_SQL = (
    f"INSERT INTO turns ({', '.join(_TURN_COLUMNS)}) VALUES ({', '.join('?' * len(_TURN_COLUMNS))})"
    " ON CONFLICT(exchange) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _TURN_COLUMNS[1:])
)


def _int(value: Any) -> int:
    """A sum as an int: PostgreSQL sums integers as numeric (Decimal), SQLite as int."""
    return int(value or 0)


class SQLStore(Retention, Transfer):
    """The store over a DB-API-like connection (`execute(sql, args)` giving a cursor, with
    `?` placeholders). Subclasses set the dialect and bring full-text search."""

    BEGIN = "BEGIN IMMEDIATE"  # a write transaction, its locks taken up front
    LEAST, GREATEST = "min", "max"  # the scalar forms
    BYTES = "length"  # a binary column's length in bytes
    REAL = "REAL"  # a float of 8 bytes
    MIGRATIONS: list[tuple[str, str]]  # the backend's schema history
    TRANSIENT: tuple[type[Exception], ...]  # see Store.TRANSIENT
    SEARCH_OPERATORS = frozenset({"AND", "OR", "NOT", "NEAR"})  # FTS5's

    conn: Any

    def __init__(self) -> None:
        self._recent: OrderedDict[str, list[tuple[str, bytes, int]]] = OrderedDict()
        self._read_cache: OrderedDict[str, bytes] = OrderedDict()
        self._unzstd = zstandard.ZstdDecompressor()  # a store serves one thread
        self._zstd = zstandard.ZstdCompressor(level=6)
        self._columns: str | None = None
        self._in_batch = False
        self._tables: set[str] = set()

    # ---- the dialect -----------------------------------------------------------------------

    def _json(self, column: str, key: str, text: bool = False) -> str:
        """SQL for a key of a JSON text column: its value, or (text) its value as text."""
        raise NotImplementedError

    def _string_agg(self, expr: str) -> str:
        raise NotImplementedError

    def _table_exists(self, table: str) -> bool:
        raise NotImplementedError

    def _column_names(self, table: str) -> set[str]:
        raise NotImplementedError

    def _binary(self, value: str | bytes | None) -> str | bytes | None:
        """A value for a binary column that may hold text (a short chunk map)."""
        return value

    def _add_search_row(
        self, node: str, kind: str, call_id: str | None, ordinal: int, text: str
    ) -> None:
        raise NotImplementedError

    def _clear_search(self) -> None:
        """Empty the full-text index beyond search_rows, if the backend keeps one."""

    def _forget_search(self, rows: list[tuple[int, str]]) -> None:
        """Forget these (search row, its text) in the full-text index beyond search_rows."""

    def reclaim(self) -> None:
        """Give the space of deleted rows back (to the file system, or for reuse)."""
        raise NotImplementedError

    def migration_state(self) -> tuple[list[tuple[str, float]], list[str]]:
        """(applied migrations with when, pending ones), without changing anything."""
        done = (
            [(r[0], r[1]) for r in self.conn.execute("SELECT name, applied_at FROM _migrations")]
            if self._table_exists("_migrations")
            else []
        )
        names = {name for name, _ in done}
        return done, [name for name, _ in self.MIGRATIONS if name not in names]

    def size_bytes(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # ---- writing -------------------------------------------------------------------------

    def write(self, batch: Batch) -> None:
        c = self.conn
        c.execute(self.BEGIN)
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
                    " SET count = drops.count + excluded.count, last_at = excluded.last_at",
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
            self._binary(_pack_chunks(end.response_chunks, self._zstd)),
            self._binary(_pack_frames(end.frames, self._zstd)),
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
        self._cache(blob_id, data)  # derivation reads it back right after ingest
        if (
            dictionary
            and not self.conn.execute(
                "SELECT 1 FROM blobs WHERE id = ?", (dictionary[0],)
            ).fetchone()
        ):
            dictionary = None  # deleted (tapewire delete, prune) since it was cached
        codec, payload = compress(data, dictionary[1] if dictionary else None)
        dict_id = dictionary[0] if dictionary and codec == "zstd-dict" else None
        depth = dictionary[2] + 1 if dict_id and dictionary else 0
        # Another proxy's ingester may store the same body between the check and here.
        self.conn.execute(
            "INSERT INTO blobs (id, size, codec, dict_id, depth, chain, data) VALUES (?,?,?,?,?,?,?)"
            " ON CONFLICT (id) DO NOTHING",
            (blob_id, len(data), codec, dict_id, depth, chain, payload),
        )
        return blob_id

    def interrupt_stale(self, recorder: str, live_run: str) -> int:
        """Exchanges this journal began in a run that is gone can never end: say so."""
        return int(
            self.conn.execute(
                "UPDATE exchanges SET outcome = 'interrupted',"
                " error = coalesce(error, 'tapewire stopped before the exchange ended')"
                " WHERE outcome = 'in_flight' AND recorder = ? AND run != ?",
                (recorder, live_run),
            ).rowcount
        )

    # ---- the derived layer -----------------------------------------------------------------

    @contextlib.contextmanager
    def derived_batch(self) -> Iterator[None]:
        """One transaction for many write_derived calls, each its own savepoint: what one
        writes, the next reads (this connection sees its own writes), and one commit serves
        them all."""
        self.conn.execute(self.BEGIN)
        self._in_batch = True
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        finally:
            self._in_batch = False

    @contextlib.contextmanager
    def _atomic(self, name: str) -> Iterator[None]:
        """All or nothing: a transaction of its own, or inside a `derived_batch` a savepoint
        (one failing item must not undo the batch's others)."""
        c = self.conn
        begin, commit, rollback = (
            (f"SAVEPOINT {name}", f"RELEASE {name}", f"ROLLBACK TO {name}")
            if self._in_batch
            else (self.BEGIN, "COMMIT", "ROLLBACK")
        )
        c.execute(begin)
        try:
            yield
            c.execute(commit)
        except BaseException:
            c.execute(rollback)
            if self._in_batch:
                c.execute(commit)  # a savepoint rolled back to is still open
            raise

    def write_derived(self, items: list[Derived]) -> None:
        with self._atomic("derived"):
            for d in items:
                self._write_derived(d)

    def _write_derived(self, d: Derived) -> None:
        c = self.conn
        searchable: dict[str, list[tuple[str, str, str | None]]] = {}
        for node, kind, text, call_id in d.search:
            searchable.setdefault(node, []).append((kind, text, call_id))
        for n in d.nodes:
            inserted = c.execute(
                "INSERT INTO nodes VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING",
                (n.id, n.parent, n.role, _pack(n.content), n.depth, n.exchange),
            ).rowcount
            if inserted:  # content-addressed: a shared node is indexed once
                for ordinal, (kind, text, call_id) in enumerate(searchable.get(n.id, [])):
                    self._add_search_row(n.id, kind, call_id, ordinal, text)
        s = d.session
        c.execute(
            "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET"
            f" started_at = {self.LEAST}(sessions.started_at, excluded.started_at),"
            f" ended_at = {self.GREATEST}(sessions.ended_at, excluded.ended_at),"
            " harness = CASE WHEN sessions.harness = 'unknown' THEN excluded.harness"
            " ELSE sessions.harness END, harness_session_id ="
            " coalesce(sessions.harness_session_id, excluded.harness_session_id),"
            " name = coalesce(sessions.name, excluded.name),"
            " title = coalesce(sessions.title, excluded.title)",
            (s.id, s.key or "id:" + s.id, s.harness, s.harness_session_id, s.name, s.title,
             s.started_at, s.ended_at),
        )  # fmt: skip
        if d.thread is not None:
            t = d.thread
            c.execute(
                "INSERT INTO threads VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET"
                f" started_at = {self.LEAST}(threads.started_at, excluded.started_at),"
                " spawned_by = coalesce(threads.spawned_by, excluded.spawned_by)",
                (t.id, t.session, t.kind, t.agent, t.started_at, t.spawned_by),
            )
        r, u = d.turn, d.turn.usage
        again = c.execute("SELECT 1 FROM turns WHERE exchange = ?", (r.exchange,)).fetchone()
        c.executemany(
            "INSERT INTO node_turns VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(node, r.exchange) for node in {*r.input_nodes, *r.response_nodes}],
        )
        for node in {*r.response_nodes, *([r.request_node] if r.request_node else [])}:
            c.execute(
                "INSERT INTO tips VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                (node, r.thread or "", r.session, r.exchange),
            )
        c.execute(
            _TURN_SQL,
            (r.exchange, r.session, r.thread, r.kind, r.api, r.model, r.response_model,
             r.response_id, r.started_at, r.duration_ms, r.ttfb_ms, r.status, r.outcome,
             r.stop_reason, r.error, r.request_node,
             r.response_nodes[0] if r.response_nodes else None, _dumps(r.response_nodes),
             _dumps(r.input_nodes), r.tools_doc, _dumps(r.params), u.input_tokens,
             u.output_tokens, u.cache_read_tokens, u.cache_write_tokens,
             u.cache_write_1h_tokens, u.reasoning_tokens, r.cost_usd, int(r.stream)),
        )  # fmt: skip
        for call in d.tool_calls:
            c.execute(
                "INSERT INTO tool_calls (session, thread, call_id, name, arguments, call_exchange,"
                " call_node, asked_at) VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT(call_exchange, call_id) DO UPDATE SET name = excluded.name,"
                " arguments = excluded.arguments, asked_at = excluded.asked_at",
                (call.session, call.thread, call.call_id, call.name, _dumps(call.arguments),
                 call.call_exchange, call.call_node, call.asked_at),
            )  # fmt: skip
        for res in [] if again else d.tool_results:  # derived again: linked the first time
            # The latest call of that id in the thread that nothing has answered yet.
            c.execute(
                "UPDATE tool_calls SET is_error = ?, result_exchange = ?,"
                " result_node = ?, answered_at = ? WHERE rowid = (SELECT rowid FROM tool_calls"
                " WHERE session = ? AND call_id = ? AND result_exchange IS NULL"
                " AND thread IS NOT DISTINCT FROM ?"
                " ORDER BY asked_at DESC LIMIT 1)",
                (None if res.is_error is None else int(res.is_error),
                 res.result_exchange, res.result_node, res.answered_at, res.session,
                 res.call_id, res.thread),
            )  # fmt: skip

    def clear_derived(self) -> None:
        c = self.conn
        c.execute(self.BEGIN)
        try:
            for table in DERIVED_TABLES:
                c.execute(f"DELETE FROM {table}")
            self._clear_search()
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def _has(self, table: str) -> bool:
        """Whether the schema has this table yet: a read-only store does not migrate, and may
        read a database written by an older tapewire until a writer opens it."""
        if table not in self._tables and self._table_exists(table):
            self._tables.add(table)
        return table in self._tables

    def replace_findings(self, session: str, rows: list[dict[str, Any]]) -> None:
        """A session's findings, all of them at once (the analysis of its whole record)."""
        with self._atomic("findings"):
            self.conn.execute("DELETE FROM findings WHERE session = ?", (session,))
            # Upserted: another proxy's ingester may store the same session's findings at once.
            self.conn.executemany(
                "INSERT INTO findings (session, id, kind, severity, title, turns, evidence)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(session, id) DO UPDATE SET"
                " kind = excluded.kind, severity = excluded.severity, title = excluded.title,"
                " turns = excluded.turns, evidence = excluded.evidence",
                [(session, r["id"], r["kind"], SEVERITY_RANK[r["severity"]], r["title"],
                  _dumps(r["turns"]), _dumps(r["evidence"])) for r in rows],
            )  # fmt: skip

    def finding_rows(
        self, sessions: list[str] | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        """Stored findings, of these sessions or of those active since `since`."""
        if not self._has("findings"):
            return []
        sql = ("SELECT f.session, f.id, f.kind, f.severity, f.title, f.turns, f.evidence"
               " FROM findings f")  # fmt: skip
        where: list[str] = []
        args: list[Any] = []
        if sessions is not None:
            where.append(f"f.session IN ({','.join('?' * len(sessions))})")
            args.extend(sessions)
        if since is not None:
            where.append("f.session IN (SELECT id FROM sessions WHERE ended_at >= ?)")
            args.append(since)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [
            {"id": r[1], "session": r[0], "kind": r[2], "severity": SEVERITY_NAMES[r[3]],
             "title": r[4], "turns": orjson.loads(r[5]), "evidence": orjson.loads(r[6])}
            for r in self.conn.execute(sql + " ORDER BY f.session, f.severity DESC, f.id", args)
        ]  # fmt: skip

    def derive_order(self) -> list[str]:
        """Ended exchanges in the order they ended: the order derivation saw them in."""
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT e.id FROM exchanges e WHERE e.outcome != 'in_flight'"
                f" ORDER BY {_ENDED}, e.id"
            )
        ]

    def derived_out_of_order(self, session: str, exchange: str) -> bool:
        """Whether the session holds a turn that began after this exchange, ended after it and
        was recorded by another proxy: that proxy's ingester derived it first. (One proxy's
        journal is its own order, so one proxy's turns never are.) Those that began after it
        only, so that the lookup stays a short range of the index however long the session."""
        return bool(
            self.conn.execute(
                "SELECT 1 FROM exchanges x JOIN turns t ON t.session = ?"
                " AND t.started_at >= x.started_at JOIN exchanges e ON e.id = t.exchange"
                " WHERE x.id = ? AND e.recorder != x.recorder"
                f" AND ({_ENDED}, e.id) > ({_ENDED.replace('e.', 'x.')}, x.id) LIMIT 1",
                (session, exchange),
            ).fetchone()
        )

    def underive_session(self, session: str) -> list[str]:
        """Drop a session's derived rows (its nodes and their search rows stay: content
        addressing shares them) and return its exchanges in the order they ended, for deriving
        again. Inside a `derived_batch`, all or nothing with it."""
        c = self.conn
        ids = [
            r[0]
            for r in c.execute(
                "SELECT e.id FROM turns t JOIN exchanges e ON e.id = t.exchange"
                f" WHERE t.session = ? ORDER BY {_ENDED}, e.id",
                (session,),
            )
        ]
        with self._atomic("underive"):
            self._delete_in("node_turns", "exchange", ids)
            for table, column in (("tips", "session"), ("tool_calls", "session"),
                                  ("threads", "session"), ("turns", "session"),
                                  ("findings", "session"), ("sessions", "id")):  # fmt: skip
                c.execute(f"DELETE FROM {table} WHERE {column} = ?", (session,))
        return ids

    def underived(self) -> list[tuple[str, str, str]]:
        """(id, method, path) of ended exchanges with no turn, in the order they ended: those
        stored before derivation existed, or ended by `interrupt_stale` rather than a record."""
        return [
            (r[0], r[1], r[2])
            for r in self.conn.execute(
                "SELECT e.id, e.method, e.path FROM exchanges e LEFT JOIN turns t"
                " ON t.exchange = e.id WHERE t.exchange IS NULL AND e.outcome != 'in_flight'"
                f" ORDER BY {_ENDED}, e.id"
            )
        ]

    def response_owner(self, response_id: str) -> tuple[str, str | None, str | None] | None:
        r = self.conn.execute(
            "SELECT session, thread, response_node FROM turns WHERE response_id = ?"
            " ORDER BY started_at DESC LIMIT 1",
            (response_id,),
        ).fetchone()
        return (r[0], r[1], r[2]) if r else None

    def node_depth(self, node: str) -> int:
        r = self.conn.execute("SELECT depth FROM nodes WHERE id = ?", (node,)).fetchone()
        return int(r[0]) if r else 0

    def chain_owner(self, nodes: list[str]) -> tuple[str, str | None] | None:
        """The session and thread of the turn that holds the first of `nodes` (deepest first)
        as its request's last node or its response, conversation turns before side calls."""
        position = {n: i for i, n in enumerate(nodes)}
        best: tuple[int, bool, str, str] | None = None
        for node, thread, session in self._tips(nodes, "SELECT node, thread, session FROM tips"):
            candidate = (position[node], thread == "", session, thread)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
        return (best[2], best[3] or None) if best else None

    def _tips(
        self, nodes: list[str], select: str, where: str = "", args: tuple[Any, ...] = ()
    ) -> list[Any]:
        rows: list[Any] = []
        for i in range(0, len(nodes), 400):
            part = nodes[i : i + 400]
            rows += self.conn.execute(
                f"{select} WHERE node IN ({','.join('?' * len(part))}){where}", (*part, *args)
            ).fetchall()
        return rows

    def node_chain(self, node: str) -> list[str]:
        """Node ids from the root down to `node`."""
        rows = self.conn.execute(
            "WITH RECURSIVE up(id, parent, depth) AS (SELECT id, parent, depth FROM nodes"
            " WHERE id = ? UNION ALL SELECT n.id, n.parent, n.depth FROM nodes n"
            " JOIN up ON n.id = up.parent) SELECT id FROM up ORDER BY depth",
            (node,),
        ).fetchall()
        return [r[0] for r in rows]

    def known_depth(self, thread: str, chain: list[str], exchange: str) -> int:
        """The index in `chain` of the deepest node another turn of `thread` sent as its
        request's last message or received as its response; -1 when none did."""
        rows = self._tips(chain, "SELECT node FROM tips", " AND thread = ? AND exchange != ?",
                          (thread, exchange))  # fmt: skip
        known = {r[0] for r in rows}
        return max((i for i, n in enumerate(chain) if n in known), default=-1)

    def spawning_call(self, session: str, texts: list[str]) -> str | None:
        """The open tool call whose arguments hold a subagent's opening prompt."""
        wanted = {t.strip() for t in texts if t.strip()}
        for call_id, arguments in self.conn.execute(
            "SELECT call_id, arguments FROM tool_calls WHERE session = ? AND result_exchange IS NULL"
            " ORDER BY asked_at DESC LIMIT 50",
            (session,),
        ):
            args = orjson.loads(arguments) if arguments else None
            if isinstance(args, dict) and any(
                isinstance(v, str) and v.strip() in wanted for v in args.values()
            ):
                return str(call_id)
        return None

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
        self._cache(blob_id, data)
        return data

    def _cache(self, blob_id: str, data: bytes) -> None:
        self._read_cache[blob_id] = data
        self._read_cache.move_to_end(blob_id)
        while len(self._read_cache) > _READ_CACHE:
            self._read_cache.popitem(last=False)

    _COLUMNS = (
        "id, started_at, method, path, upstream, upstream_url, provider, status, outcome, error,"
        " session, claude_session, claude_agent, codex_session, codex_thread, request_headers,"
        " response_headers, request_size, response_size, request_truncated, response_truncated,"
        " redactions + response_redactions, request_end_at, upstream_headers_at, first_byte_at,"
        " last_byte_at,"
        " request_blob, response_blob, request_sha256, request_encoding, response_encoding,"
        " response_chunks, ws_frames"
    )

    def _exchange_columns(self) -> str:
        """A read-only store does not migrate: one written before 0004 has no chunk maps, one
        before 0006 no frames."""
        if self._columns is None:
            names = self._column_names("exchanges")
            columns = self._COLUMNS
            for name in ("response_chunks", "ws_frames"):  # 0004, 0006
                if name not in names:
                    columns = columns.replace(name, "NULL")
            self._columns = columns
        return self._columns

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
            response_chunks=_unpack_chunks(r[31], self._unzstd),
            ws_frames=_unpack_frames(r[32], self._unzstd),
        )
        if with_bodies:
            row.request_body = self.read_blob(r[26]) if r[26] else b""
            row.response_body = self.read_blob(r[27]) if r[27] else b""
        return row

    def exchanges(self, limit: int = 50, with_bodies: bool = False) -> list[ExchangeRow]:
        rows = self.conn.execute(
            f"SELECT {self._exchange_columns()} FROM exchanges ORDER BY started_at DESC, id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [self._row(r, with_bodies) for r in rows]

    def exchange(self, exchange_id: str) -> ExchangeRow | None:
        r = self.conn.execute(
            f"SELECT {self._exchange_columns()} FROM exchanges WHERE id = ?", (exchange_id,)
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
            f"SELECT coalesce(sum(size), 0), coalesce(sum({self.BYTES}(data)), 0) FROM blobs"
        ).fetchone()
        derived = c.execute(
            "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM turns),"
            " (SELECT count(*) FROM nodes)"
        ).fetchone()
        return {
            "sessions": derived[0],
            "turns": derived[1],
            "nodes": derived[2],
            "exchanges": sum(outcomes.values()),
            "outcomes": outcomes,
            "drops": drops,
            "body_bytes": _int(blob_bytes[0]),
            "body_bytes_stored": _int(blob_bytes[1]),
        }

    # ---- reading the derived layer -------------------------------------------------------

    def session_rows(
        self,
        *,
        ids: list[str] | None = None,
        since: float | None = None,
        harness: str | None = None,
        model: str | None = None,
        cwd: str | None = None,
        before: tuple[float, str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Sessions newest first (then by id), with their totals. `before`: the (started_at,
        id) of the last session of the previous page."""
        where: list[str] = []
        args: list[Any] = []
        if ids is not None:
            where.append(f"s.id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        if since is not None:
            where.append("s.ended_at >= ?")
            args.append(since)
        if harness:
            where.append("s.harness = ?")
            args.append(harness)
        if model:
            where.append("EXISTS (SELECT 1 FROM turns m WHERE m.session = s.id AND"
                         " (m.model = ? OR m.response_model = ?))")  # fmt: skip
            args.extend([model, model])
        if cwd:  # known for runs `tapewire run` started, from their recorded context
            cwd_sql = self._json("context", "cwd", text=True)
            where.append(f"s.name IN (SELECT session FROM run_contexts WHERE {cwd_sql} = ?"
                         f" OR {cwd_sql} LIKE ? ESCAPE '\\')")  # fmt: skip
            root = cwd.rstrip("/")
            args.extend([root, _like_prefix(root + "/")])
        if before is not None:
            where.append("(s.started_at < ? OR (s.started_at = ? AND s.id > ?))")
            args.extend([before[0], before[0], before[1]])
        # The page first, then its totals: aggregating every session to show fifty is slow.
        page = (
            "SELECT * FROM sessions s"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY s.started_at DESC, s.id"
            + (" LIMIT ?" if limit else "")
        )
        if limit:
            args.append(limit)
        sql = (
            "SELECT s.id, s.harness, s.harness_session_id, s.name, s.title, s.started_at,"
            " s.ended_at, count(t.exchange), sum(t.input_tokens), sum(t.output_tokens),"
            " sum(t.cache_read_tokens), sum(t.cache_write_tokens), sum(t.reasoning_tokens),"
            " sum(t.cost_usd), count(t.cost_usd),"
            " sum(CASE WHEN t.cost_usd IS NULL AND t.input_tokens IS NOT NULL THEN 1 ELSE 0 END),"
            " sum(CASE WHEN t.error IS NOT NULL THEN 1 ELSE 0 END),"
            f" {self._string_agg('coalesce(t.response_model, t.model)')},"
            " (SELECT count(*) FROM threads h WHERE h.session = s.id),"
            " (SELECT count(*) FROM tool_calls c WHERE c.session = s.id),"
            " (SELECT count(*) FROM tool_calls c WHERE c.session = s.id AND c.is_error = 1),"
            + (
                " (SELECT count(*) FROM findings f WHERE f.session = s.id AND f.severity > 0),"
                " (SELECT max(severity) FROM findings f WHERE f.session = s.id)"
                if self._has("findings")
                else " 0, NULL"
            )
            + f" FROM ({page}) s LEFT JOIN turns t ON t.session = s.id"
            # Every column named: PostgreSQL infers none from a subquery's key.
            " GROUP BY s.id, s.harness, s.harness_session_id, s.name, s.title, s.started_at,"
            " s.ended_at ORDER BY s.started_at DESC, s.id"
        )
        out = []
        for r in self.conn.execute(sql, args):
            out.append({
                "id": r[0], "harness": r[1], "harness_session_id": r[2], "name": r[3],
                "title": r[4], "started_at": r[5], "ended_at": r[6], "turns": r[7],
                "threads": r[18], "tool_calls": r[19], "tool_errors": r[20], "errors": _int(r[16]),
                "input_tokens": _int(r[8]), "output_tokens": _int(r[9]),
                "cache_read_tokens": _int(r[10]), "cache_write_tokens": _int(r[11]),
                "reasoning_tokens": _int(r[12]),
                # Unknown beats wrong: one priced-unknown turn makes the total unknown.
                "cost_usd": round(r[13], 9) if r[14] and not r[15] else None,
                "models": sorted(m for m in (r[17] or "").split(",") if m),
                "findings": r[21],
                "worst": None if r[22] is None else SEVERITY_NAMES[r[22]],
            })  # fmt: skip
        return out

    def find_sessions(self, ref: str) -> list[str]:
        """Sessions named exactly (id, /s/ name, the harness's session id), else by a prefix of
        their id or of the harness's session id."""
        exact = self.conn.execute(
            "SELECT id FROM sessions WHERE id = ? OR name = ? OR harness_session_id = ?",
            (ref, ref, ref),
        ).fetchall()
        if exact:
            return sorted({r[0] for r in exact})
        like = _like_prefix(ref)
        rows = self.conn.execute(
            "SELECT id FROM sessions WHERE id LIKE ? ESCAPE '\\'"
            " OR harness_session_id LIKE ? ESCAPE '\\'",
            (like, like),
        ).fetchall()
        return sorted({r[0] for r in rows})

    def turn_rows(self, session: str) -> list[dict[str, Any]]:
        cols = (
            "exchange, session, thread, kind, api, model, response_model, response_id,"
            " started_at, duration_ms, ttfb_ms, status, outcome, stop_reason, error,"
            " request_node, response_nodes, input_nodes, tools_doc, params, input_tokens,"
            " output_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens,"
            " reasoning_tokens, cost_usd, stream"
        )
        names = [c.strip() for c in cols.split(",")]
        out = []
        for r in self.conn.execute(
            f"SELECT {cols} FROM turns WHERE session = ? ORDER BY started_at, exchange", (session,)
        ):
            row = dict(zip(names, r, strict=True))
            for key in ("response_nodes", "input_nodes", "params"):
                row[key] = orjson.loads(row[key])
            row["stream"] = bool(row["stream"])
            out.append(row)
        return out

    def thread_rows(self, session: str) -> list[dict[str, Any]]:
        names = ("id", "kind", "agent", "started_at", "spawned_by")
        return [
            dict(zip(names, r, strict=True))
            for r in self.conn.execute(
                "SELECT id, kind, agent, started_at, spawned_by FROM threads WHERE session = ?"
                " ORDER BY started_at, id",
                (session,),
            )
        ]

    def node_rows(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for nid, parent, role, content, depth in self.conn.execute(
                f"SELECT id, parent, role, content, depth FROM nodes"
                f" WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                out[nid] = {"id": nid, "parent": parent, "role": role,
                            "content": unpack(content, self._unzstd), "depth": depth}  # fmt: skip
        return out

    def tool_call_rows(self, session: str) -> list[dict[str, Any]]:
        names = ("id", "thread", "name", "arguments", "call_exchange", "asked_at", "result_node",
                 "is_error", "result_exchange", "answered_at")  # fmt: skip
        out = []
        for r in self.conn.execute(
            "SELECT call_id, thread, name, arguments, call_exchange, asked_at, result_node, is_error,"
            " result_exchange, answered_at FROM tool_calls WHERE session = ?"
            " ORDER BY asked_at, call_exchange, rowid",
            (session,),
        ):
            row = dict(zip(names, r, strict=True))
            row["arguments"] = orjson.loads(row["arguments"]) if row["arguments"] else None
            row["is_error"] = None if row["is_error"] is None else bool(row["is_error"])
            out.append(row)
        return out

    @staticmethod
    def _search_filters(
        session: str | None,
        model: str | None,
        tool: str | None,
        role: str | None,
        since: float | None,
    ) -> tuple[list[str], list[Any]]:
        """The WHERE terms (over search_rows r, nodes n, turns t) and their arguments that
        narrow a full-text search, whichever backend matches the text."""
        where: list[str] = []
        args: list[Any] = []
        if session:
            where.append("t.session = ?")
            args.append(session)
        if model:
            where.append("(t.model = ? OR t.response_model = ?)")
            args.extend([model, model])
        if role:
            where.append("n.role = ?")
            args.append(role)
        if since is not None:
            where.append("t.started_at >= ?")
            args.append(since)
        if tool:
            where.append("EXISTS (SELECT 1 FROM tool_calls c WHERE c.session = t.session"
                         " AND c.call_id = r.call AND c.name = ?)")  # fmt: skip
            args.append(tool)
        return where, args

    @staticmethod
    def _hits(rows: list[Any]) -> list[dict[str, Any]]:
        return [
            {"node": node, "kind": kind, "ordinal": ordinal, "role": node_role,
             "exchange_id": exchange, "session": sess, "started_at": started, "model": mdl,
             "rank": score}
            for node, kind, ordinal, node_role, exchange, sess, started, mdl, score in rows
        ]  # fmt: skip

    def turn_index(self, exchange: str) -> int | None:
        """1-based position of a turn in its session's time order."""
        r = self.conn.execute(
            "SELECT (SELECT count(*) FROM turns u WHERE u.session = t.session AND"
            " (u.started_at < t.started_at OR (u.started_at = t.started_at AND"
            " u.exchange <= t.exchange))) FROM turns t WHERE t.exchange = ?",
            (exchange,),
        ).fetchone()
        return int(r[0]) if r else None

    def main_models(self) -> dict[str, str]:
        """Per session, the model most of its main-thread turns went to."""
        best: dict[str, tuple[int, str]] = {}
        for session, model, n in self.conn.execute(
            "SELECT session, coalesce(response_model, model), count(*) FROM turns"
            " WHERE kind = 'main' GROUP BY 1, 2"
        ):
            if model and (session not in best or (n, model) > best[session]):
                best[session] = (n, model)
        return {session: model for session, (_, model) in best.items()}

    def tool_stats(self, session: str | None = None) -> list[dict[str, Any]]:
        """Per tool name: calls, errors, and the latencies (ms) of the answered ones, sorted."""
        where = " WHERE session = ?" if session else ""
        stats: dict[str, dict[str, Any]] = {}
        for name, is_error, asked, answered in self.conn.execute(
            f"SELECT coalesce(name, ''), is_error, asked_at, answered_at FROM tool_calls{where}"
            " ORDER BY name",
            (session,) if session else (),
        ):
            entry = stats.setdefault(
                name, {"name": name, "calls": 0, "errors": 0, "latencies_ms": []}
            )
            entry["calls"] += 1
            entry["errors"] += is_error == 1
            if asked is not None and answered is not None:
                entry["latencies_ms"].append((answered - asked) * 1000)
        for entry in stats.values():
            entry["latencies_ms"].sort()
        return list(stats.values())

    def _stream(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """The rows of a query that may be large, without holding them all."""
        yield from self.conn.execute(sql)

    def blob_rows(self) -> Iterator[tuple[str, int]]:
        yield from self._stream("SELECT id, size FROM blobs")

    def iter_nodes(self) -> Iterator[tuple[str, str | None, str, Any, int]]:
        for nid, parent, role, content, depth in self._stream(
            "SELECT id, parent, role, content, depth FROM nodes"
        ):
            yield nid, parent, role, unpack(content, self._unzstd), depth

    def run_context(self, session: str) -> dict[str, Any] | None:
        r = self.conn.execute(
            "SELECT context FROM run_contexts WHERE session = ?", (session,)
        ).fetchone()
        return json.loads(r[0]) if r else None

    def fork_links(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Of the sessions named `names`, those `tapewire fork` made: {name: {forked_from,
        fork_turn, fork_node}}, from their run contexts."""
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(names), 500):
            chunk = names[i : i + 500]
            for name, parent, turn, node in self.conn.execute(
                f"SELECT session, {self._json('context', 'forked_from')},"
                f" {self._json('context', 'fork_turn')}, {self._json('context', 'fork_node')}"
                f" FROM run_contexts WHERE session IN ({','.join('?' * len(chunk))})"
                f" AND {self._json('context', 'forked_from')} IS NOT NULL",
                chunk,
            ):
                out[name] = {"forked_from": parent, "fork_turn": turn, "fork_node": node}
        return out

    def forks_of(self, session: str) -> list[dict[str, Any]]:
        """The sessions `tapewire fork` made from `session`, oldest first: id, name,
        fork_turn, fork_node, started_at."""
        names = ("id", "name", "fork_turn", "fork_node", "started_at")
        return [
            dict(zip(names, r, strict=True))
            for r in self.conn.execute(
                f"SELECT s.id, s.name, {self._json('r.context', 'fork_turn')},"
                f" {self._json('r.context', 'fork_node')}, s.started_at"
                " FROM run_contexts r JOIN sessions s ON s.name = r.session"
                f" WHERE {self._json('r.context', 'forked_from', text=True)} = ?"
                " ORDER BY s.started_at, s.id",
                (session,),
            )
        ]

    # ---- imported transcripts (importers/) ---------------------------------------------------

    def existing_exchanges(self, ids: list[str]) -> set[str]:
        """Of these exchange ids, those the store holds."""
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            found.update(
                r[0]
                for r in self.conn.execute(
                    f"SELECT id FROM exchanges WHERE id IN ({','.join('?' * len(chunk))})", chunk
                )
            )
        return found

    def wire_response_ids(self, session: str) -> set[str]:
        """The provider response ids of the session's turns that crossed the wire (not
        synthesized from a transcript)."""
        return {
            r[0]
            for r in self.conn.execute(
                "SELECT t.response_id FROM turns t JOIN exchanges e ON e.id = t.exchange"
                " WHERE t.session = ? AND t.response_id IS NOT NULL"
                " AND e.recorder NOT LIKE 'transcript:%'",
                (session,),
            )
        }

    def session_sources(self, ids: list[str]) -> dict[str, str]:
        """Where each session's turns come from: wire, transcript or wire+transcript."""
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for session, transcript, wire in self.conn.execute(
                "SELECT t.session, sum(CASE WHEN e.recorder LIKE 'transcript:%' THEN 1 ELSE 0 END),"
                " sum(CASE WHEN e.recorder LIKE 'transcript:%' THEN 0 ELSE 1 END) FROM turns t"
                f" JOIN exchanges e ON e.id = t.exchange WHERE t.session IN"
                f" ({','.join('?' * len(chunk))}) GROUP BY t.session",
                chunk,
            ):
                out[session] = (
                    "wire+transcript" if transcript and wire else "transcript" if transcript
                    else "wire"
                )  # fmt: skip
        return out

    def put_transcript_facts(
        self, session: str, harness: str, facts: dict[str, Any], source_file: str, at: float
    ) -> None:
        """Store (or replace) what a transcript said about a harness session; the first
        import's time stays. The table is made by the first import, not by a migration: a
        store that never imports stays as small as before."""
        self._ensure_transcript_facts()
        self.conn.execute(
            "INSERT INTO transcript_facts VALUES (?, ?, ?, ?, ?) ON CONFLICT(session) DO UPDATE"
            " SET harness = excluded.harness, facts = excluded.facts,"
            " source_file = excluded.source_file",
            (session, harness, json.dumps(facts, ensure_ascii=False, sort_keys=True),
             source_file, at),
        )  # fmt: skip

    def _ensure_transcript_facts(self) -> None:
        self.conn.execute(_TRANSCRIPT_FACTS.format(real=self.REAL))
        self._tables.add("transcript_facts")

    def transcript_facts(self, session: str) -> dict[str, Any] | None:
        """What an imported transcript said about this harness session id, or None."""
        if not self._has("transcript_facts"):
            return None
        r = self.conn.execute(
            "SELECT harness, facts, source_file, imported_at FROM transcript_facts"
            " WHERE session = ?",
            (session,),
        ).fetchone()
        if r is None:
            return None
        return {"harness": r[0], **json.loads(r[1]), "source_file": r[2], "imported_at": r[3]}
