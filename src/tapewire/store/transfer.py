"""Rows as they are, for `tapewire copy`: the raw layer (exchanges with their bodies, still
compressed, dictionaries first) and what no derivation can rebuild (run contexts, drops,
imported transcript facts) read from one store and written to another, whatever the backends.
Writes never overwrite: copying twice gives the same store as copying once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tapewire.store.retention import chunks, marks

# Tables copied whole besides exchanges and blobs, with their keys.
PLAIN_TABLES = {"run_contexts": "session", "drops": "reason", "transcript_facts": "session"}
BINARY_COLUMNS = {"response_chunks", "ws_frames", "data", "content"}


class Transfer:
    """Mixed into SQLStore."""

    conn: Any

    def _rows(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def exchange_ids(self, page: int = 1000) -> Iterator[list[str]]:
        """Every exchange id, in pages, in id order."""
        last = ""
        while ids := [
            r[0]
            for r in self.conn.execute(
                "SELECT id FROM exchanges WHERE id > ? AND outcome != 'in_flight'"
                " ORDER BY id LIMIT ?",
                (last, page),
            )
        ]:
            yield ids
            last = ids[-1]

    def raw_exchanges(self, ids: list[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for part in chunks(ids):
            rows += self._rows(f"SELECT * FROM exchanges WHERE id IN ({marks(len(part))})", part)
        return rows

    def raw_blobs(self, ids: set[str]) -> list[dict[str, Any]]:
        """These bodies as stored, and the dictionaries they need, dictionaries first."""
        found: dict[str, dict[str, Any]] = {}
        wanted = set(ids)
        while wanted:
            rows: list[dict[str, Any]] = []
            for part in chunks(wanted):
                rows += self._rows(
                    "SELECT id, size, codec, dict_id, depth, chain, data FROM blobs"
                    f" WHERE id IN ({marks(len(part))})",
                    part,
                )
            for row in rows:
                found[row["id"]] = row
            wanted = {r["dict_id"] for r in rows if r["dict_id"]} - set(found)
        return sorted(found.values(), key=lambda r: (r["depth"], r["id"]))

    def raw_table(self, table: str) -> list[dict[str, Any]]:
        if not self._has(table):
            return []
        return self._rows(f"SELECT * FROM {table}")

    def _has(self, table: str) -> bool:
        raise NotImplementedError

    def _binary(self, value: str | bytes | None) -> str | bytes | None:
        raise NotImplementedError

    def _ensure_transcript_facts(self) -> None:
        raise NotImplementedError

    def put_raw(self, table: str, rows: list[dict[str, Any]]) -> int:
        """Insert rows read by `raw_*` from any backend; those whose key is taken are left
        as they are. Returns how many were new."""
        if not rows:
            return 0
        if table == "transcript_facts":
            self._ensure_transcript_facts()
        names = [n for n in rows[0] if n != "rowid"]
        sql = (
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks(len(names))})"
            " ON CONFLICT DO NOTHING"
        )
        n = 0
        for row in rows:
            values = [self._binary(row[k]) if k in BINARY_COLUMNS else row[k] for k in names]
            n += self.conn.execute(sql, values).rowcount
        return int(n)
