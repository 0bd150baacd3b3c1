"""The Anthropic Messages codec: requests, plain and streamed responses, a real recording."""

from __future__ import annotations

import base64
import hashlib
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from fakeprovider import RecordedTurn, load_recording
from tapewire.model import Part, Turn, Usage, header_value
from tapewire.providers import anthropic, parse_exchange
from tapewire.providers.sse import events

API = "anthropic.messages"
RECORDING = Path(__file__).parent / "fixtures" / "recordings" / "claude-20260727-019fa57e"
SSE = "text/event-stream"
JSON = "application/json"


# ---- helpers -------------------------------------------------------------------------------


def sse(*items: dict[str, Any]) -> bytes:
    """An SSE body as the API sends it: each event named after its data's type."""
    return b"".join(
        f"event: {item['type']}\ndata: ".encode() + orjson.dumps(item) + b"\n\n" for item in items
    )


def request(**overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}],
    }
    body.update(overrides)
    return orjson.dumps(body)


def exchange(
    response: bytes, content_type: str | None = SSE, req: bytes | None = None, status: int = 200
) -> Turn:
    return parse_exchange(API, req or request(), None, response, None, content_type, status)


def canon(parts: list[Part]) -> list[dict[str, Any]]:
    return [p.canonical() for p in parts]


def gunzip(data: bytes) -> bytes:
    out = b""
    while data:
        d = zlib.decompressobj(wbits=31)
        out += d.decompress(data)
        data = d.unused_data
    return out


def message_start(**usage: Any) -> dict[str, Any]:
    return {
        "type": "message_start",
        "message": {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage or {"input_tokens": 10, "output_tokens": 1},
        },
    }


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, **d: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": d}


def block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str, **usage: Any) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": usage,
    }


STOP = {"type": "message_stop"}
PING = {"type": "ping"}
SIGNATURE = "EqQBCkYIBxgCKkBsig=="
REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ"
USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 100,
    "cache_read_input_tokens": 2000,
    "cache_creation": {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 60},
    "output_tokens": 321,
    "output_tokens_details": {"thinking_tokens": 77},
}


# ---- the real recording --------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded() -> list[tuple[RecordedTurn, Turn]]:
    out = []
    for rec in load_recording(RECORDING):
        turn = parse_exchange(
            API, rec.request_body, None, rec.response_body, rec.content_encoding, SSE, rec.status
        )
        out.append((rec, turn))
    return out


def test_recording_every_turn_parses(recorded: list[tuple[RecordedTurn, Turn]]) -> None:
    assert len(recorded) == 17
    for rec, turn in recorded:
        assert rec.content_encoding == "gzip"
        assert turn.error is None, rec.name
        assert turn.model == "claude-sonnet-4-6"
        assert turn.response_model == "claude-sonnet-4-6"
        assert turn.response_id and turn.response_id.startswith("msg_")
        assert turn.stream is True
        assert turn.stop_reason in ("end_turn", "tool_use")
        assert turn.output is not None and turn.output.role == "assistant"
        assert turn.output.parts
        assert turn.messages and turn.messages[0].role == "user"
        assert "max_tokens" in turn.params and "stream" not in turn.params


def test_recording_tool_calls(recorded: list[tuple[RecordedTurn, Turn]]) -> None:
    outputs = [part for _, turn in recorded for out in turn.outputs for part in out.parts]
    calls = [p for p in outputs if p.type == "tool_call"]
    assert len(calls) == 25
    for call in calls:
        assert call.id and call.id.startswith("toolu_")
        assert isinstance(call.arguments, dict) and call.arguments
    for _, turn in recorded:
        has_calls = any(p.type == "tool_call" for out in turn.outputs for p in out.parts)
        assert has_calls == (turn.stop_reason == "tool_use")


