"""Exchanges stored without their turns (a database from before derivation existed, or an
exchange ended by a restart rather than its end record) are derived when the worker starts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from conftest import RECORDING, Databases, settings_for
from fakeprovider import FakeProvider, load_recording
from servecli import cli
from tapewire.model import Evidence, Exchange, ExchangeEnd, Outcome, header_value, new_id
from tapewire.service import ServiceThread
from tapewire.store import Batch, open_store
from tapewire.store.location import DbRef


def _raw_store(db: DbRef) -> list[str]:
    """Three recorded turns written as the raw layer alone; the last one never ended."""
    turns = load_recording(RECORDING)[1:4]
    batch, ids = Batch(), []
    for i, turn in enumerate(turns):
        ex = Exchange(
            id=new_id(), run_id="gone", started_at=1000.0 + i, method="POST",
            path="/v1/messages?beta=true", upstream="anthropic", upstream_url="http://127.0.0.1",
            provider="anthropic", request_headers=turn.request_headers,
            request_body=turn.request_body, request_size=len(turn.request_body),
            evidence=Evidence(claude_session=header_value(turn.request_headers, "x-claude-code-session-id")),
            recorder="old-journal",
        )  # fmt: skip
        batch.begins.append(ex)
        ids.append(ex.id)
        if i < 2:
            batch.ends.append(ExchangeEnd(
                id=ex.id, status=200, response_headers=turn.response_headers,
                response_body=turn.response_body, response_truncated=False,
                response_size=len(turn.response_body), upstream_headers_at=1000.1 + i,
                first_byte_at=1000.2 + i, last_byte_at=1000.5 + i, outcome=Outcome.COMPLETE,
                error=None,
            ))  # fmt: skip
    store = open_store(db)
    store.write(batch)
    store.interrupt_stale("old-journal", "now")  # what a restart of that journal would do
    assert store.session_rows() == []
    store.close()
    return ids


def test_a_store_of_raw_exchanges_is_derived_when_serving_starts(tmp_path: Path, db: DbRef) -> None:
    ids = _raw_store(db)
    with FakeProvider() as fake, ServiceThread(settings_for(fake, tmp_path, db=db)):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            store = open_store(db, readonly=True)
            try:
                sessions = store.session_rows()
                turns = store.turn_rows(sessions[0]["id"]) if sessions else []
            finally:
                store.close()
            if len(turns) == 3:
                break
            time.sleep(0.1)
    assert [t["exchange"] for t in turns] == ids
    assert [t["outcome"] for t in turns] == ["complete", "complete", "interrupted"]
    assert turns[2]["response_nodes"] == [] and turns[2]["error"]
    # The second turn continues the first: only its new message is input.
    assert len(turns[1]["input_nodes"]) == 1
    assert "1 sessions" in cli("status", "--db", str(db)).stdout


def test_a_failing_write_loses_only_its_own_exchange(recorded_db: DbRef, dbs: Databases) -> None:
    """Derivation writes a batch in one transaction, each exchange in a savepoint: one that
    fails to write leaves nothing behind, and every other one is committed."""
    from tapewire.derive import Deriver
    from tapewire.derive.verify import verify
    from tapewire.store.sql import SQLStore

    store = open_store(dbs.clone(recorded_db))
    assert isinstance(store, SQLStore)
    try:
        order = store.derive_order()
        store.clear_derived()
        doomed = order[4]
        real = store._write_derived

        def failing(d: Any) -> None:
            real(d)  # written, then the failure: the savepoint must take it back
            if d.turn.exchange == doomed:
                raise OSError("disk full")

        store._write_derived = failing  # type: ignore[method-assign]
        deriver = Deriver(store)
        assert deriver.derive_ids(order) == len(order) - 1
        assert deriver.errors == 1
        store._write_derived = real  # type: ignore[method-assign]
        (session,) = store.session_rows()
        turns = store.turn_rows(session["id"])
        assert doomed not in {t["exchange"] for t in turns} and len(turns) == len(order) - 1
        leftovers = store.conn.execute(
            "SELECT (SELECT count(*) FROM tool_calls WHERE call_exchange = ?),"
            " (SELECT count(*) FROM node_turns WHERE exchange = ?)",
            (doomed, doomed),
        ).fetchone()
        assert leftovers == (0, 0)
        report = verify(store)
        assert [p for p in report.problems if doomed in p] == [
            f"exchange {doomed}: no turn derived (run tapewire rederive)"
        ]
    finally:
        store.close()


def _derived(db: DbRef, order: list[int], recorders: str) -> dict[str, Any]:
    """The recorded session under one /s/ name, its k-th turn from proxy recorders[k % n],
    derived in `order` (indices of the turns), each as its own ingester batch."""
    from shapes import derived_shape, recorded_exchange
    from tapewire.derive import Deriver

    turns = load_recording(RECORDING)
    pairs = [
        recorded_exchange(t, k, "shared", recorder=recorders[k % len(recorders)])
        for k, t in enumerate(turns)
    ]
    store = open_store(db)
    try:
        store.write(Batch(begins=[e for e, _ in pairs], ends=[e for _, e in pairs]))
        deriver = Deriver(store, analyze=False)
        for k in order:
            deriver.derive_ids([pairs[k][0].id])
        return derived_shape(store)
    finally:
        store.close()


def test_a_session_derived_out_of_order_by_two_proxies_is_derived_again_in_order(
    dbs: Databases,
) -> None:
    """Two proxies' ingesters each derive their own turns: B's turn k+1 may be derived before
    A's turn k. What a turn links to (its tool results' calls) and takes as new input depends
    on the turns before it, so the session comes out as one proxy deriving in order makes it."""
    n = len(load_recording(RECORDING))
    in_order = _derived(dbs.new("in_order"), list(range(n)), "ab")
    assert in_order == _derived(dbs.new("one_proxy"), list(range(n)), "a")
    swapped = [k ^ 1 for k in range(n) if k ^ 1 < n] + ([n - 1] if n % 2 else [])
    assert swapped != list(range(n))
    assert _derived(dbs.new("swapped"), swapped, "ab") == in_order
    # One proxy's journal is its order: its turns are never derived again, whatever they say.
    assert _derived(dbs.new("one_proxy_swapped"), swapped, "a") != in_order
