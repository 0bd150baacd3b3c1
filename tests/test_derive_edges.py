"""Deriving what went wrong, and who is talking.

Exchanges that broke (a cut stream, a mid-stream error, a malformed line, an upstream that never
answered, a rate limit, a cut gzip body, a request that is not JSON or was cut at capture) still
give a turn: partial, with `error` saying what happened and whatever did arrive in its nodes, and
`tapewire verify` stays happy. Then the session and thread rules: the thread fixtures, Codex's
session/thread pair, side calls, conversation continuity, and cost (unknown is None, never 0).

Exchanges are written straight into a store (as bench/derive_bench.py does), no proxy.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from tapewire.capture.headers import evidence
from tapewire.derive import Deriver
from tapewire.derive.sessions import subagent
from tapewire.derive.verify import verify
from tapewire.model import Exchange, ExchangeEnd, Outcome, new_id
from tapewire.pricing import PriceTable
from tapewire.store import Batch, Store, open_store
from tapewire.store.location import DbRef

FIXTURES = Path(__file__).parent / "fixtures" / "thread"
CASES = sorted((FIXTURES / "cases").glob("*.json"))
PACKAGED_PRICES = (resources.files("tapewire") / "data" / "prices.json").read_bytes()
PRICES = PriceTable.from_json(PACKAGED_PRICES, "packaged prices.json")

JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream")]
CLAUDE = [*JSON, ("user-agent", "claude-cli/2.0.14 (external, cli)")]
TOOLS = [{"name": "Bash", "description": "Run a command", "input_schema": {"type": "object"}}]
_clock = itertools.count()


# ---- building exchanges ---------------------------------------------------------------------


@pytest.fixture
def store(db: DbRef) -> Iterator[Store]:
    s = open_store(db)
    yield s
    s.close()


def request(
    messages: list[dict[str, Any]],
    *,
    model: str = "claude-sonnet-4-6",
    tools: list[dict[str, Any]] | None = TOOLS,
    stream: bool = False,
    **extra: Any,
) -> bytes:
    body: dict[str, Any] = {"model": model, "max_tokens": 4096, "messages": messages}
    if tools is not None:
        body["tools"] = tools
    body["stream"] = stream
    body.update(extra)
    return json.dumps(body).encode()


def record(
    store: Store,
    body: bytes,
    response: bytes = b"",
    *,
    status: int | None = 200,
    headers: list[tuple[str, str]] = JSON,
    response_headers: list[tuple[str, str]] = JSON,
    path: str = "/v1/messages",
    outcome: Outcome = Outcome.COMPLETE,
    error: str | None = None,
    request_truncated: bool = False,
    request_size: int | None = None,
) -> str:
    """Write one ended exchange into the store; its id."""
    ex_id = new_id()
    start = 1_780_000_000.0 + 10 * next(_clock)
    begin = Exchange(
        id=ex_id, run_id="edges", started_at=start, method="POST", path=path,
        upstream="anthropic", upstream_url="http://127.0.0.1" + path,
        provider="openai" if path.endswith("/responses") else "anthropic",
        request_headers=headers, request_body=body, request_truncated=request_truncated,
        request_size=len(body) if request_size is None else request_size,
        evidence=evidence(headers, None), recorder="edges", request_end_at=start + 0.01,
    )  # fmt: skip
    end = ExchangeEnd(
        id=ex_id, status=status, response_headers=response_headers if status else [],
        response_body=response, response_truncated=False, response_size=len(response),
        upstream_headers_at=start + 0.1 if status else None,
        first_byte_at=start + 0.2 if response else None,
        last_byte_at=start + 1.0 if response else None, outcome=outcome, error=error,
    )  # fmt: skip
    store.write(Batch(begins=[begin], ends=[end]))
    return ex_id


def derive(store: Store, prices: PriceTable = PRICES) -> None:
    deriver = Deriver(store, prices)
    deriver.derive_ids(store.derive_order())
    assert deriver.errors == 0, "the deriver raised (see the log)"


def turn_of(store: Store, exchange_id: str) -> dict[str, Any]:
    for session in store.session_rows():
        for turn in store.turn_rows(session["id"]):
            if turn["exchange"] == exchange_id:
                return turn
    raise AssertionError(f"no turn derived for exchange {exchange_id}")


def output_parts(store: Store, turn: dict[str, Any]) -> list[dict[str, Any]]:
    """The canonical parts of the turn's (first) response node."""
    if not turn["response_nodes"]:
        return []
    node = store.node_rows(turn["response_nodes"][:1])[turn["response_nodes"][0]]
    assert node["role"] == "assistant"
    return list(node["content"])


