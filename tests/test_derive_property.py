"""Derivation is a function of the raw exchanges (DESIGN invariant: `tapewire rederive` gives the
same ids and rows): a property test over generated Anthropic conversations.

Each example writes synthetic exchanges straight into a fresh store, of each backend (as
bench/derive_bench.py does: no proxy), derives them, snapshots every derived table, and checks
that clearing and deriving again with a new Deriver, and deriving in a second fresh store, give
the same rows; so does deriving one exchange at a time with a new Deriver each time (a restart
between every two exchanges), also when exchanges overlap in time and end out of order (and the
test at the end pins one such case). Nodes must hash to their ids, hang off parents that exist, stay linear (never more
nodes than distinct message prefixes on the wire), and an answer and its resend are one node.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Databases
from tapewire.capture.headers import evidence
from tapewire.derive import Deriver
from tapewire.derive.nodes import node_id
from tapewire.derive.verify import verify
from tapewire.model import Exchange, ExchangeEnd, Outcome
from tapewire.pricing import PriceTable
from tapewire.store import Batch, Store, open_store
from tapewire.store.migrations import DERIVED_TABLES

PRICES = PriceTable.load()
T0 = 1_780_000_000.0

# ---- generated content ----------------------------------------------------------------------

# Any Unicode scalar value: lone surrogates are left out (orjson refuses them, so the request
# would not parse at all, which is a different property: see test_derive_edges).
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)
_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**31), 2**31)
    # beyond 2**53 RFC 8785 refuses them, beyond 2**64 orjson reads them as floats
    | st.sampled_from([2**53 - 1, 2**53, 2**53 + 1, -(2**60), 2**63, 2**64 - 1, 2**64, 2**70])
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
_json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=8,
)
_arguments = st.dictionaries(_text, _json_values, max_size=4)


@st.composite
def _tool_use(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": "toolu_" + draw(_ids),
        "name": draw(st.sampled_from(["Bash", "Read", "Edit", "Task"]) | _text.filter(bool)),
        "input": draw(_arguments),
    }


@st.composite
def _assistant_blocks(draw: st.DrawFn) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if draw(st.booleans()):
        blocks.append(
            {"type": "thinking", "thinking": draw(_text), "signature": "sig" + draw(_ids)}
        )
    blocks.extend({"type": "text", "text": t} for t in draw(st.lists(_text, max_size=2)))
    blocks.extend(draw(st.lists(_tool_use(), max_size=3)))
    if not blocks:
        blocks.append({"type": "text", "text": draw(_text)})
    return blocks


def _tool_results(draw: st.DrawFn, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for call in calls:
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call["id"]}
        content = draw(st.sampled_from(["str", "blocks", "none"]))
        if content == "str":
            result["content"] = draw(_text)
        elif content == "blocks":
            result["content"] = [
                {"type": "text", "text": t} for t in draw(st.lists(_text, max_size=2))
            ]
        error = draw(st.sampled_from([None, True, False]))
        if error is not None:
            result["is_error"] = error
        out.append(result)
    return out


@dataclass
class TurnSpec:
    """One exchange: the request as sent and the answer as it came back."""

    id: str
    body: dict[str, Any]
    headers: list[tuple[str, str]]
    session: str | None  # tapewire's own /s/<session>/ evidence
    answer: list[dict[str, Any]]  # the assistant content blocks
    history: int  # which message history it continues (its answer is resent there next)
    streamed: bool
    gzipped: bool
    started: float
    ended: float


@dataclass
class Conversation:
    turns: list[TurnSpec] = field(default_factory=list)


TOOLS = [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}]


@st.composite
def conversations(draw: st.DrawFn, allow_overlap: bool = True) -> Conversation:
    n = draw(st.integers(1, 6))
    model = draw(st.sampled_from(["claude-sonnet-4-6", "claude-opus-4-7", "some-unpriced-model"]))
    system = draw(st.none() | _text)
    claude_session = draw(st.none() | st.sampled_from(["cc-1111", "cc-2222"]))
    named = draw(st.none() | st.sampled_from(["work", "play"]))
    agents = draw(st.booleans())
    # exchanges may end out of the order they started in (a retry beside a slow request)
    overlap = allow_overlap and draw(st.booleans())
    # Up to two independent threads of messages (a main one and, say, a subagent's), each
    # resending its whole history every turn as agents do.
    histories: list[list[dict[str, Any]]] = [[], []]
    conv = Conversation()
    for i in range(n):
        which = draw(st.integers(0, 1))
        history = histories[which]
        if not history:  # otherwise it ends with the user's answer to the last turn
            history.append({"role": "user", "content": draw(_text | st.just("start"))})
        answer = draw(_assistant_blocks())
        probe = draw(st.integers(0, 7)) == 0  # a 1-token probe: a side call
        body: dict[str, Any] = {"model": model, "max_tokens": 1 if probe else 4096}
        if system is not None:
            body["system"] = [{"type": "text", "text": system}]
        body["messages"] = [dict(m) for m in history]
        if draw(st.integers(0, 4)):  # mostly with tools: Claude Code's side calls have none
            body["tools"] = TOOLS
        streamed = draw(st.booleans())
        body["stream"] = streamed
        headers = [("content-type", "application/json")]
        if claude_session is not None and draw(st.integers(0, 3)):
            headers += [
                ("user-agent", "claude-cli/2.0.0"),
                ("x-claude-code-session-id", claude_session),
            ]
        if agents and which == 1:
            headers.append(
                ("x-claude-code-agent-id", draw(st.sampled_from(["agent-a", "agent-b"])))
            )
        session = None
        if named is not None:  # tapewire's own evidence: a header, or the /s/<name>/ path
            how = draw(st.sampled_from(["header", "path", "neither"]))
            if how == "header":
                headers.append(("x-tapewire-session", named))
            elif how == "path":
                session = named
        start = T0 + (i if overlap else 10 * i)
        duration = draw(st.floats(0.5, 8.0)) if overlap else 5.0
        conv.turns.append(
            TurnSpec(
                id=f"01900000-0000-7000-8000-{i:012d}",
                body=body,
                headers=headers,
                session=session,
                answer=answer,
                history=which,
                streamed=streamed,
                gzipped=draw(st.booleans()),
                started=start,
                ended=start + duration,
            )
        )
        history.append({"role": "assistant", "content": answer})
        follow: list[dict[str, Any]] = _tool_results(
            draw, [b for b in answer if b["type"] == "tool_use"]
        )
        if not follow or draw(st.booleans()):
            follow.append({"type": "text", "text": draw(_text)})
        history.append({"role": "user", "content": follow})
    return conv


# ---- wire bytes -------------------------------------------------------------------------------


def _usage() -> dict[str, int]:
    return {"input_tokens": 10, "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20, "output_tokens": 5}  # fmt: skip


def _sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n".encode()
        for e in events
    )


def stream_events(
    message_id: str, model: str, blocks: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The SSE events that assemble `blocks`, every delta split in two."""
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": message_id, "type": "message",
         "role": "assistant", "model": model, "content": [], "usage": _usage()}},
    ]  # fmt: skip
    for i, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in _halves(block["text"])]
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _halves(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            args = json.dumps(block["input"], ensure_ascii=False)
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _halves(args)]
        events.append({"type": "content_block_start", "index": i, "content_block": start})
        events.extend({"type": "content_block_delta", "index": i, "delta": d} for d in deltas)
        events.append({"type": "content_block_stop", "index": i})
    stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    events.append({"type": "message_delta", "delta": {"stop_reason": stop},
                   "usage": {"output_tokens": 42}})  # fmt: skip
    events.append({"type": "message_stop"})
    return events


