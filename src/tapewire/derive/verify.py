"""`tapewire verify`: is the record still what it claims to be? Re-hashes every blob and node,
checks parent links, and that every exchange's bodies still decode and derive."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from tapewire.derive.nodes import node_id
from tapewire.providers import api_for
from tapewire.store import Store


@dataclass
class Report:
    blobs: int = 0
    nodes: int = 0
    exchanges: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "blobs": self.blobs, "nodes": self.nodes,
                "exchanges": self.exchanges, "problems": self.problems}  # fmt: skip


def verify(store: Store, progress: Callable[[int], None] = lambda n: None) -> Report:
    report = Report()
    for blob_id, size in store.blob_rows():
        report.blobs += 1
        try:
            data = store.read_blob(blob_id)
        except Exception as e:
            report.problems.append(f"blob {blob_id}: cannot be read: {e}")
            continue
        if len(data) != size or hashlib.sha256(data).hexdigest() != blob_id:
            report.problems.append(f"blob {blob_id}: its bytes no longer hash to its id")
    depths: dict[str, int] = {}
    parents: list[tuple[str, str]] = []
    for nid, parent, role, content, depth in store.iter_nodes():
        report.nodes += 1
        depths[nid] = depth
        if node_id(parent, role, content) != nid:
            report.problems.append(f"node {nid}: its content no longer hashes to its id")
        if parent is not None:
            parents.append((nid, parent))
    for nid, parent in parents:
        if parent not in depths:
            report.problems.append(f"node {nid}: parent {parent} is missing")
        elif depths[parent] + 1 != depths[nid]:
            report.problems.append(
                f"node {nid}: depth {depths[nid]} under a parent at {depths[parent]}"
            )
    derived = {
        t for s in store.session_rows() for t in (r["exchange"] for r in store.turn_rows(s["id"]))
    }
    for i, exchange_id in enumerate(store.derive_order()):
        progress(i)
        report.exchanges += 1
        try:
            row = store.exchange(exchange_id)
        except Exception as e:
            report.problems.append(f"exchange {exchange_id}: its bodies cannot be read: {e}")
            continue
        if row is None:
            continue
        if api_for(row.method, row.path) is not None and exchange_id not in derived:
            report.problems.append(
                f"exchange {exchange_id}: no turn derived (run tapewire rederive)"
            )
    return report