def request_parts(store: Store, turn: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The content of every message node of the turn's request chain, root first."""
    if turn["request_node"] is None:
        return []
    chain = store.node_chain(turn["request_node"])
    nodes = store.node_rows(chain)
    return [nodes[n]["content"] for n in chain]


def sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def message_start(model: str = "claude-sonnet-4-6", msg_id: str = "msg_edge") -> dict[str, Any]:
    return {"type": "message_start", "message": {"id": msg_id, "type": "message",
            "role": "assistant", "model": model, "content": [],
            "usage": {"input_tokens": 12, "output_tokens": 1}}}  # fmt: skip


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, **d: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": d}


def block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_end(stop: str = "end_turn") -> list[dict[str, Any]]:
    return [
        {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 30}},
        {"type": "message_stop"},
    ]


ASK = [{"role": "user", "content": "List the files, please."}]
TOOL_START = {"type": "tool_use", "id": "toolu_cut", "name": "Bash", "input": {}}


def assert_healthy(store: Store) -> None:
    report = verify(store)
    assert report.ok, report.problems
    assert report.exchanges == len(store.derive_order())


def assert_request_arrived(store: Store, turn: dict[str, Any]) -> None:
    assert request_parts(store, turn) == [[{"type": "text", "text": ASK[0]["content"]}]]


# ---- exchanges that went wrong --------------------------------------------------------------


def test_a_stream_cut_mid_tool_input(store: Store) -> None:
    events = [
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        delta(0, type="text_delta", text="I'll list them."),
        block_stop(0),
        block_start(1, TOOL_START),
        delta(1, type="input_json_delta", partial_json='{"command": "ls -'),
    ]
    ex = record(store, request(ASK, stream=True), sse(events), response_headers=SSE,
                outcome=Outcome.UPSTREAM_RESET, error="upstream reset the connection")  # fmt: skip
    derive(store)
    turn = turn_of(store, ex)
    assert "stream ended before message_stop" in turn["error"]
    assert "toolu_cut: input is not valid JSON" in turn["error"]
    assert turn["outcome"] == "upstream_reset"
    assert output_parts(store, turn) == [
        {"type": "text", "text": "I'll list them."},
        {"type": "tool_call", "id": "toolu_cut", "name": "Bash", "arguments": '{"command": "ls -'},
    ]
    assert_request_arrived(store, turn)
    calls = store.tool_call_rows(turn["session"])
    assert [(c["id"], c["arguments"]) for c in calls] == [("toolu_cut", '{"command": "ls -')]
    assert_healthy(store)


def test_an_error_event_mid_stream(store: Store) -> None:
    events = [
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        delta(0, type="text_delta", text="Let me "),
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    ]
    ex = record(store, request(ASK, stream=True), sse(events), response_headers=SSE)
    derive(store)
    turn = turn_of(store, ex)
    assert "overloaded_error: Overloaded" in turn["error"]
    assert output_parts(store, turn) == [{"type": "text", "text": "Let me "}]
    assert turn["response_id"] == "msg_edge"
    assert turn["input_tokens"] == 12
    assert_request_arrived(store, turn)
    assert_healthy(store)


def test_a_malformed_data_line(store: Store) -> None:
    broken = (
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "de\n\n'
    )
    body = b"".join([
        sse([message_start(), block_start(0, {"type": "text", "text": ""}),
             delta(0, type="text_delta", text="one ")]),
        broken,
        sse([delta(0, type="text_delta", text="three"), block_stop(0), *message_end()]),
    ])  # fmt: skip
    ex = record(store, request(ASK, stream=True), body, response_headers=SSE)
    derive(store)
    turn = turn_of(store, ex)
    assert "malformed SSE data in content_block_delta event" in turn["error"]
    assert output_parts(store, turn) == [{"type": "text", "text": "one three"}]
    assert turn["stop_reason"] == "end_turn"
    assert turn["output_tokens"] == 30
    assert_healthy(store)


