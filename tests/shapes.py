"""Recorded exchanges built for the store directly, and what derivation makes of them (the
derived layer's shape), to compare derivations that must agree."""

from __future__ import annotations

import json
from typing import Any

from fakeprovider import RecordedTurn
from tapewire.model import Evidence, Exchange, ExchangeEnd, Outcome, new_id
from tapewire.store import Store


def _own(body: bytes, k: int) -> bytes:
    """A recorded request as conversation k's own: its first message begins `[run k] `, so
    every node below the shared system prompt is new."""
    doc = json.loads(body)
    part = next(p for p in doc["messages"][0]["content"] if p.get("type") == "text")
    part["text"] = f"[run {k}] " + part["text"]
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def recorded_exchange(
    turn: RecordedTurn, k: int, session: str, *, own: bool = False, recorder: str = "j"
) -> tuple[Exchange, ExchangeEnd]:
    """A recorded turn as the k-th exchange (it ends at k + 1.5 s) of the /s/ name `session`,
    as `recorder`'s journal would hold it; with `own`, its conversation's own (see _own)."""
    body = _own(turn.request_body, k) if own else turn.request_body
    ex = Exchange(
        id=new_id(), run_id="r", started_at=1.0 + k, method="POST",
        path="/v1/messages?beta=true", upstream="anthropic",
        upstream_url="http://127.0.0.1:9/v1/messages?beta=true", provider="anthropic",
        request_headers=turn.request_headers, request_body=body, request_size=len(body),
        evidence=Evidence(session=session), recorder=recorder, request_end_at=1.1 + k,
    )  # fmt: skip
    end = ExchangeEnd(
        id=ex.id, status=turn.status, response_headers=turn.response_headers,
        response_body=turn.response_body, response_truncated=False,
        response_size=len(turn.response_body), upstream_headers_at=1.2 + k,
        first_byte_at=1.3 + k, last_byte_at=1.5 + k, outcome=Outcome.COMPLETE, error=None,
    )  # fmt: skip
    return ex, end


def derived_shape(store: Store, arrival: bool = True) -> dict[str, Any]:
    """What must not depend on the backend or the number of proxies: per session name its
    threads, its turns (kind, thread kind, nodes, usage, cost) and tool calls, exchange ids
    aside. With `arrival`, also what live derivation takes from the turns derived before
    (a turn's new input nodes, a tool call's link to its result), which is the same only when
    each turn is derived after the one before it."""
    c = store.counts()
    shape: dict[str, Any] = {"nodes": c["nodes"], "turns": c["turns"], "sessions": {}}
    for s in store.session_rows():
        threads = {t["id"]: t["kind"] for t in store.thread_rows(s["id"])}
        turns = [
            (t["kind"], threads.get(t["thread"]), t["request_node"], tuple(t["response_nodes"]),
             t["stop_reason"], t["input_tokens"], t["output_tokens"], t["cost_usd"])
            + ((len(t["input_nodes"]),) if arrival else ())
            for t in store.turn_rows(s["id"])
        ]  # fmt: skip
        calls = sorted(
            (t["id"], t["name"])
            + (
                (t["result_node"], t["is_error"], t["result_exchange"] is not None)
                if arrival
                else ()
            )
            for t in store.tool_call_rows(s["id"])
        )
        shape["sessions"][s["name"]] = {
            "title": s["title"],
            "harness": s["harness"],
            "threads": sorted(threads.values()),
            "turns": turns,
            "tool_calls": calls,
        }
    return shape