def test_recording_request_shape(recorded: list[tuple[RecordedTurn, Turn]]) -> None:
    rec, turn = recorded[1]  # turn 09: the main thread's first call
    body = orjson.loads(rec.request_body)
    assert [p.text for p in turn.system] == [b["text"] for b in body["system"]]
    assert all(p.type == "text" for p in turn.system)
    assert turn.tools == body["tools"]
    assert set(turn.params) == {
        "max_tokens",
        "metadata",
        "thinking",
        "context_management",
        "output_config",
    }
    assert turn.params["thinking"] == body["thinking"]
    # The last turn resends the whole conversation: tool results answer the calls before them.
    last = recorded[-1][1]
    results = [p for m in last.messages for p in m.parts if p.type == "tool_result"]
    calls = {p.id for m in last.messages for p in m.parts if p.type == "tool_call"}
    assert results and {p.id for p in results} <= calls
    assert all(p.content is not None for p in results)
    assert any(p.is_error is True for p in results)


def test_recording_failed_tool_results(recorded: list[tuple[RecordedTurn, Turn]]) -> None:
    """Each request's new messages (past what its thread sent last time) hold the results of
    the calls before: five of them failed (three in one parallel batch, then two singles)."""
    seen: dict[str | None, int] = {}
    failed, unsaid = [], []
    for rec, turn in recorded:
        thread = header_value(rec.request_headers, "x-claude-code-agent-id")
        new = turn.messages[seen.get(thread, 0) :]
        seen[thread] = len(turn.messages)
        for part in (p for m in new for p in m.parts if p.type == "tool_result"):
            if part.is_error:
                failed.append(rec.name[-2:])
            elif part.is_error is None:
                unsaid.append(part.id)
    assert failed == ["20", "20", "20", "21", "22"]
    # Many results (the Skill tool's, for one) carry no is_error at all: None, not False.
    assert "toolu_0128Zap2gwdkcMk3xuiuokwx" in unsaid


def _final_delta_usage(rec: RecordedTurn) -> dict[str, Any]:
    usage: dict[str, Any] = {}
    for _, data in events(gunzip(rec.response_body)):
        event = orjson.loads(data)
        if event["type"] == "message_delta":
            usage = event["usage"]
    return usage


def test_recording_usage_is_the_final_message_delta(
    recorded: list[tuple[RecordedTurn, Turn]],
) -> None:
    for rec, turn in recorded:
        final = _final_delta_usage(rec)
        assert turn.usage.input_tokens == (
            final["input_tokens"]
            + final["cache_creation_input_tokens"]
            + final["cache_read_input_tokens"]
        )
        assert turn.usage.output_tokens == final["output_tokens"]
        assert turn.usage.cache_write_tokens == final["cache_creation_input_tokens"]
        assert turn.usage.cache_read_tokens == final["cache_read_input_tokens"]
    by_name = {rec.name[-2:]: turn.usage for rec, turn in recorded}
    # Read off the fixture by hand.
    assert by_name["08"] == Usage(526, 14, 0, 0, 0, None)  # no output_tokens_details
    assert by_name["09"] == Usage(3 + 33153 + 0, 97, 0, 33153, 33153, 38)
    assert by_name["10"] == Usage(2 + 2005 + 33153, 396, 33153, 2005, 2005, 248)
    assert by_name["17"] == Usage(3 + 20129 + 0, 181, 0, 20129, 0, 53)  # 5-minute cache writes


def test_recording_responses_equal_their_echo(
    recorded: list[tuple[RecordedTurn, Turn]],
) -> None:
    """Each response's output comes back, unchanged in content, in the thread's next request.

    Turn 13 and 21 call Edit, which Claude Code resends with the schema default
    replace_all: false filled in: the codec drops arguments equal to their declared default.
    """

    def history(turn: Turn) -> list[tuple[str, list[dict[str, Any]]]]:
        return [(m.role, canon(m.parts)) for m in turn.messages]

    checked = []
    for i, (rec, turn) in enumerate(recorded):
        thread = header_value(rec.request_headers, "x-claude-code-agent-id")
        n = len(turn.messages)
        later = [
            t
            for r, t in recorded[i + 1 :]
            if header_value(r.request_headers, "x-claude-code-agent-id") == thread
            and len(t.messages) > n
            and history(t)[:n] == history(turn)
        ]
        if not later:
            continue
        echoed = later[0].messages[n]
        assert echoed.role == "assistant"
        assert turn.output is not None
        assert canon(turn.output.parts) == canon(echoed.parts), rec.name
        checked.append(rec.name[-2:])
    # All but the title request (08), the subagent's last turn (18) and the session's last (24).
    assert checked == [
        "09",
        "10",
        "11",
        "12",
        "13",
        "14",
        "15",
        "16",
        "17",
        "19",
        "20",
        "21",
        "22",
        "23",
    ]


