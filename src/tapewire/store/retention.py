"""Deleting sessions, on both backends: a session goes with its exchanges and every node and blob
no kept session still references. Content addressing shares them (identical runs share their
nodes, a body is the dictionary of the next), so nothing shared is ever deleted: candidates are
what the deleted sessions held, kept when anything that stays reaches them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

_CHUNK = 500

# The texts full-text search indexed for a node, in order: (node id, role, content) -> texts.
# SQLite's contentless FTS5 index forgets a row only when told its text again.
SearchTexts = Callable[[str, str, Any], list[str]]


def chunks(ids: Iterable[str], size: int = _CHUNK) -> Iterator[list[str]]:
    items = list(ids)
    for i in range(0, len(items), size):
        yield items[i : i + size]


def marks(n: int) -> str:
    return ",".join("?" * n)


class Retention:
    """Mixed into SQLStore."""

    conn: Any
    BEGIN: str
    BYTES: str
    _recent: dict[str, Any]
    _read_cache: dict[str, bytes]

    def _has(self, table: str) -> bool:
        raise NotImplementedError

    def _forget_search(self, rows: list[tuple[int, str]]) -> None:
        raise NotImplementedError

    def _select_in(self, sql: str, ids: Iterable[str], args: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of `sql` (with one `{in}` for a list of placeholders) over ids, by chunks."""
        rows: list[Any] = []
        for part in chunks(ids):
            rows += self.conn.execute(sql.format(marks=marks(len(part))), (*part, *args)).fetchall()
        return rows

    def _delete_in(self, table: str, column: str, ids: Iterable[str]) -> int:
        n = 0
        for part in chunks(ids):
            n += self.conn.execute(
                f"DELETE FROM {table} WHERE {column} IN ({marks(len(part))})", part
            ).rowcount
        return n

    def sessions_ended_before(self, cutoff: float) -> list[str]:
        return [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM sessions WHERE ended_at < ? ORDER BY started_at, id", (cutoff,)
            )
        ]

    def delete_sessions(
        self: Any,
        ids: list[str],
        search_texts: SearchTexts,
        *,
        exchanges_before: float | None = None,
    ) -> dict[str, int]:
        """Delete these sessions and what only they held, in one transaction; with
        `exchanges_before`, also the exchanges that began before it and belong to no session
        (opaque ones, never derived). Returns what went: sessions, exchanges, nodes, blobs,
        blob_bytes (stored)."""
        c = self.conn
        c.execute(self.BEGIN)
        try:
            out: dict[str, int] = self._delete(ids, search_texts, exchanges_before)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        finally:
            self._recent.clear()  # may hold a deleted body as the next one's dictionary
            self._read_cache.clear()
        return out

    def _delete(
        self, ids: list[str], search_texts: SearchTexts, exchanges_before: float | None
    ) -> dict[str, int]:
        ids = sorted(set(ids))
        sessions = self._select_in(
            "SELECT id, name, harness_session_id FROM sessions WHERE id IN ({marks})", ids
        )
        names = {r[1] for r in sessions if r[1]}
        harness_ids = {r[2] for r in sessions if r[2]}
        turns = self._select_in(
            "SELECT exchange, request_node, response_nodes FROM turns WHERE session IN ({marks})",
            ids,
        )
        exchanges = {r[0] for r in turns}
        # Exchanges no turn took (opaque paths): with their session's /s/ name, or old.
        untaken = "NOT EXISTS (SELECT 1 FROM turns t WHERE t.exchange = e.id)"
        exchanges.update(
            r[0]
            for r in self._select_in(
                f"SELECT e.id FROM exchanges e WHERE e.session IN ({{marks}}) AND {untaken}",
                names,
            )
        )
        if exchanges_before is not None:
            exchanges.update(
                r[0]
                for r in self.conn.execute(
                    f"SELECT e.id FROM exchanges e WHERE e.started_at < ? AND {untaken}"
                    " AND e.outcome != 'in_flight'",
                    (exchanges_before,),
                )
            )
        nodes: set[str] = {
            r[0] for r in self._select_in(
                "SELECT node FROM node_turns WHERE exchange IN ({marks})", exchanges
            )
        }  # fmt: skip
        for _, request_node, response_nodes in turns:
            nodes.update(n for n in [request_node, *orjson.loads(response_nodes)] if n)
        blobs: set[str] = set()
        for request_blob, response_blob in self._select_in(
            "SELECT request_blob, response_blob FROM exchanges WHERE id IN ({marks})", exchanges
        ):
            blobs.update(b for b in (request_blob, response_blob) if b)

        # The derived rows of these sessions, then their exchanges.
        for table, column in (("turns", "session"), ("tips", "session"),
                              ("tool_calls", "session"), ("threads", "session"),
                              ("sessions", "id")):  # fmt: skip
            self._delete_in(table, column, ids)
        if self._has("findings"):
            self._delete_in("findings", "session", ids)
        self._delete_in("node_turns", "exchange", exchanges)
        deleted_exchanges = self._delete_in("exchanges", "id", exchanges)
        # What a run recorded about itself goes with the last session of its name.
        kept_names = {r[0] for r in self._select_in(
            "SELECT name FROM sessions WHERE name IN ({marks})", names)}  # fmt: skip
        self._delete_in("run_contexts", "session", names - kept_names)
        if self._has("transcript_facts"):
            kept = {r[0] for r in self._select_in(
                "SELECT harness_session_id FROM sessions WHERE harness_session_id IN ({marks})",
                harness_ids)}  # fmt: skip
            self._delete_in("transcript_facts", "session", harness_ids - kept)

        gone_nodes = self._sweep_nodes(nodes, search_texts)
        gone_blobs, gone_bytes = self._sweep_blobs(blobs)
        return {"sessions": len(sessions), "exchanges": deleted_exchanges, "nodes": gone_nodes,
                "blobs": gone_blobs, "blob_bytes": gone_bytes}  # fmt: skip

    def _sweep_nodes(self, candidates: set[str], search_texts: SearchTexts) -> int:
        """Delete the candidates nothing kept reaches. A kept turn reaches its thread's whole
        chain through node_turns; a kept tip or tool call its node; a kept node its parent;
        and a reached node all its ancestors."""
        if not candidates:
            return 0
        parent: dict[str, str | None] = {
            r[0]: r[1]
            for r in self._select_in(
                "SELECT id, parent FROM nodes WHERE id IN ({marks})", candidates
            )
        }
        reached: set[str] = set()
        for sql in (
            "SELECT node FROM node_turns WHERE node IN ({marks})",
            "SELECT node FROM tips WHERE node IN ({marks})",
            "SELECT call_node FROM tool_calls WHERE call_node IN ({marks})",
            "SELECT result_node FROM tool_calls WHERE result_node IN ({marks})",
        ):
            reached.update(r[0] for r in self._select_in(sql, parent))
        for child, up in self._select_in(
            "SELECT id, parent FROM nodes WHERE parent IN ({marks})", parent
        ):
            if child not in parent:  # a node that stays, below a candidate
                reached.add(up)
        live: set[str] = set()
        for start in reached:
            node: str | None = start
            while node is not None and node in parent and node not in live:
                live.add(node)
                node = parent[node]
        gone = [n for n in parent if n not in live]
        if not gone:
            return 0
        self._forget_search_of(gone, search_texts)
        self._delete_in("search_rows", "node", gone)
        return int(self._delete_in("nodes", "id", gone))

    def _forget_search_of(self, nodes: list[str], search_texts: SearchTexts) -> None:
        rows = self._select_in(
            "SELECT r.rowid, r.node, r.ordinal, n.role, n.content FROM search_rows r"
            " JOIN nodes n ON n.id = r.node WHERE r.node IN ({marks})",
            nodes,
        )
        if not rows:
            return
        from tapewire.store.sql import unpack

        texts: dict[str, list[str]] = {}
        forget: list[tuple[int, str]] = []
        for rowid, node, ordinal, role, content in rows:
            if node not in texts:
                texts[node] = search_texts(node, role, unpack(content))
            if ordinal < len(texts[node]):
                forget.append((rowid, texts[node][ordinal]))
        self._forget_search(forget)

    def _sweep_blobs(self, candidates: set[str]) -> tuple[int, int]:
        """Delete the candidate bodies no kept exchange holds and no kept body needs as its
        dictionary; deleting one may free its own dictionary, so again until none goes."""
        gone, size = 0, 0
        left = set(candidates)
        while left:
            used = {
                r[0] for sql in (
                    "SELECT request_blob FROM exchanges WHERE request_blob IN ({marks})",
                    "SELECT response_blob FROM exchanges WHERE response_blob IN ({marks})",
                    "SELECT dict_id FROM blobs WHERE dict_id IN ({marks})",
                ) for r in self._select_in(sql, left)
            }  # fmt: skip
            free = left - used
            if not free:
                break
            dictionaries = set()
            for dict_id, stored in self._select_in(
                f"SELECT dict_id, {self.BYTES}(data) FROM blobs WHERE id IN ({{marks}})", free
            ):
                size += int(stored)
                if dict_id:
                    dictionaries.add(dict_id)
            gone += self._delete_in("blobs", "id", free)
            left = dictionaries
        return gone, size
