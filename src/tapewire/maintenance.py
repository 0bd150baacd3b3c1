"""Keeping a store: deleting sessions and what only they held, pruning by age, and copying a
record from one store to another (a laptop's SQLite file into the team's PostgreSQL and back).
The store does the SQL (`store/retention.py`, `store/transfer.py`); this adds what it may not
know: what search indexed of a node, and derivation of what a copy brought."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tapewire.derive import Deriver, search_rows
from tapewire.model import Part
from tapewire.pricing import PriceTable
from tapewire.providers import api_for
from tapewire.store import Store
from tapewire.store.transfer import PLAIN_TABLES


def search_texts(node: str, role: str, content: Any) -> list[str]:
    """The texts derivation indexed for a node, in order, from its stored content."""
    return [text for _, _, text, _ in search_rows(node, role, [Part.from_json(p) for p in content])]


def delete_sessions(store: Store, ids: list[str]) -> dict[str, int]:
    """Delete these sessions with their exchanges, and every node and body no kept session
    references; then give the space back."""
    gone = store.delete_sessions(ids, search_texts)
    store.reclaim()
    return gone


def prune(store: Store, before: float) -> dict[str, int]:
    """Delete the sessions that ended before `before`, and the exchanges of no session (opaque
    paths) that began before it."""
    ids = store.sessions_ended_before(before)
    gone = store.delete_sessions(ids, search_texts, exchanges_before=before)
    if gone["sessions"] or gone["exchanges"]:
        store.reclaim()
    return gone


@dataclass
class CopyReport:
    exchanges: int = 0  # exchanges in the source
    copied: int = 0  # of them, new to the target
    blobs: int = 0  # bodies new to the target
    derived: int = 0  # exchanges derived in the target
    tables: dict[str, int] = field(default_factory=dict)  # new rows per plain table


def copy_store(
    source: Store,
    target: Store,
    prices: PriceTable | None = None,
    progress: Callable[[str, int, int], None] = lambda phase, done, total: None,
) -> CopyReport:
    """Copy the source's record into the target: exchanges with their bodies as stored (still
    compressed, no body re-encoded), run contexts, drops and transcript facts; then derive
    what is new in the target, which gives the same sessions and node ids (derivation is a
    function of the raw exchanges). Idempotent: what the target holds is left alone."""
    report = CopyReport()
    pages = list(source.exchange_ids())
    total = sum(len(p) for p in pages)
    report.exchanges = total
    for table in PLAIN_TABLES:
        # Drops are counters: copied once (a second copy must not add them again).
        report.tables[table] = target.put_raw(table, source.raw_table(table))
    done = 0
    for ids in pages:
        held = target.existing_exchanges(ids)
        new = [i for i in ids if i not in held]
        if new:
            rows = source.raw_exchanges(new)
            wanted = {r[k] for r in rows for k in ("request_blob", "response_blob") if r[k]}
            with target.derived_batch():  # one transaction per page
                report.blobs += target.put_raw("blobs", source.raw_blobs(wanted))
                report.copied += target.put_raw("exchanges", rows)
        done += len(ids)
        progress("copying", done, total)
    deriver = Deriver(target, prices or PriceTable.load(None))
    underived = [i for i, method, path in target.underived() if api_for(method, path)]
    for i in range(0, len(underived), 64):
        report.derived += deriver.derive_ids(underived[i : i + 64])
        progress("deriving", min(i + 64, len(underived)), len(underived))
    deriver.analyse_pending()
    if report.copied:
        # A bulk load: PostgreSQL's planner statistics (which search relies on) and SQLite's
        # search index merged, now rather than whenever autovacuum or the next prune gets to it.
        progress("vacuum and analyse", 0, 1)
        target.reclaim()
        progress("vacuum and analyse", 1, 1)
    return report