# ---- requests ------------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\nfake image bytes"
PDF = b"%PDF-1.4 fake"


def test_request_blocks() -> None:
    body = request(
        system=[
            {"type": "text", "text": "one"},
            {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}},
        ],
        stream=True,
        temperature=0.5,
        tool_choice={"type": "auto"},
        tools=[{"name": "get", "input_schema": {"type": "object"}}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/png",
                            "data": base64.b64encode(PNG).decode(),
                        },
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": base64.b64encode(PDF).decode(),
                        },
                        "title": "doc",
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": SIGNATURE},
                    {"type": "redacted_thinking", "data": REDACTED},
                    {
                        "type": "server_tool_use",
                        "id": "srvtoolu_1",
                        "name": "web_search",
                        "input": {"query": "q"},
                        "caller": {"type": "direct"},
                    },
                    {
                        "type": "web_search_tool_result",
                        "tool_use_id": "srvtoolu_1",
                        "content": [{"type": "web_search_result", "url": "https://x.test"}],
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get",
                        "input": {"a": 1},
                        "caller": {"type": "direct"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "plain"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "is_error": True,
                        "content": [
                            {"type": "text", "text": "a"},
                            {"type": "text", "text": "b"},
                            {
                                "type": "image",
                                "source": {"type": "url", "url": "https://x.test/b.png"},
                            },
                        ],
                    },
                    {"type": "tool_result", "tool_use_id": "toolu_3", "is_error": False},
                ],
            },
        ],
    )
    turn = exchange(b"", req=body)
    assert turn.error == "response body is empty"
    assert turn.model == "claude-sonnet-4-6"
    assert turn.stream is True
    assert turn.params == {"max_tokens": 1024, "temperature": 0.5, "tool_choice": {"type": "auto"}}
    assert turn.tools == [{"name": "get", "input_schema": {"type": "object"}}]
    assert canon(turn.system) == [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    user, assistant, results = turn.messages
    png = "sha256:" + hashlib.sha256(PNG).hexdigest()
    assert canon(user.parts) == [
        {"type": "text", "text": "look"},
        {"type": "image", "media_type": "image/png", "data": png},
        {"type": "image", "data": "https://x.test/a.png"},
        {
            "type": "other",
            "name": "document",
            "data": {
                "type": "document",
                "source": {
                    "type": "base64",
                    "media_type": "application/pdf",
                    "data": "sha256:" + hashlib.sha256(PDF).hexdigest(),
                },
                "title": "doc",
            },
        },
    ]
    assert assistant.parts[0] == Part(type="thinking", text="hmm", signature=SIGNATURE)
    assert canon(assistant.parts[1:]) == [
        {"type": "redacted_thinking", "data": REDACTED},
        {
            "type": "other",
            "name": "server_tool_use",
            "data": {"id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
        },
        {
            "type": "other",
            "name": "web_search_tool_result",
            "data": {
                "type": "web_search_tool_result",
                "tool_use_id": "srvtoolu_1",
                "content": [{"type": "web_search_result", "url": "https://x.test"}],
            },
        },
        {"type": "tool_call", "id": "toolu_1", "name": "get", "arguments": {"a": 1}},
    ]
    assert canon(results.parts) == [
        {"type": "tool_result", "id": "toolu_1", "content": [{"type": "text", "text": "plain"}]},
        {
            "type": "tool_result",
            "id": "toolu_2",
            "is_error": True,
            "content": [
                {"type": "text", "text": "a"},
                {"type": "text", "text": "b"},
                {"type": "image", "data": "https://x.test/b.png"},
            ],
        },
        {"type": "tool_result", "id": "toolu_3", "is_error": False, "content": []},
    ]
    assert results.parts[0].is_error is None


def test_string_content_equals_one_text_block() -> None:
    a = exchange(b"", req=request(system="be brief", messages=[{"role": "user", "content": "x"}]))
    b = exchange(
        b"",
        req=request(
            system=[{"type": "text", "text": "be brief"}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "x"}]}],
        ),
    )
    assert canon(a.system) == canon(b.system)
    assert canon(a.messages[0].parts) == canon(b.messages[0].parts)
    assert a.stream is False


