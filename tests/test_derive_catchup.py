"""Exchanges stored without their turns (a database from before derivation existed, or an
exchange ended by a restart rather than its end record) are derived when the worker starts."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import RECORDING, settings_for
from fakeprovider import FakeProvider, load_recording
from servecli import cli
from tapewire.model import Evidence, Exchange, ExchangeEnd, Outcome, header_value, new_id
from tapewire.service import ServiceThread
from tapewire.store import Batch, open_store


def _raw_store(db: Path) -> list[str]:
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


def test_a_store_of_raw_exchanges_is_derived_when_serving_starts(tmp_path: Path) -> None:
    db = tmp_path / "tapewire.db"
    ids = _raw_store(db)
    with FakeProvider() as fake, ServiceThread(settings_for(fake, tmp_path)):
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