def test_interleaved_content_block_indexes(store: Store) -> None:
    """Blocks assembled by index whatever order their events come in; a delta for a block that
    never started is reported, the rest kept."""
    events = [
        message_start(),
        block_start(1, TOOL_START),
        block_start(0, {"type": "text", "text": ""}),
        delta(1, type="input_json_delta", partial_json='{"command":'),
        delta(0, type="text_delta", text="Listing "),
        delta(1, type="input_json_delta", partial_json=' "ls -la"}'),
        delta(7, type="text_delta", text="from nowhere"),
        delta(0, type="text_delta", text="now."),
        block_stop(1),
        block_stop(0),
        *message_end("tool_use"),
    ]
    ex = record(store, request(ASK, stream=True), sse(events), response_headers=SSE)
    derive(store)
    turn = turn_of(store, ex)
    assert turn["error"] == "content_block_delta for block 7 that never started"
    assert output_parts(store, turn) == [
        {"type": "text", "text": "Listing now."},
        {
            "type": "tool_call",
            "id": "toolu_cut",
            "name": "Bash",
            "arguments": {"command": "ls -la"},
        },
    ]
    assert turn["stop_reason"] == "tool_use"
    assert_healthy(store)


def test_an_upstream_error_with_no_response(store: Store) -> None:
    ex = record(store, request(ASK), b"", status=None, outcome=Outcome.UPSTREAM_ERROR,
                error="connection refused by 127.0.0.1:9")  # fmt: skip
    derive(store)
    turn = turn_of(store, ex)
    assert turn["error"] == "connection refused by 127.0.0.1:9"
    assert turn["outcome"] == "upstream_error"
    assert turn["status"] is None and turn["response_nodes"] == []
    assert turn["cost_usd"] is None
    assert_request_arrived(store, turn)
    assert_healthy(store)