def test_request_shapes_it_does_not_know() -> None:
    turn = exchange(b"", req=request(messages=[{"role": "user", "content": 5}, "junk"]))
    assert turn.error is not None
    assert "content of type int" in turn.error and "message 1 is not an object" in turn.error
    assert [m.parts[0].type for m in turn.messages] == ["other"]
    turn = exchange(b"", req=request(messages={"role": "user"}))
    assert turn.messages == [] and "not a list" in (turn.error or "")


# ---- responses: streamed == plain ----------------------------------------------------------

TOOLS = [
    {
        "name": "Edit",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "replace_all": {"type": "boolean", "default": False},
                "count": {"type": "integer", "default": 0},
            },
        },
    }
]


def plain_message(content: list[dict[str, Any]], stop_reason: str, usage: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
    )


def streamed_sample() -> bytes:
    start_usage = {k: v for k, v in USAGE.items() if k != "output_tokens_details"}
    return sse(
        message_start(**{**start_usage, "output_tokens": 1}),
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        PING,
        delta(0, type="thinking_delta", thinking="Let me "),
        delta(0, type="thinking_delta", thinking="think."),
        delta(0, type="signature_delta", signature=SIGNATURE),
        block_stop(0),
        block_start(1, {"type": "text", "text": ""}),
        delta(1, type="text_delta", text="Two "),
        delta(1, type="text_delta", text="calls."),
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": "toolu_a", "name": "Edit", "input": {}}),
        delta(2, type="input_json_delta", partial_json=""),
        delta(2, type="input_json_delta", partial_json='{"path": "a.t'),
        delta(2, type="input_json_delta", partial_json='xt", "replace_all": false}'),
        block_stop(2),
        block_start(
            3,
            {
                "type": "tool_use",
                "id": "toolu_b",
                "name": "Edit",
                "input": {},
                "caller": {"type": "direct"},
            },
        ),
        delta(3, type="input_json_delta", partial_json='{"path": "b.txt", "replace_all": true, '),
        delta(3, type="input_json_delta", partial_json='"count": false}'),
        block_stop(3),
        block_start(4, {"type": "redacted_thinking", "data": REDACTED}),
        block_stop(4),
        message_delta("tool_use", **USAGE),
        STOP,
    )


PLAIN_SAMPLE = plain_message(
    [
        {"type": "thinking", "thinking": "Let me think.", "signature": SIGNATURE},
        {"type": "text", "text": "Two calls.", "citations": None},
        {"type": "tool_use", "id": "toolu_a", "name": "Edit", "input": {"path": "a.txt"}},
        {
            "type": "tool_use",
            "id": "toolu_b",
            "name": "Edit",
            "input": {"path": "b.txt", "replace_all": True, "count": False},
        },
        {"type": "redacted_thinking", "data": REDACTED},
    ],
    "tool_use",
    USAGE,
)


def test_streamed_equals_plain() -> None:
    req = request(tools=TOOLS)
    streamed = exchange(streamed_sample(), SSE, req)
    plain = exchange(PLAIN_SAMPLE, JSON, req)
    assert streamed.error is None and plain.error is None
    assert streamed == plain
    assert streamed.response_id == "msg_01"
    assert streamed.response_model == "claude-sonnet-4-6"
    assert streamed.stop_reason == "tool_use"
    assert streamed.usage == Usage(
        input_tokens=2112,
        output_tokens=321,
        cache_read_tokens=2000,
        cache_write_tokens=100,
        cache_write_1h_tokens=60,
        reasoning_tokens=77,
    )
    assert streamed.output is not None
    parts = streamed.output.parts
    assert parts[0] == Part(type="thinking", text="Let me think.", signature=SIGNATURE)
    # replace_all: false is the schema default and goes; count: false is not 0 and stays.
    assert canon(parts[2:4]) == [
        {"type": "tool_call", "id": "toolu_a", "name": "Edit", "arguments": {"path": "a.txt"}},
        {
            "type": "tool_call",
            "id": "toolu_b",
            "name": "Edit",
            "arguments": {"path": "b.txt", "replace_all": True, "count": False},
        },
    ]
    assert parts[4] == Part(type="redacted_thinking", data=REDACTED)


