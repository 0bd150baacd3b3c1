"""The PostgreSQL backend, for teams: many proxies, one database. psycopg 3 with a connection
pool per process; the schema migrated on open, as for SQLite; search by a `tsvector` column
with a GIN index. Everything else is `SQLStore`, the SQL both backends run."""

from __future__ import annotations

import atexit
import contextlib
import functools
import re
import threading
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from tapewire.store import location
from tapewire.store.location import DbRef
from tapewire.store.migrations import migrate
from tapewire.store.postgres_schema import MIGRATIONS
from tapewire.store.sql import SQLStore

# Texts past this many characters are indexed up to it: a tsvector holds at most 1 MB.
SEARCH_CHARS = 200_000
_MIGRATE_LOCK = 0x7461_7065_7769_7265 >> 1  # "tapewire": one migrator at a time per database
_CONNECT_TIMEOUT = 10  # seconds to wait for a connection: the server may be down

_pools: dict[tuple[str, bool], ConnectionPool] = {}
_pools_lock = threading.Lock()

# The words of a text as SQLite's FTS5 (unicode61) reads them: runs of letters and digits,
# lower-cased, Latin diacritics dropped. PostgreSQL's own parser would keep URLs, paths, hosts
# and dotted names whole (`/private/tmp/x.py`, `e.g`) and drop `https`: a word in them would
# not be found. Texts and queries are reduced to these words before PostgreSQL parses them.
_WORDS = re.compile(r"[^\W_]+")
_MARKS = re.compile("[\u0300-\u036f]")
# A query in web-search syntax: -"a phrase" (the closing quote optional), or a term.
_QUERY_PARTS = re.compile(r'(-?)"([^"]*)"?|(\S+)')


def _words(text: str) -> list[str]:
    if not text.isascii():
        text = unicodedata.normalize("NFC", _MARKS.sub("", unicodedata.normalize("NFD", text)))
    return _WORDS.findall(text)


def _index_text(text: str) -> str:
    return " ".join(_words(text))


def _web_query(query: str) -> str:
    """The query, in the same syntax (words, "a phrase", OR, -word), over the words the index
    holds: each term or phrase becomes a quoted phrase of its words (`tool_result` the phrase
    "tool result", as FTS5 reads it), so that nothing but OR and a leading - is an operator."""
    parts = []
    for m in _QUERY_PARTS.finditer(query):
        negate, text = m.group(1), m.group(2)
        if text is None:
            term = m.group(3)
            if term.upper() == "OR":  # as websearch_to_tsquery reads it
                parts.append(term)
                continue
            negate, text = ("-", term[1:]) if term.startswith("-") else ("", term)
        words = _words(text)
        if words:
            parts.append(f'{negate}"{" ".join(words)}"')
    return " ".join(parts)


