"""The embedded SQLite backend: one file, WAL, FTS5 for search, migrated on open."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from tapewire.store import SearchSyntaxError
from tapewire.store.location import DbRef
from tapewire.store.migrations import MIGRATIONS, migrate
from tapewire.store.sql import SQLStore


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


class SQLiteStore(SQLStore):
    MIGRATIONS = MIGRATIONS
    TRANSIENT: tuple[type[Exception], ...] = (sqlite3.OperationalError,)  # locked, busy, disk I/O

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        super().__init__()
        self.path = path
        self.location: DbRef = path
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

    # ---- the dialect -----------------------------------------------------------------------

    def _json(self, column: str, key: str, text: bool = False) -> str:
        return f"json_extract({column}, '$.{key}')"

    def _string_agg(self, expr: str) -> str:
        return f"group_concat(DISTINCT {expr})"

    def _table_exists(self, table: str) -> bool:
        return bool(
            self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
        )

    def _column_names(self, table: str) -> set[str]:
        return {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}

    # ---- full-text search: FTS5 --------------------------------------------------------------

    def _add_search_row(
        self, node: str, kind: str, call_id: str | None, ordinal: int, text: str
    ) -> None:
        (rowid,) = self.conn.execute(
            "INSERT INTO search_rows (node, kind, call, ordinal) VALUES (?, ?, ?, ?) RETURNING rowid",
            (node, kind, call_id, ordinal),
        ).fetchone()
        # Contentless: the index keeps no second copy of the text, which the node holds.
        self.conn.execute("INSERT INTO search (rowid, text) VALUES (?, ?)", (rowid, text))

    def _clear_search(self) -> None:
        self.conn.execute("INSERT INTO search (search) VALUES ('delete-all')")

    def _forget_search(self, rows: list[tuple[int, str]]) -> None:
        self.conn.executemany(
            "INSERT INTO search (search, rowid, text) VALUES ('delete', ?, ?)", rows
        )

    # ---- the file ----------------------------------------------------------------------------

    def reclaim(self) -> None:
        """Merge the search index's deletions, then give free pages back to the file system:
        incrementally where the file was made for it (since 0.1), else by rewriting it."""
        self.conn.execute("INSERT INTO search (search) VALUES ('optimize')")
        if self.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            self.conn.execute("PRAGMA incremental_vacuum")
        else:
            self.conn.execute("VACUUM")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

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
        """Full-text hits, newest first (or best first, by bm25, with `rank`): the node, which
        of its texts (`ordinal` among the node's search rows), what it is, and the turn that
        first carried it."""
        filters, filter_args = self._search_filters(session, model, tool, role, since)
        where = ["search MATCH ?", *filters]
        args: list[Any] = [query, *filter_args]
        # Newest first walks the index in rowid order and stops at the page's end; ranking
        # scores every match first, so without filters the page is picked in the index alone
        # and only its rows are joined.
        order = "m.rank, m.rowid" if rank else "m.rowid DESC"
        # A node lives once however many runs carried it: each hit is a (text, turn that
        # brought it) pair, so identical runs are all found.
        unfiltered = len(where) == 1
        matched = (
            f"(SELECT rowid, rank FROM search WHERE search MATCH ? ORDER BY"
            f" {order.replace('m.', '')} LIMIT ?)"  # each gives one hit or more: enough
            if unfiltered
            else "search"
        )
        condition = "1" if unfiltered else " AND ".join(["m.search MATCH ?", *where[1:]])
        sql = (
            "SELECT r.node, r.kind, r.ordinal, n.role, t.exchange, t.session, t.started_at,"
            f" coalesce(t.response_model, t.model), m.rank FROM {matched} m"
            " JOIN search_rows r ON r.rowid = m.rowid JOIN nodes n ON n.id = r.node"
            " JOIN node_turns nt ON nt.node = r.node JOIN turns t ON t.exchange = nt.exchange"
            f" WHERE {condition} ORDER BY {order}"
            # A page picked first is small enough to sort fully; a filtered search streams
            # in the index's order (the turns of one node follow node_turns' key).
            + (", t.started_at DESC, t.exchange" if unfiltered else "")
            + " LIMIT ? OFFSET ?"
        )
        if unfiltered:
            args = [args[0], limit + offset]
        try:
            rows = self.conn.execute(sql, (*args, limit, offset)).fetchall()
        except sqlite3.OperationalError as e:  # FTS5 reports query syntax this way
            raise SearchSyntaxError(f"not a valid search ({e}); see FTS5 query syntax") from e
        return self._hits(rows)

    def search_nodes(self, query: str, limit: int = 50) -> list[tuple[str, str]]:
        """(node, kind) of the rows matching an FTS5 query, best first."""
        return [
            (r[0], r[1])
            for r in self.conn.execute(
                "SELECT r.node, r.kind FROM search JOIN search_rows r ON r.rowid = search.rowid"
                " WHERE search MATCH ? ORDER BY search.rank LIMIT ?",
                (query, limit),
            )
        ]

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
            # Pages that rows outgrew (an exchange's end rewrites its row) go back to the
            # file system on a clean stop, not only on a prune.
            free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
            for _ in range(free):  # the pragma frees a page per step; Python steps it once
                self.conn.execute("PRAGMA incremental_vacuum(1)")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()