def test_streamed_equals_plain_server_tools() -> None:
    search_result = {
        "type": "web_search_tool_result",
        "tool_use_id": "srvtoolu_1",
        "content": [{"type": "web_search_result", "url": "https://x.test", "title": "X"}],
    }
    streamed = sse(
        message_start(input_tokens=5, output_tokens=1),
        block_start(
            0, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
        ),
        delta(0, type="input_json_delta", partial_json='{"query": '),
        delta(0, type="input_json_delta", partial_json='"tapes"}'),
        block_stop(0),
        block_start(1, search_result),
        block_stop(1),
        block_start(2, {"type": "text", "text": "", "citations": None}),
        delta(2, type="text_delta", text="Found it."),
        delta(2, type="citations_delta", citation={"type": "web_search_result_location"}),
        block_stop(2),
        block_start(3, {"type": "tool_use", "id": "toolu_x", "name": "noop", "input": {}}),
        block_stop(3),  # a call without arguments sends no input_json_delta at all
        message_delta("end_turn", output_tokens=40, server_tool_use={"web_search_requests": 1}),
        STOP,
    )
    plain = plain_message(
        [
            {
                "type": "server_tool_use",
                "id": "srvtoolu_1",
                "name": "web_search",
                "input": {"query": "tapes"},
            },
            search_result,
            {"type": "text", "text": "Found it.", "citations": [{"type": "x"}]},
            {"type": "tool_use", "id": "toolu_x", "name": "noop", "input": {}},
        ],
        "end_turn",
        {"input_tokens": 5, "output_tokens": 40, "server_tool_use": {"web_search_requests": 1}},
    )
    a, b = exchange(streamed), exchange(plain, JSON)
    assert a.error is None and a == b
    assert a.output is not None
    assert canon(a.output.parts) == [
        {
            "type": "other",
            "name": "server_tool_use",
            "data": {"id": "srvtoolu_1", "name": "web_search", "input": {"query": "tapes"}},
        },
        {"type": "other", "name": "web_search_tool_result", "data": search_result},
        {"type": "text", "text": "Found it."},
        {"type": "tool_call", "id": "toolu_x", "name": "noop", "arguments": {}},
    ]
    assert a.usage == Usage(input_tokens=5, output_tokens=40)


def test_response_echoed_in_next_request_has_same_parts() -> None:
    turn = exchange(streamed_sample(), SSE, request(tools=TOOLS))
    echo = exchange(
        b"",
        req=request(
            tools=TOOLS,
            messages=[
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Let me think.", "signature": "other"},
                        {"type": "text", "text": "Two calls."},
                        {
                            "type": "tool_use",
                            "id": "toolu_a",
                            "name": "Edit",
                            "input": {"replace_all": False, "count": 0, "path": "a.txt"},
                        },
                        {
                            "type": "tool_use",
                            "id": "toolu_b",
                            "name": "Edit",
                            "input": {"path": "b.txt", "replace_all": True, "count": False},
                            "cache_control": {"type": "ephemeral"},
                        },
                        {"type": "redacted_thinking", "data": REDACTED},
                    ],
                },
            ],
        ),
    )
    assert turn.output is not None
    assert canon(turn.output.parts) == canon(echo.messages[1].parts)


# ---- responses: streams gone wrong ---------------------------------------------------------


def test_usage_taken_from_the_last_event_never_added() -> None:
    body = sse(
        message_start(
            input_tokens=10,
            cache_read_input_tokens=5,
            cache_creation_input_tokens=0,
            output_tokens=1,
        ),
        block_start(0, {"type": "text", "text": ""}),
        delta(0, type="text_delta", text="ok"),
        block_stop(0),
        # message_delta repeats the input counts and gives the final output count.
        message_delta("end_turn", input_tokens=10, cache_read_input_tokens=5, output_tokens=50),
        STOP,
    )
    turn = exchange(body)
    assert turn.usage == Usage(
        input_tokens=15, output_tokens=50, cache_read_tokens=5, cache_write_tokens=0
    )
    only_output = sse(
        message_start(input_tokens=7, output_tokens=1),
        message_delta("end_turn", output_tokens=9),
        STOP,
    )
    assert exchange(only_output).usage == Usage(input_tokens=7, output_tokens=9)