def _halves(text: str) -> list[str]:
    return [text[: len(text) // 2], text[len(text) // 2 :]] if text else []


def response_body(spec: TurnSpec) -> tuple[bytes, list[tuple[str, str]]]:
    model = spec.body["model"]
    if spec.streamed:
        raw = _sse(stream_events("msg_" + spec.id[-6:], model, spec.answer))
        headers = [("content-type", "text/event-stream")]
    else:
        stop = "tool_use" if any(b["type"] == "tool_use" for b in spec.answer) else "end_turn"
        message = {"id": "msg_" + spec.id[-6:], "type": "message", "role": "assistant",
                   "model": model, "content": spec.answer, "stop_reason": stop,
                   "usage": {**_usage(), "output_tokens": 42}}  # fmt: skip
        raw = json.dumps(message, ensure_ascii=False).encode()
        headers = [("content-type", "application/json")]
    if spec.gzipped:
        raw = gzip.compress(raw, mtime=0)
        headers.append(("content-encoding", "gzip"))
    return raw, headers


def write_exchanges(store: Store, conv: Conversation) -> None:
    batch = Batch()
    for spec in conv.turns:
        body = json.dumps(spec.body, ensure_ascii=False).encode()
        path = f"/s/{spec.session}/v1/messages" if spec.session else "/v1/messages"
        batch.begins.append(Exchange(
            id=spec.id, run_id="prop", started_at=spec.started, method="POST", path=path,
            upstream="anthropic", upstream_url="http://127.0.0.1/v1/messages",
            provider="anthropic", request_headers=spec.headers, request_body=body,
            request_size=len(body), evidence=evidence(spec.headers, spec.session),
            recorder="prop", request_end_at=spec.started + 0.01,
        ))  # fmt: skip
        raw, headers = response_body(spec)
        batch.ends.append(ExchangeEnd(
            id=spec.id, status=200, response_headers=headers, response_body=raw,
            response_truncated=False, response_size=len(raw),
            upstream_headers_at=spec.started + 0.1, first_byte_at=spec.started + 0.2,
            last_byte_at=spec.ended, outcome=Outcome.COMPLETE, error=None,
        ))  # fmt: skip
    store.write(batch)


# ---- snapshots ------------------------------------------------------------------------------


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every derived table, every column, sorted: what rederive must reproduce exactly. A
    backend's own row number (PostgreSQL's never starts again, SQLite's does) is not kept,
    but the rows come in its order."""
    conn = store.conn  # type: ignore[attr-defined]
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in DERIVED_TABLES:
        cursor = conn.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
        if "rowid" in names:
            at = names.index("rowid")
            out[table] = [r[:at] + r[at + 1 :] for r in sorted(rows, key=lambda r: r[at])]
        else:
            out[table] = sorted(rows, key=repr)
    return out


@contextmanager
def fresh_stores(backend: str) -> Iterator[Databases]:
    """Stores of one example (a hypothesis example cannot use a function's fixture), dropped
    after it."""
    with tempfile.TemporaryDirectory() as tmp:
        made = Databases(backend, Path(tmp))
        try:
            yield made
        finally:
            made.drop()


def derive_all(store: Store) -> Deriver:
    deriver = Deriver(store, PRICES)
    deriver.derive_ids(store.derive_order())
    return deriver


def _distinct_prefixes(conv: Conversation) -> int:
    """Distinct message chains on the wire: every prefix of every request (its system prompt
    first), and every request followed by its answer. A linear conversation adds one node per
    new message, so the node table can never hold more than this."""
    seen: set[tuple[str, ...]] = set()
    for spec in conv.turns:
        chain = [json.dumps(["system", spec.body["system"]])] if "system" in spec.body else []
        chain += [json.dumps([m["role"], m["content"]]) for m in spec.body["messages"]]
        seen.update(tuple(chain[:k]) for k in range(1, len(chain) + 1))
        seen.add((*chain, json.dumps(["assistant", spec.answer])))
    return len(seen)


def check_nodes(store: Store, conv: Conversation) -> None:
    conn = store.conn  # type: ignore[attr-defined]
    nodes = store.node_rows([r[0] for r in conn.execute("SELECT id FROM nodes")])
    for nid, node in nodes.items():
        assert node_id(node["parent"], node["role"], node["content"]) == nid
        if node["parent"] is None:
            assert node["depth"] == 0
        else:
            parent = nodes.get(node["parent"])
            assert parent is not None, f"node {nid} hangs off a missing parent"
            assert parent["depth"] + 1 == node["depth"]
    assert len(nodes) <= _distinct_prefixes(conv)

    # An answer, streamed or plain, and the same answer resent in the next request are one node.
    turns = {
        r[0]: r for r in conn.execute("SELECT exchange, request_node, response_node FROM turns")
    }
    for i, spec in enumerate(conv.turns):
        later = next((s for s in conv.turns[i + 1 :] if s.history == spec.history), None)
        if later is not None:
            answered = turns[spec.id][2]
            assert answered is not None
            assert answered in store.node_chain(turns[later.id][1])


# ---- the property -------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv=conversations())
def test_rederive_reproduces_every_derived_row(backend: str, conv: Conversation) -> None:
    with fresh_stores(backend) as dbs:
        first = open_store(dbs.new("a"))
        write_exchanges(first, conv)
        deriver = derive_all(first)
        assert deriver.errors == 0
        before = snapshot(first)
        # every exchange gave a turn, and the record verifies
        assert len(before["turns"]) == len(conv.turns)
        assert verify(first).ok, verify(first).problems
        check_nodes(first, conv)

        # rederive in place, with a new Deriver: no warm caches
        first.clear_derived()
        assert all(not rows for rows in snapshot(first).values())
        assert derive_all(first).errors == 0
        assert snapshot(first) == before
        first.close()

        # the same exchanges in a fresh store
        second = open_store(dbs.new("b"))
        write_exchanges(second, conv)
        assert derive_all(second).errors == 0
        assert snapshot(second) == before
        second.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv=conversations())
def test_a_restart_between_exchanges_changes_nothing(backend: str, conv: Conversation) -> None:
    """Deriving as the ingest worker does across restarts: each exchange by a new Deriver,
    which must find from the store what the last one held in memory."""
    with fresh_stores(backend) as dbs:
        whole = open_store(dbs.new("a"))
        write_exchanges(whole, conv)
        derive_all(whole)
        expected = snapshot(whole)
        whole.close()

        piecewise = open_store(dbs.new("b"))
        write_exchanges(piecewise, conv)
        for exchange_id in piecewise.derive_order():
            assert Deriver(piecewise, PRICES).derive_ids([exchange_id]) == 1
        assert snapshot(piecewise) == expected
        piecewise.close()


def _text_turn(
    i: int, messages: list[dict[str, Any]], answer: str, start: float, end: float
) -> TurnSpec:
    body = {"model": "claude-sonnet-4-6", "max_tokens": 4096, "messages": messages, "tools": TOOLS}
    return TurnSpec(
        id=f"01900000-0000-7000-8000-{i:012d}", body=body,
        headers=[("content-type", "application/json"), ("x-tapewire-session", "work")],
        session=None, answer=[{"type": "text", "text": answer}], history=0, streamed=False,
        gzipped=False, started=start, ended=end,
    )  # fmt: skip


def test_a_restart_after_overlapping_exchanges_changes_nothing(dbs: Databases) -> None:
    """A request is retried while the first attempt is still running; the retry answers
    first, the conversation continues from the retry's answer, the first attempt ends later."""
    ask = {"role": "user", "content": "fix it"}
    which = {"role": "assistant", "content": [{"type": "text", "text": "which file?"}]}
    reply = {"role": "user", "content": "main.py"}
    fast = {"role": "assistant", "content": [{"type": "text", "text": "fast answer"}]}
    conv = Conversation([
        _text_turn(0, [ask], "which file?", T0, T0 + 1),
        _text_turn(1, [ask, which, reply], "slow answer", T0 + 2, T0 + 9),  # the slow original
        _text_turn(2, [ask, which, reply], "fast answer", T0 + 3, T0 + 4),  # its retry
        _text_turn(3, [ask, which, reply, fast, {"role": "user", "content": "thanks"}], "done",
                   T0 + 10, T0 + 11),
    ])  # fmt: skip
    whole = open_store(dbs.new("a"))
    write_exchanges(whole, conv)
    derive_all(whole)
    piecewise = open_store(dbs.new("b"))
    write_exchanges(piecewise, conv)
    for exchange_id in piecewise.derive_order():
        Deriver(piecewise, PRICES).derive_ids([exchange_id])

    def last_input(store: Store) -> list[str]:
        session = store.session_rows()[0]["id"]
        turn = next(t for t in store.turn_rows(session) if t["exchange"] == conv.turns[3].id)
        return list(turn["input_nodes"])

    # Whole: [the "fast answer" node, the "thanks" node]; after a restart: ["thanks" node].
    assert last_input(whole) == last_input(piecewise)
    assert snapshot(piecewise) == snapshot(whole)
    whole.close()
    piecewise.close()