@pytest.mark.parametrize(
    ("status", "kind", "message"),
    [(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
     (529, "overloaded_error", "Overloaded")],
)  # fmt: skip
def test_an_http_error_body(store: Store, status: int, kind: str, message: str) -> None:
    body = json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    ex = record(store, request(ASK), body, status=status)
    derive(store)
    turn = turn_of(store, ex)
    assert turn["error"] == f"HTTP {status}: {kind}: {message}"
    assert turn["status"] == status and turn["outcome"] == "complete"
    assert turn["response_nodes"] == [] and turn["cost_usd"] is None
    assert_request_arrived(store, turn)
    assert_healthy(store)


def test_a_gzip_body_cut_short_is_salvaged(store: Store) -> None:
    words = " ".join(f"word{i}" for i in range(3000))
    full = sse([
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        *(delta(0, type="text_delta", text=words[i : i + 100]) for i in range(0, len(words), 100)),
        block_stop(0),
        *message_end(),
    ])  # fmt: skip
    packed = gzip.compress(full, mtime=0)
    cut = packed[: len(packed) // 2]
    ex = record(store, request(ASK, stream=True), cut,
                response_headers=[*SSE, ("content-encoding", "gzip")],
                outcome=Outcome.UPSTREAM_RESET, error="upstream reset")  # fmt: skip
    derive(store)
    turn = turn_of(store, ex)
    assert "response body: gzip stream cut short; read what arrived" in turn["error"]
    assert "stream ended before message_stop" in turn["error"]
    [part] = output_parts(store, turn)
    assert part["type"] == "text"
    assert len(part["text"]) > 1000 and words.startswith(part["text"])
    assert_request_arrived(store, turn)
    assert_healthy(store)


def test_a_request_body_that_is_not_json(store: Store) -> None:
    answer = {"id": "msg_x", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
              "content": [{"type": "text", "text": "Hello."}], "stop_reason": "end_turn",
              "usage": {"input_tokens": 3, "output_tokens": 2}}  # fmt: skip
    ex = record(store, b"model=claude&messages=hi", json.dumps(answer).encode())
    derive(store)
    turn = turn_of(store, ex)
    assert turn["error"].startswith("request body is not JSON")
    assert turn["request_node"] is None and turn["input_nodes"] == []
    assert output_parts(store, turn) == [{"type": "text", "text": "Hello."}]
    assert turn["response_model"] == "claude-sonnet-4-6"
    assert_healthy(store)


def test_a_request_with_a_lone_surrogate_escape(store: Store) -> None:
    """JSON.stringify writes a lone surrogate (a tool output cut mid-emoji) as an escape; the
    grammar allows it, orjson refuses it. Whatever the codec makes of it, the turn exists."""
    body = request(ASK).replace(b"please.", b"please \\ud83d.")
    ex = record(store, body, b"")
    derive(store)
    turn = turn_of(store, ex)
    assert turn["error"]
    assert_healthy(store)


def test_a_request_truncated_at_capture(store: Store) -> None:
    full = request(ASK + [{"role": "assistant", "content": "ok"}] * 50)
    answer = {"id": "msg_t", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
              "content": [{"type": "text", "text": "Done."}], "stop_reason": "end_turn",
              "usage": {"input_tokens": 300, "output_tokens": 2}}  # fmt: skip
    ex = record(store, full[:200], json.dumps(answer).encode(), request_truncated=True,
                request_size=len(full))  # fmt: skip
    derive(store)
    turn = turn_of(store, ex)
    assert turn["error"].startswith("request body truncated at capture; request body is not JSON")
    assert output_parts(store, turn) == [{"type": "text", "text": "Done."}]
    assert turn["output_tokens"] == 2
    assert_healthy(store)


def test_every_broken_exchange_in_one_store_gets_its_turn(store: Store) -> None:
    gzipped = [*JSON, ("content-encoding", "gzip")]
    ids = [
        record(store, request(ASK, stream=True), sse([message_start()])[:40], response_headers=SSE),
        record(store, request(ASK), b"", status=None, outcome=Outcome.UPSTREAM_ERROR, error="no"),
        record(store, request(ASK), b"", status=None, outcome=Outcome.TIMEOUT, error="timed out"),
        record(store, request(ASK), b"{", status=502),
        record(store, request(ASK), b"\x1f\x8b\x08garbage", response_headers=gzipped),
        record(store, request(ASK), b"not json", response_headers=JSON),
        record(store, b"", b""),
        record(store, b"[1, 2]", b""),
        record(store, request(ASK), b"", outcome=Outcome.CLIENT_DISCONNECT, error="gone"),
        record(store, request(ASK, stream=True), b"data: [DONE]\n\n", response_headers=SSE),
    ]  # fmt: skip
    derive(store)
    for ex in ids:
        turn = turn_of(store, ex)
        assert turn["error"], f"exchange {ex} went wrong without saying so"
    assert_healthy(store)


# ---- the thread fixtures -------------------------------------------------------------------


def _case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())
    assert case["name"] == path.stem
    return case


def test_the_thread_fixtures_are_sealed() -> None:
    digest = hashlib.sha256()
    for path in CASES:
        digest.update(f"{path.name}  {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    assert (FIXTURES / "DIGEST").read_text().strip() == "sha256:" + digest.hexdigest()
    assert len(CASES) >= 8


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_thread_fixture(path: Path, store: Store) -> None:
    case = _case(path)
    headers = list(case["headers"].items())
    expected = case["thread_id"] or None
    assert subagent(evidence(headers, None).as_dict()) == expected

    # and end to end: derived, the exchange lands in that thread
    ex = record(store, request(ASK), b"", headers=headers, status=None,
                outcome=Outcome.UPSTREAM_ERROR, error="refused")  # fmt: skip
    derive(store)
    turn = turn_of(store, ex)
    [thread] = store.thread_rows(turn["session"])
    assert thread["id"] == turn["thread"]
    assert thread["agent"] == expected
    assert thread["kind"] == turn["kind"] == ("subagent" if expected else "main")


# ---- Codex threads, side calls, continuity, cost ---------------------------------------------


def _codex(session: str, thread: str) -> tuple[bytes, bytes, list[tuple[str, str]]]:
    body = {"model": "gpt-5-codex", "instructions": "You are Codex.", "stream": False,
            "input": [{"type": "message", "role": "user",
                       "content": [{"type": "input_text", "text": f"work on {thread}"}]}],
            "tools": [{"type": "function", "name": "shell",
                       "parameters": {"type": "object"}}]}  # fmt: skip
    response = {"id": "resp_" + thread[:8], "object": "response", "model": "gpt-5-codex",
                "status": "completed",
                "output": [{"type": "message", "role": "assistant",
                            "content": [{"type": "output_text", "text": "done"}]}],
                "usage": {"input_tokens": 10, "output_tokens": 2}}  # fmt: skip
    headers = [
        *JSON,
        ("originator", "codex_cli_rs"),
        ("session_id", session),
        ("thread-id", thread),
    ]
    return json.dumps(body).encode(), json.dumps(response).encode(), headers


def test_codex_thread_equal_to_session_is_main_and_a_different_one_a_subagent(
    store: Store,
) -> None:
    session = "33333333-3333-4333-8333-333333333333"
    child = "44444444-4444-4444-8444-444444444444"
    body, response, headers = _codex(session, session)
    root = record(store, body, response, headers=headers, path="/v1/responses")
    body, response, headers = _codex(session, child)
    sub = record(store, body, response, headers=headers, path="/v1/responses")
    derive(store)

    root_turn, sub_turn = turn_of(store, root), turn_of(store, sub)
    assert root_turn["session"] == sub_turn["session"]
    assert (root_turn["kind"], sub_turn["kind"]) == ("main", "subagent")
    assert root_turn["thread"] != sub_turn["thread"]
    threads = {t["id"]: t for t in store.thread_rows(root_turn["session"])}
    assert threads[root_turn["thread"]]["kind"] == "main"
    assert threads[root_turn["thread"]]["agent"] is None
    assert threads[sub_turn["thread"]]["kind"] == "subagent"
    assert threads[sub_turn["thread"]]["agent"] == child
    [s] = store.session_rows()
    assert s["harness"] == "codex" and s["harness_session_id"] == session
    assert s["threads"] == 2 and s["turns"] == 2
    assert root_turn["error"] is None and sub_turn["error"] is None
    assert_healthy(store)


def test_side_calls_have_no_thread(store: Store) -> None:
    claude = [*CLAUDE, ("x-claude-code-session-id", "cc-side")]
    plain = {"id": "msg_s", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
             "content": [{"type": "text", "text": '{"title": "List the files"}'}],
             "stop_reason": "end_turn",
             "usage": {"input_tokens": 50, "output_tokens": 9}}  # fmt: skip
    main = record(store, request(ASK), b"", headers=claude, status=None,
                  outcome=Outcome.UPSTREAM_ERROR, error="refused")  # fmt: skip
    title = record(store, request(ASK, tools=None, model="claude-haiku-4-5",
                                  system="Write a title for this conversation."),
                   json.dumps(plain).encode(), headers=claude)  # fmt: skip
    probe = record(store, request([{"role": "user", "content": "quota"}], max_tokens=1),
                   json.dumps(plain).encode(), headers=claude)  # fmt: skip
    # a 1-token probe from any harness, tools or not, is a side call too
    other = record(store, request([{"role": "user", "content": "ping"}], max_tokens=1),
                   json.dumps(plain).encode())  # fmt: skip
    derive(store)

    assert turn_of(store, main)["kind"] == "main"
    for ex in (title, probe, other):
        turn = turn_of(store, ex)
        assert turn["kind"] == "side" and turn["thread"] is None
    session = turn_of(store, main)["session"]
    assert turn_of(store, title)["session"] == turn_of(store, probe)["session"] == session
    [s] = store.session_rows(ids=[session])
    assert s["turns"] == 3 and s["threads"] == 1
    assert s["title"] == "List the files"
    assert [t["kind"] for t in store.thread_rows(session)] == ["main"]
    [other_session] = store.session_rows(ids=[turn_of(store, other)["session"]])
    assert other_session["threads"] == 0
    assert_healthy(store)


def _answer(text: str, msg_id: str) -> bytes:
    return json.dumps({"id": msg_id, "type": "message", "role": "assistant",
                       "model": "claude-sonnet-4-6", "content": [{"type": "text", "text": text}],
                       "stop_reason": "end_turn",
                       "usage": {"input_tokens": 5, "output_tokens": 5}}).encode()  # fmt: skip


def test_no_evidence_continues_by_conversation(store: Store) -> None:
    first_q = {"role": "user", "content": "What is in src/?"}
    answer_events = [
        message_start(msg_id="msg_1"),
        block_start(0, {"type": "text", "text": ""}),
        delta(0, type="text_delta", text="Two "),
        delta(0, type="text_delta", text="modules."),
        block_stop(0),
        *message_end(),
    ]
    first = record(store, request([first_q], stream=True), sse(answer_events), response_headers=SSE)
    resent = {"role": "assistant", "content": [{"type": "text", "text": "Two modules."}]}
    second_q = {"role": "user", "content": "And in tests/?"}
    second = record(store, request([first_q, resent, second_q]), _answer("Many tests.", "msg_2"))
    unrelated = record(store, request([{"role": "user", "content": "Write a haiku."}]),
                       _answer("Leaves fall.", "msg_3"))  # fmt: skip
    derive(store)

    t1, t2, t3 = (turn_of(store, ex) for ex in (first, second, unrelated))
    assert t1["session"] == t2["session"] != t3["session"]
    assert t1["thread"] == t2["thread"] is not None
    assert len(store.session_rows()) == 2
    # the streamed answer and its resend are one node; the second turn adds only the question
    assert t1["response_nodes"][0] in store.node_chain(t2["request_node"])
    assert t2["input_nodes"] == [t2["request_node"]]
    assert request_parts(store, t2)[-1] == [{"type": "text", "text": "And in tests/?"}]
    [s] = store.session_rows(ids=[t1["session"]])
    assert s["turns"] == 2 and s["threads"] == 1 and s["harness"] == "unknown"
    assert_healthy(store)


def test_cost_is_unknown_for_an_unknown_model_and_priced_for_a_known_one(store: Store) -> None:
    usage = {"input_tokens": 100, "cache_read_input_tokens": 1000,
             "cache_creation_input_tokens": 200, "output_tokens": 50}  # fmt: skip

    def answer(model: str) -> bytes:
        return json.dumps({"id": "msg_c", "type": "message", "role": "assistant", "model": model,
                           "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                           "usage": usage}).encode()  # fmt: skip

    known = record(store, request(ASK, model="claude-sonnet-4-6"), answer("claude-sonnet-4-6"),
                   headers=[*JSON, ("x-tapewire-session", "priced")])  # fmt: skip
    unknown = record(store, request(ASK, model="claude-imaginary-9"), answer("claude-imaginary-9"),
                     headers=[*JSON, ("x-tapewire-session", "unpriced")])  # fmt: skip
    derive(store)

    price = json.loads(PACKAGED_PRICES)["models"]["claude-sonnet-4-6"]
    expected = (100 * price["input"] + 1000 * price["cache_read"]
                + 200 * price["cache_write"] + 50 * price["output"]) / 1_000_000  # fmt: skip
    assert expected == pytest.approx(0.0021)
    k, u = turn_of(store, known), turn_of(store, unknown)
    assert k["cost_usd"] == pytest.approx(expected, abs=1e-9)
    assert u["cost_usd"] is None
    assert u["input_tokens"] == 1300 and u["output_tokens"] == 50  # the tokens are still known
    [priced] = store.session_rows(ids=[k["session"]])
    [unpriced] = store.session_rows(ids=[u["session"]])
    assert priced["cost_usd"] == pytest.approx(expected, abs=1e-9)
    assert unpriced["cost_usd"] is None