def test_truncated_stream_mid_tool_input() -> None:
    body = sse(
        message_start(input_tokens=10, output_tokens=1),
        block_start(0, {"type": "text", "text": ""}),
        delta(0, type="text_delta", text="Writing."),
        block_stop(0),
        block_start(1, {"type": "tool_use", "id": "toolu_1", "name": "Write", "input": {}}),
        delta(1, type="input_json_delta", partial_json='{"path": "a.txt", "conte'),
    )
    cut = body + b'event: content_block_delta\ndata: {"type":"content_block_del'
    turn = exchange(cut)
    assert turn.error is not None
    assert "malformed SSE data" in turn.error
    assert "tool_use toolu_1: input is not valid JSON" in turn.error
    assert "stream ended before message_stop" in turn.error
    assert turn.output is not None
    assert canon(turn.output.parts) == [
        {"type": "text", "text": "Writing."},
        {
            "type": "tool_call",
            "id": "toolu_1",
            "name": "Write",
            "arguments": '{"path": "a.txt", "conte',
        },
    ]
    assert turn.usage == Usage(input_tokens=10, output_tokens=1)
    assert turn.stop_reason is None


def test_stream_without_stops_still_assembles_input() -> None:
    body = sse(
        message_start(),
        block_start(0, {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}),
        delta(0, type="input_json_delta", partial_json='{"path": '),
        delta(0, type="input_json_delta", partial_json='"a"}'),
    )
    turn = exchange(body)
    assert turn.error == "stream ended before message_stop"
    assert turn.output is not None
    assert turn.output.parts[0].arguments == {"path": "a"}