@functools.lru_cache(maxsize=512)
def _paramstyle(sql: str) -> str:
    """sqlite3's `?` placeholders as psycopg's `%s` (a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _no_nul(args: Sequence[Any]) -> Sequence[Any]:
    """PostgreSQL text cannot hold NUL (SQLite's can): U+FFFD stands in for it, in what is
    written and in what is looked up alike, so a session named with one is found by its name
    and a lookup by such a name is an answer, not an error."""
    if not any(isinstance(a, str) and "\x00" in a for a in args):
        return args
    return [a.replace("\x00", "\ufffd") if isinstance(a, str) else a for a in args]


class _Connection:
    """A psycopg connection with sqlite3's face: `execute(sql, args)` with `?` placeholders,
    returning a cursor with rowcount, fetchone, fetchall and iteration."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        if not args:
            return self.raw.execute(sql.encode())  # as bytes: nothing in it is a placeholder
        return self.raw.execute(_paramstyle(sql).encode(), _no_nul(args))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.raw.cursor().executemany(_paramstyle(sql).encode(), [_no_nul(r) for r in rows])


def _read_only(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")


def _pool(url: str, readonly: bool) -> ConnectionPool:
    """One pool per database (and mode) per process, shared by every store opened on it: the
    read side opens a store per reader thread and per export.

    A pool is made once a first connection has succeeded. A pool retries a server that is down
    in the background, waiting twice as long each time (up to minutes), and its getconn waits
    the whole timeout meanwhile: a store opened while the server is down would take 10 s to
    fail, and one opened after it is back could wait for the pool's next try for as long as
    the outage lasted. A refused connection fails at once instead."""
    key = (url, readonly)
    with _pools_lock:
        pool = _pools.get(key)
    if pool is not None:
        return pool
    psycopg.connect(url, connect_timeout=_CONNECT_TIMEOUT).close()
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = ConnectionPool(
                url,
                min_size=1,
                max_size=16,
                kwargs={"autocommit": True},
                configure=_read_only if readonly else None,
                check=ConnectionPool.check_connection,  # a server restart breaks idle ones
                name="tapewire-ro" if readonly else "tapewire",
                open=True,
            )
            _pools[key] = pool
        return pool


def _discard_pool(url: str, readonly: bool) -> None:
    """Drop a pool that could not hand out a connection in time (the server went away): the
    next store makes a new one, at once, rather than wait out this one's backoff. Connections
    still out are closed when they come back."""
    with _pools_lock:
        pool = _pools.pop((url, readonly), None)
    if pool is not None:
        with contextlib.suppress(Exception):
            pool.close(timeout=0)


@atexit.register
def close_pools(url: str | None = None) -> None:
    """Close the pools of this database (all of them: None), with their connections."""
    with _pools_lock:
        keys = [k for k in _pools if url is None or k[0] == url]
        pools = [_pools.pop(k) for k in keys]
    for pool in pools:
        with contextlib.suppress(Exception):
            pool.close(timeout=2)


class PostgresStore(SQLStore):
    BEGIN = "BEGIN"
    LEAST, GREATEST = "least", "greatest"
    BYTES = "octet_length"
    REAL = "DOUBLE PRECISION"
    MIGRATIONS = MIGRATIONS
    # Connection lost, deadlock, serialization failure, the server shutting down, a pool that
    # cannot connect (PoolTimeout is one too).
    TRANSIENT: tuple[type[Exception], ...] = (psycopg.OperationalError,)
    SEARCH_OPERATORS = frozenset({"OR"})  # websearch_to_tsquery's (and a leading -)

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        super().__init__()
        self.location: DbRef = url
        self.url = url
        try:
            self._pool = _pool(url, readonly)
            raw = self._pool.getconn(timeout=_CONNECT_TIMEOUT)
        except Exception as e:  # PoolTimeout says little: say where and why
            if isinstance(e, PoolTimeout):
                _discard_pool(url, readonly)
            raise ConnectionError(
                f"cannot connect to PostgreSQL at {location.display(url)}: {e}"
            ) from e
        self.conn = _Connection(raw)
        if readonly:
            # Wait out a migrator at work (it holds the lock): never see half a schema.
            self.conn.execute("SELECT pg_advisory_lock_shared(?)", (_MIGRATE_LOCK,))
            self.conn.execute("SELECT pg_advisory_unlock_shared(?)", (_MIGRATE_LOCK,))
            if not self._table_exists("_migrations"):
                self.close()
                raise FileNotFoundError(f"no tapewire database at {location.display(url)}")
            return
        try:
            self.conn.execute("SELECT pg_advisory_lock(?)", (_MIGRATE_LOCK,))
            try:
                migrate(self.conn, MIGRATIONS, begin=("BEGIN",))
            finally:
                self.conn.execute("SELECT pg_advisory_unlock(?)", (_MIGRATE_LOCK,))
        except BaseException:
            self.close()
            raise

    # ---- the dialect -----------------------------------------------------------------------

    def _json(self, column: str, key: str, text: bool = False) -> str:
        return f"({column}::jsonb {'->>' if text else '->'} '{key}')"

    def _string_agg(self, expr: str) -> str:
        return f"string_agg(DISTINCT {expr}, ',')"

    def _table_exists(self, table: str) -> bool:
        row = self.conn.execute("SELECT to_regclass(?)", (table,)).fetchone()
        return row is not None and row[0] is not None

    def _column_names(self, table: str) -> set[str]:
        return {
            r[0]
            for r in self.conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = ?",
                (table,),
            )
        }

    def _binary(self, value: str | bytes | None) -> str | bytes | None:
        return value.encode() if isinstance(value, str) else value

    def _stream(self, sql: str) -> Iterator[tuple[Any, ...]]:
        # A server-side cursor: a million nodes are not fetched into memory at once.
        with self.conn.raw.transaction(), self.conn.raw.cursor(name="tapewire_stream") as cur:
            cur.itersize = 2000
            cur.execute(sql.encode())
            yield from cur

    # ---- full-text search: tsvector ----------------------------------------------------------

    def _add_search_row(
        self, node: str, kind: str, call_id: str | None, ordinal: int, text: str
    ) -> None:
        # Its words alone (no NUL, which PostgreSQL text cannot hold); the node keeps the text.
        self.conn.execute(
            "INSERT INTO search_rows (node, kind, call, ordinal, tsv)"
            " VALUES (?, ?, ?, ?, to_tsvector('simple', ?))",
            (node, kind, call_id, ordinal, _index_text(text[:SEARCH_CHARS])),
        )

    def search_hits(
        self,
        query: str,
        *,
        session: str | None = None,
        model: str | None = None,
        tool: str | None = None,
        role: str | None = None,
        since: float | None = None,
        limit: int = 50,
        offset: int = 0,
        rank: bool = False,
    ) -> list[dict[str, Any]]:
        """As SQLite's, with PostgreSQL's web-search syntax (words, "a phrase", OR, -word):
        newest first, or best first (ts_rank, negated so that lower ranks better, as bm25)."""
        filters, filter_args = self._search_filters(session, model, tool, role, since)
        # The query inline, not in a subquery: the planner then sees its words and their
        # frequency, and walks the newest rows for a common word but takes a rare one's few
        # matches from the GIN index (a subquery's value is unknown to it: it walked every
        # row for a rare word, 2.4 s at 1,000,000 messages).
        q = "websearch_to_tsquery('simple', ?)"
        order = "r.score, r.rowid" if rank else "r.rowid DESC"
        # Unfiltered, the page is picked among the matching rows alone (each gives one hit or
        # more: enough), and only its rows are joined and ranked turns sorted.
        matched = (
            f"(SELECT rowid, node, kind, ordinal, call, -ts_rank(tsv, {q}) AS score"
            f" FROM search_rows WHERE tsv @@ {q} ORDER BY {order.replace('r.', '')} LIMIT ?)"
            if not filters
            else f"(SELECT *, -ts_rank(tsv, {q}) AS score FROM search_rows WHERE tsv @@ {q})"
        )
        sql = (
            "SELECT r.node, r.kind, r.ordinal, n.role, t.exchange, t.session, t.started_at,"
            f" coalesce(t.response_model, t.model), r.score FROM {matched} r"
            " JOIN nodes n ON n.id = r.node"
            " JOIN node_turns nt ON nt.node = r.node JOIN turns t ON t.exchange = nt.exchange"
            + "".join(f" AND {f}" for f in filters)
            + f" ORDER BY {order}, t.started_at DESC, t.exchange LIMIT ? OFFSET ?"
        )
        words = _web_query(query)
        page = [limit + offset] if not filters else []
        args = [words, words, *page, *filter_args, limit, offset]
        return self._hits(self.conn.execute(sql, args).fetchall())

    def search_nodes(self, query: str, limit: int = 50) -> list[tuple[str, str]]:
        return [
            (r[0], r[1])
            for r in self.conn.execute(
                "SELECT r.node, r.kind FROM search_rows r,"
                " websearch_to_tsquery('simple', ?) q WHERE r.tsv @@ q"
                " ORDER BY ts_rank(r.tsv, q) DESC, r.rowid LIMIT ?",
                (_web_query(query), limit),
            )
        ]

    # ---- the database ------------------------------------------------------------------------

    def reclaim(self) -> None:
        """VACUUM each table: deleted rows' space is reused by new ones (and pages at a
        table's end go back to the file system); statistics are refreshed for the planner."""
        tables = [
            r[0]
            for r in self.conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        ]
        for table in tables:
            self.conn.execute(f"VACUUM (ANALYZE) {table}")

    def size_bytes(self) -> int:
        """The tables of this schema with their indexes and TOAST: what tapewire holds."""
        row = self.conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        raw = self.conn.raw if hasattr(self, "conn") else None
        if raw is None:
            return
        del self.conn
        with contextlib.suppress(Exception):
            if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                raw.rollback()
        self._pool.putconn(raw)  # a broken connection is discarded by the pool
