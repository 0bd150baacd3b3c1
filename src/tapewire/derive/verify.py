"""`tapewire verify`: is the record still what it claims to be? Re-hashes every blob and node,
checks parent links, and that every exchange's bodies still decode and derive."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from tapewire.content_encoding import DecodeError, decode
from tapewire.derive import carries_turn
from tapewire.derive.nodes import node_id
from tapewire.providers import api_for
from tapewire.store import Store


@dataclass
class Report:
    blobs: int = 0
    nodes: int = 0
    exchanges: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # odd but recorded as it was, not damage

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "blobs": self.blobs, "nodes": self.nodes,
                "exchanges": self.exchanges, "problems": self.problems, "notes": self.notes}  # fmt: skip


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
    turns = [t for s in store.session_rows() for t in store.turn_rows(s["id"])]
    derived = {t["exchange"] for t in turns}
    errors = {t["exchange"]: t["error"] for t in turns}
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
        for what, body, encoding, cut in (
            ("request", row.request_body, row.request_encoding, row.request_truncated),
            ("response", row.response_body, row.response_encoding, row.response_truncated),
        ):
            # A complete exchange's bodies arrived whole: they must still decode.
            if body and row.outcome == "complete" and not cut:
                try:
                    decode(body, encoding)
                except DecodeError as e:
                    # Known since it was derived (the upstream sent it so): a note, not damage.
                    known = f"{what} body" in (errors.get(exchange_id) or "")
                    (report.notes if known else report.problems).append(
                        f"exchange {exchange_id}: {what} body: {e}"
                    )
        if (
            api_for(row.method, row.path) is not None
            and carries_turn(row)
            and exchange_id not in derived
        ):
            report.problems.append(
                f"exchange {exchange_id}: no turn derived (run tapewire rederive)"
            )
    for t in turns:
        named = [
            *t["response_nodes"],
            *t["input_nodes"],
            *([t["request_node"]] if t["request_node"] else []),
        ]
        for nid in named:
            if nid not in depths:
                report.problems.append(f"turn {t['exchange']}: its node {nid} is missing")
    return report