def test_error_event_mid_stream() -> None:
    body = sse(
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        delta(0, type="text_delta", text="Part"),
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    turn = exchange(body)
    assert turn.error is not None
    assert turn.error.startswith("overloaded_error: Overloaded")
    assert turn.output is not None
    assert canon(turn.output.parts) == [{"type": "text", "text": "Part"}]


def test_malformed_data_line_is_skipped() -> None:
    good = sse(
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        delta(0, type="text_delta", text="a"),
    )
    rest = sse(
        delta(0, type="text_delta", text="b"),
        block_stop(0),
        message_delta("end_turn", output_tokens=3),
        STOP,
    )
    turn = exchange(good + b"event: content_block_delta\ndata: {not json\n\n" + rest)
    assert turn.error is not None
    assert turn.error.startswith("malformed SSE data in content_block_delta event")
    assert turn.output is not None
    assert canon(turn.output.parts) == [{"type": "text", "text": "ab"}]
    assert turn.stop_reason == "end_turn"


def test_interleaved_indexes() -> None:
    body = sse(
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        block_start(1, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
        delta(1, type="input_json_delta", partial_json='{"x":'),
        delta(0, type="text_delta", text="one "),
        block_start(2, {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}}),
        delta(2, type="input_json_delta", partial_json='{"y": 2}'),
        delta(1, type="input_json_delta", partial_json=" 1}"),
        delta(0, type="text_delta", text="two"),
        block_stop(2),
        block_stop(0),
        block_stop(1),
        message_delta("tool_use", output_tokens=9),
        STOP,
    )
    turn = exchange(body)
    assert turn.error is None
    assert turn.output is not None
    assert canon(turn.output.parts) == [
        {"type": "text", "text": "one two"},
        {"type": "tool_call", "id": "toolu_1", "name": "f", "arguments": {"x": 1}},
        {"type": "tool_call", "id": "toolu_2", "name": "g", "arguments": {"y": 2}},
    ]


def test_refusal() -> None:
    body = sse(
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        delta(0, type="text_delta", text="I can"),
        block_stop(0),
        message_delta("refusal", output_tokens=4),
        STOP,
    )
    turn = exchange(body)
    assert turn.error is None
    assert turn.stop_reason == "refusal"
    plain = exchange(
        plain_message(
            [{"type": "text", "text": "I can"}], "refusal", {"input_tokens": 10, "output_tokens": 4}
        ),
        JSON,
    )
    assert plain == turn


def test_unknown_block_and_event_types() -> None:
    body = sse(
        message_start(),
        {"type": "some_future_event", "index": 0},
        block_start(0, {"type": "future_block", "payload": 1, "cache_control": None}),
        delta(0, type="future_delta", x=1),
        block_stop(0),
        delta(7, type="text_delta", text="orphan"),
        message_delta("end_turn", output_tokens=2),
        STOP,
    )
    turn = exchange(body)
    assert turn.error == "content_block_delta for block 7 that never started"
    assert turn.output is not None
    assert canon(turn.output.parts) == [
        {"type": "other", "name": "future_block", "data": {"type": "future_block", "payload": 1}}
    ]


@pytest.mark.parametrize("content_type", [SSE, JSON])
def test_empty_body(content_type: str) -> None:
    turn = exchange(b"", content_type)
    assert turn.error == "response body is empty"
    assert turn.outputs == []
    assert turn.model == "claude-sonnet-4-6"


def test_stream_with_no_message_start() -> None:
    turn = exchange(b": keep-alive\n\n" + sse(PING))
    assert turn.error == "stream ended before message_start"
    assert turn.outputs == []


def test_error_bodies() -> None:
    overloaded = orjson.dumps(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    assert exchange(overloaded, JSON, status=529).error == "HTTP 529: overloaded_error: Overloaded"
    assert exchange(overloaded, JSON).error == "overloaded_error: Overloaded"


GARBAGE = [
    b"\x00\xff\xfe",
    b"[]",
    b"null",
    b'{"content": "not a list", "usage": [1]}',
    b'{"type": "message", "content": [1, null, {"type": 5}], "usage": {"input_tokens": "x"}}',
    b"data: []\n\ndata: 5\n\n",
    b'data: {"type": "content_block_start", "index": "0", "content_block": []}\n\n',
    b'data: {"type": "content_block_delta", "index": 0, "delta": null}\n\n',
    b'data: {"type": "message_start", "message": {"content": 1, "usage": null}}\n\n'
    b'data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}\n\n'
    b'data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}}\n\n'
    b'data: {"type": "message_delta", "delta": [], "usage": 3}\n\n'
    b'data: {"type": "error", "error": "boom"}\n\n',
    b"event: message_start\ndata: {",
]


@pytest.mark.parametrize("body", GARBAGE)
@pytest.mark.parametrize("content_type", [SSE, JSON, None])
def test_garbage_never_raises(body: bytes, content_type: str | None) -> None:
    turn = exchange(body, content_type)
    assert isinstance(turn, Turn)
    for req in (b"{", b"[]", orjson.dumps({"messages": [{"content": [{"type": "image"}]}]})):
        assert isinstance(parse_exchange(API, req, None, body, None, content_type, 200), Turn)


def test_codec_functions_directly() -> None:
    """The codec alone, without parse_exchange and without the request's tools."""
    turn = Turn(api=API)
    anthropic.parse_request({"model": "m", "messages": [], "stream": False}, turn)
    anthropic.parse_response(streamed_sample(), turn, streamed=True)
    assert turn.error is None and turn.output is not None and len(turn.output.parts) == 5
    # No tool schemas, no known defaults: the arguments stay as the model sent them.
    assert turn.output.parts[2].arguments == {"path": "a.txt", "replace_all": False}


# ---- the SSE reader ------------------------------------------------------------------------


def test_sse_reader() -> None:
    body = (
        b": comment\r\n"
        b"event: a\r\ndata: 1\r\ndata:2\r\n\r\n"
        b"event: no-data\n\n"
        b"id: 7\nretry: 10\ndata: x\n\n"
        b"data: last, not terminated"
    )
    assert list(events(body)) == [("a", "1\n2"), (None, "x"), (None, "last, not terminated")]
    assert list(events(b"")) == []
    assert list(events(b"event: only-a-name")) == []
    assert list(events(b"\xef\xbb\xbfdata: bom\r\r")) == [(None, "bom")]
