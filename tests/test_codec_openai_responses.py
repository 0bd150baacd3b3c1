"""The OpenAI Responses codec: requests, plain and streamed responses, chaining, bad input."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tapewire.model import Message, Part, Turn, Usage
from tapewire.providers import parse_exchange
from tapewire.providers.openai_responses import parse_request, parse_response

MODEL = "gpt-5-codex"
SNAPSHOT = "gpt-5-codex-2025-09-15"

# ---- wire samples ---------------------------------------------------------------------------


def usage(
    inputs: int = 1200, cached: int = 1024, outputs: int = 150, reasoning: int = 64
) -> dict[str, Any]:
    return {
        "input_tokens": inputs,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": outputs,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": inputs + outputs,
    }


def reasoning(n: int, *summaries: str) -> dict[str, Any]:
    return {
        "id": f"rs_{n:04d}",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": s} for s in summaries],
        "encrypted_content": f"gAAAAB-opaque-{n}",
    }


def message(n: int, text: str) -> dict[str, Any]:
    return {
        "id": f"msg_{n:04d}",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def refusal_message(n: int, text: str) -> dict[str, Any]:
    return {
        "id": f"msg_{n:04d}",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "refusal", "refusal": text}],
    }


def function_call(n: int, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": f"fc_{n:04d}",
        "type": "function_call",
        "status": "completed",
        "call_id": f"call_{n:04d}",
        "name": name,
        "arguments": arguments,
    }


def custom_call(n: int, name: str, text: str) -> dict[str, Any]:
    return {
        "id": f"ctc_{n:04d}",
        "type": "custom_tool_call",
        "status": "completed",
        "call_id": f"call_{n:04d}",
        "name": name,
        "input": text,
    }


def response(
    output: list[dict[str, Any]],
    *,
    status: str = "completed",
    error: dict[str, Any] | None = None,
    incomplete: str | None = None,
    use: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": "resp_0001",
        "object": "response",
        "created_at": 1764000000,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "model": SNAPSHOT,
        "output": output,
        "parallel_tool_calls": True,
        "usage": use if use is not None else usage(),
    }


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


def chunks(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class Streamer:
    """Writes the event stream the server sends for a Response, item by item."""

    def __init__(self) -> None:
        self.seq = 0
        self.out: list[bytes] = []

    def emit(self, kind: str, **data: Any) -> None:
        self.out.append(sse(kind, {**data, "sequence_number": self.seq}))
        self.seq += 1

    def item(self, i: int, item: dict[str, Any], *, done: bool = True) -> None:
        at = {"output_index": i, "item_id": item.get("id")}
        kind = item["type"]
        if kind == "message":
            self.emit(
                "response.output_item.added",
                output_index=i,
                item={**item, "status": "in_progress", "content": []},
            )
            for j, part in enumerate(item["content"]):
                self.content_part(at, j, part)
        elif kind == "reasoning":
            self.emit(
                "response.output_item.added",
                output_index=i,
                item={**item, "summary": [], "encrypted_content": "gAAAAB-cut"},
            )
            for j, s in enumerate(item["summary"]):
                self.emit(
                    "response.reasoning_summary_part.added",
                    **at,
                    summary_index=j,
                    part={"type": "summary_text", "text": ""},
                )
                for d in chunks(s["text"]):
                    self.emit(
                        "response.reasoning_summary_text.delta", **at, summary_index=j, delta=d
                    )
                self.emit(
                    "response.reasoning_summary_text.done", **at, summary_index=j, text=s["text"]
                )
                self.emit("response.reasoning_summary_part.done", **at, summary_index=j, part=s)
        elif kind == "function_call":
            added = {**item, "status": "in_progress", "arguments": ""}
            self.emit("response.output_item.added", output_index=i, item=added)
            for d in chunks(item["arguments"]):
                self.emit("response.function_call_arguments.delta", **at, delta=d)
            self.emit("response.function_call_arguments.done", **at, arguments=item["arguments"])
        elif kind == "custom_tool_call":
            added = {**item, "status": "in_progress", "input": ""}
            self.emit("response.output_item.added", output_index=i, item=added)
            for d in chunks(item["input"]):
                self.emit("response.custom_tool_call_input.delta", **at, delta=d)
            self.emit("response.custom_tool_call_input.done", **at, input=item["input"])
        else:
            self.emit("response.output_item.added", output_index=i, item=item)
        if done:
            self.emit("response.output_item.done", output_index=i, item=item)

    def content_part(self, at: dict[str, Any], j: int, part: dict[str, Any]) -> None:
        if part["type"] == "output_text":
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            self.emit("response.content_part.added", **at, content_index=j, part=empty)
            for d in chunks(part["text"]):
                self.emit("response.output_text.delta", **at, content_index=j, delta=d, logprobs=[])
            self.emit("response.output_text.done", **at, content_index=j, text=part["text"])
        else:
            empty = {"type": "refusal", "refusal": ""}
            self.emit("response.content_part.added", **at, content_index=j, part=empty)
            for d in chunks(part["refusal"]):
                self.emit("response.refusal.delta", **at, content_index=j, delta=d)
            self.emit("response.refusal.done", **at, content_index=j, refusal=part["refusal"])
        self.emit("response.content_part.done", **at, content_index=j, part=part)


def stream_of(resp: dict[str, Any], *, final_output: bool = True, item_done: bool = True) -> bytes:
    """The SSE body of `resp`; final_output=False sends the terminal Response with an empty
    output, as the ChatGPT backend does; item_done=False leaves out output_item.done."""
    s = Streamer()
    start = {**resp, "status": "in_progress", "output": [], "usage": None, "error": None}
    start["incomplete_details"] = None
    s.emit("response.created", response=start)
    s.emit("response.in_progress", response=start)
    for i, item in enumerate(resp["output"]):
        s.item(i, item, done=item_done)
    terminal = {"completed": "response.completed", "failed": "response.failed"}
    kind = terminal.get(resp["status"], "response.incomplete")
    s.emit(kind, response=resp if final_output else {**resp, "output": []})
    return b"".join(s.out)


def parsed_response(body: bytes, streamed: bool) -> Turn:
    turn = Turn(api="openai.responses")
    parse_response(body, turn, streamed)
    return turn


def parsed_request(body: dict[str, Any]) -> Turn:
    turn = Turn(api="openai.responses")
    parse_request(body, turn)
    return turn


def summary(turn: Turn) -> dict[str, Any]:
    """Everything a response gives a Turn, signatures included."""
    return {
        "outputs": [m.as_json() for m in turn.outputs],
        "usage": turn.usage.as_json(),
        "stop_reason": turn.stop_reason,
        "response_id": turn.response_id,
        "response_model": turn.response_model,
        "error": turn.error,
    }


def canonical(message: Message) -> dict[str, Any]:
    return {"role": message.role, "parts": [p.canonical() for p in message.parts]}


READ = '{"path": "src/app.py"}'
OUTPUTS: dict[str, list[dict[str, Any]]] = {
    "text": [message(1, "Done. The tests pass now.")],
    "reasoning+function_call": [
        reasoning(1, "**Reading the file**\n\nI should open app.py.", "**Plan**"),
        function_call(2, "read_file", READ),
    ],
    "custom_tool_call": [
        reasoning(1, "Patching."),
        custom_call(2, "apply_patch", "*** Begin Patch\n*** Update File: a.py\n-x\n+y\n*** End"),
    ],
    "two_function_calls": [
        function_call(1, "shell", '{"command": ["ls", "-la"], "workdir": "/repo"}'),
        function_call(2, "shell", '{"command": ["git", "status"]}'),
    ],
    "message+call": [
        reasoning(1),
        message(2, "Let me look."),
        function_call(3, "read_file", READ),
    ],
    "refusal": [refusal_message(1, "I can't help with that.")],
}

# ---- streamed == plain ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_streamed_and_plain_give_the_same_turn(name: str) -> None:
    resp = response(OUTPUTS[name])
    plain = parsed_response(orjson.dumps(resp), streamed=False)
    assert plain.error is None
    assert plain.outputs
    for body in (
        stream_of(resp),
        stream_of(resp, final_output=False),
        stream_of(resp, final_output=False, item_done=False),
    ):
        streamed = parsed_response(body, streamed=True)
        if b"output_item.done" in body:
            assert summary(streamed) == summary(plain)
        else:
            # assembled from deltas alone: only the cut encrypted_content of .added, which is
            # no part of identity
            assert {**summary(streamed), "outputs": None} == {**summary(plain), "outputs": None}
            assert [canonical(m) for m in streamed.outputs] == [canonical(m) for m in plain.outputs]


def test_plain_response_parts_usage_and_ids() -> None:
    turn = parsed_response(orjson.dumps(response(OUTPUTS["message+call"])), streamed=False)
    assert turn.response_id == "resp_0001"
    assert turn.response_model == SNAPSHOT
    assert turn.stop_reason == "completed"
    assert turn.usage == Usage(
        input_tokens=1200,
        output_tokens=150,
        cache_read_tokens=1024,
        cache_write_tokens=None,
        reasoning_tokens=64,
    )
    assert turn.output == Message(
        role="assistant",
        parts=[
            Part(type="thinking", text="", signature="gAAAAB-opaque-1"),
            Part(type="text", text="Let me look."),
            Part(
                type="tool_call", id="call_0003", name="read_file", arguments={"path": "src/app.py"}
            ),
        ],
    )


def test_reasoning_summaries_join_and_custom_input_stays_raw() -> None:
    turn = parsed_response(orjson.dumps(response(OUTPUTS["custom_tool_call"])), streamed=False)
    assert turn.output is not None
    thinking, call = turn.output.parts
    assert thinking == Part(type="thinking", text="Patching.", signature="gAAAAB-opaque-1")
    assert call.arguments == OUTPUTS["custom_tool_call"][1]["input"]
    turn = parsed_response(orjson.dumps(response(OUTPUTS["reasoning+function_call"])), False)
    assert turn.output is not None
    assert turn.output.parts[0].text == "**Reading the file**\n\nI should open app.py.\n**Plan**"


def test_stream_prefers_the_done_item_over_the_added_one() -> None:
    streamed = parsed_response(stream_of(response(OUTPUTS["custom_tool_call"])), streamed=True)
    assert streamed.output is not None
    assert streamed.output.parts[0].signature == "gAAAAB-opaque-1"  # not the cut "gAAAAB-cut"


def test_stream_items_that_disagree_with_the_final_output_are_reported() -> None:
    s = Streamer()
    s.item(0, message(1, "streamed text"))
    s.emit("response.completed", response=response([message(1, "final text")]))
    turn = parsed_response(b"".join(s.out), streamed=True)
    assert turn.error == "streamed output items differ from the final response.output"
    assert turn.output == Message("assistant", [Part(type="text", text="final text")])


def test_usage_cache_write_and_missing_details() -> None:
    use = usage()
    use["input_tokens_details"]["cache_write_tokens"] = 100
    turn = parsed_response(orjson.dumps(response([], use=use)), streamed=False)
    assert turn.usage.cache_write_tokens == 100
    turn = parsed_response(
        orjson.dumps(response([], use={"input_tokens": 5, "output_tokens": 2})), False
    )
    assert turn.usage == Usage(input_tokens=5, output_tokens=2)
    assert turn.outputs == []


# ---- failed, incomplete, truncated, errors -----------------------------------------------------


def test_failed_response_plain_and_streamed() -> None:
    resp = response(
        [reasoning(1, "Thinking")],
        status="failed",
        error={"code": "server_error", "message": "The model failed to generate a response."},
    )
    plain = parsed_response(orjson.dumps(resp), streamed=False)
    streamed = parsed_response(stream_of(resp), streamed=True)
    assert plain.stop_reason == "failed"
    assert plain.error == "server_error: The model failed to generate a response."
    assert summary(streamed) == summary(plain)
    assert b"event: response.failed" in stream_of(resp)


def test_incomplete_response_plain_and_streamed() -> None:
    resp = response(
        [reasoning(1, "Long"), message(2, "Partial ans")],
        status="incomplete",
        incomplete="max_output_tokens",
    )
    plain = parsed_response(orjson.dumps(resp), streamed=False)
    streamed = parsed_response(stream_of(resp), streamed=True)
    assert plain.stop_reason == "incomplete:max_output_tokens"
    assert plain.error is None
    assert summary(streamed) == summary(plain)
    assert b"event: response.incomplete" in stream_of(resp)


def test_truncated_stream_keeps_what_arrived() -> None:
    body = stream_of(response([reasoning(1, "Reading"), message(2, "Hello there, world")]))
    cut = body[: body.index(b'"delta":"ere,')]  # mid-event: that event's JSON is cut too
    turn = parsed_response(cut, streamed=True)
    assert turn.error == (
        "1 malformed SSE event(s) skipped; stream ended before response.completed"
    )
    assert turn.response_id == "resp_0001"
    assert turn.response_model == SNAPSHOT
    assert turn.stop_reason is None
    assert turn.usage == Usage()
    assert turn.output is not None
    assert [p.canonical() for p in turn.output.parts] == [
        {"type": "thinking", "text": "Reading"},
        {"type": "text", "text": "Hello th"},
    ]


def test_truncated_function_call_arguments_stay_a_string() -> None:
    body = stream_of(response([function_call(1, "shell", '{"command": ["ls"]}')]))
    cut = body[: body.rindex(b"event: response.function_call_arguments.delta")]
    turn = parsed_response(cut, streamed=True)
    assert turn.error == "stream ended before response.completed"
    assert turn.output == Message(
        "assistant",
        [Part(type="tool_call", id="call_0001", name="shell", arguments='{"command": ["ls')],
    )


def test_error_event_mid_stream() -> None:
    s = Streamer()
    s.emit("response.created", response={"id": "resp_9", "model": SNAPSHOT, "output": []})
    s.item(0, message(1, "Half"), done=False)
    s.emit("error", code="server_error", message="An error occurred", param=None)
    turn = parsed_response(b"".join(s.out), streamed=True)
    assert turn.error == "server_error: An error occurred; stream ended before response.completed"
    assert turn.response_id == "resp_9"
    assert turn.output == Message(role="assistant", parts=[Part(type="text", text="Half")])


def test_nested_error_event_and_malformed_lines() -> None:
    body = (
        b": keep-alive\r\n\r\n"
        + b"data: {not json\r\n\r\n"
        + b"event: error\ndata: "
        + orjson.dumps({"type": "error", "error": {"type": "rate_limit", "message": "slow down"}})
        + b"\n\n"
        + b"data: [1, 2]\n\n"
    )
    turn = parsed_response(body, streamed=True)
    assert turn.error == (
        "rate_limit: slow down; 2 malformed SSE event(s) skipped; "
        "stream ended before response.completed"
    )
    assert turn.outputs == []


def test_unknown_events_and_items_are_kept_or_ignored() -> None:
    search = {
        "id": "ws_1",
        "type": "web_search_call",
        "status": "completed",
        "action": {"type": "search", "query": "tapewire"},
    }
    resp = response([search, message(2, "Found it.")])
    body = stream_of(resp).replace(
        b"event: response.in_progress",
        b'event: response.web_search_call.searching\ndata: {"type":'
        b'"response.web_search_call.searching","output_index":0}\n\nevent: response.in_progress',
    )
    plain = parsed_response(orjson.dumps(resp), streamed=False)
    assert summary(parsed_response(body, streamed=True)) == summary(plain)
    assert plain.output is not None
    assert plain.output.parts[0] == Part(
        type="other",
        name="web_search_call",
        data={"type": "web_search_call", "action": {"type": "search", "query": "tapewire"}},
    )


def test_terminal_event_without_a_status() -> None:
    s = Streamer()
    s.item(0, message(1, "cut short"))
    s.emit("response.incomplete", response={"id": "resp_2"})
    turn = parsed_response(b"".join(s.out), streamed=True)
    assert turn.stop_reason == "incomplete"
    assert turn.response_id == "resp_2"
    assert turn.error is None
    assert turn.output == Message("assistant", [Part(type="text", text="cut short")])


def test_plain_error_body_and_garbage() -> None:
    turn = parsed_response(b'{"error": {"code": "bad", "message": "no"}}', streamed=False)
    assert turn.error == "bad: no"
    assert parsed_response(b"<html>", streamed=False).error is not None
    assert parsed_response(b"[]", streamed=False).error == "response body is not a JSON object"
    assert parsed_response(b"", streamed=True).error == "stream ended before response.completed"


# ---- requests ---------------------------------------------------------------------------------

DEVELOPER = {
    "type": "message",
    "role": "developer",
    "content": [{"type": "input_text", "text": "<permissions>workspace-write</permissions>"}],
}
USER = {
    "type": "message",
    "role": "user",
    "content": [{"type": "input_text", "text": "Fix the failing test in src/app.py"}],
}
TOOLS = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file",
        "strict": False,
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
    {"type": "custom", "name": "apply_patch", "description": "Patch files", "format": {}},
]


def request(items: list[dict[str, Any]] | str, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "instructions": "You are Codex, a coding agent.",
        "input": items,
        "tools": TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "019a-session",
        **extra,
    }


def as_resent(item: dict[str, Any]) -> dict[str, Any]:
    """An output item as Codex puts it back in `input`: no id, no status, no annotations."""
    out = {k: v for k, v in item.items() if k not in ("id", "status")}
    if out["type"] == "message":
        out["content"] = [
            {k: v for k, v in c.items() if k not in ("annotations", "logprobs")}
            for c in out["content"]
        ]
    return out


def test_request_fields() -> None:
    turn = parsed_request(request([DEVELOPER, USER]))
    assert turn.model == MODEL
    assert turn.stream is True
    assert turn.system == [Part(type="text", text="You are Codex, a coding agent.")]
    assert turn.tools == TOOLS
    assert turn.previous_response_id is None
    assert turn.params == {
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "019a-session",
    }
    assert turn.messages == [
        Message(role="developer", parts=[Part(type="text", text=DEVELOPER["content"][0]["text"])]),
        Message(role="user", parts=[Part(type="text", text=USER["content"][0]["text"])]),
    ]


def test_string_input_is_one_user_message_like_a_text_list() -> None:
    a = parsed_request({"model": MODEL, "input": "hi"})
    b = parsed_request({"model": MODEL, "input": [{"role": "user", "content": "hi"}]})
    c = parsed_request(
        {
            "model": MODEL,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        }
    )
    assert a.messages == b.messages == c.messages == [Message("user", [Part("text", text="hi")])]
    assert a.stream is False
    assert a.system == []


@pytest.mark.parametrize("name", sorted(OUTPUTS))
@pytest.mark.parametrize("resend", [as_resent, copy.deepcopy])
def test_chaining_resent_output_equals_the_response_message(name: str, resend: Any) -> None:
    first_request = request([DEVELOPER, USER])
    first = parsed_request(first_request)
    resp = response(OUTPUTS[name])
    parse_response(stream_of(resp), first, streamed=True)
    assert first.output is not None

    outputs = [
        {"type": "function_call_output", "call_id": item["call_id"], "output": "file contents"}
        for item in OUTPUTS[name]
        if item["type"] in ("function_call", "custom_tool_call")
    ]
    second_items = [DEVELOPER, USER, *map(resend, resp["output"]), *outputs]
    second = parsed_request(request(second_items))
    assert second.messages[:2] == first.messages
    assert canonical(second.messages[2]) == canonical(first.output)
    if outputs:
        assert second.messages[3] == Message(
            role="tool",
            parts=[
                Part(
                    type="tool_result",
                    id=o["call_id"],
                    content=[Part(type="text", text="file contents")],
                )
                for o in outputs
            ],
        )
    assert len(second.messages) == 3 + bool(outputs)


def test_previous_response_id_with_only_the_tool_output() -> None:
    body = request(
        [{"type": "function_call_output", "call_id": "call_0002", "output": "ok"}],
        previous_response_id="resp_0001",
    )
    turn = parsed_request(body)
    assert turn.previous_response_id == "resp_0001"
    assert "previous_response_id" not in turn.params
    assert turn.messages == [
        Message(
            role="tool",
            parts=[Part(type="tool_result", id="call_0002", content=[Part("text", text="ok")])],
        )
    ]


def test_input_grouping_images_files_and_other_items() -> None:
    shell = {
        "type": "local_shell_call",
        "id": "lsh_1",
        "status": "completed",
        "call_id": "call_9",
        "action": {"type": "exec", "command": ["ls"], "env": {}},
    }
    items = [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is in this picture?"},
                {
                    "type": "input_image",
                    "detail": "auto",
                    "image_url": "data:image/png;base64,aGVsbG8=",
                },
                {"type": "input_image", "detail": "low", "image_url": "https://example.com/a.jpg"},
                {"type": "input_image", "detail": "auto", "file_id": "file-abc"},
                {"type": "input_file", "filename": "a.pdf", "file_data": "aGVsbG8="},
            ],
        },
        {"type": "reasoning", "summary": [], "encrypted_content": "gAAA"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A"}]},
        shell,
        {"type": "custom_tool_call", "call_id": "call_1", "name": "apply_patch", "input": "p"},
        {"type": "custom_tool_call_output", "call_id": "call_1", "output": "Done!"},
        {
            "type": "function_call_output",
            "call_id": "call_2",
            "output": [
                {"type": "input_text", "text": "screenshot:"},
                {"type": "input_image", "image_url": "data:image/jpeg;base64,aGVsbG8="},
            ],
        },
        {"type": "computer_call_output", "call_id": "call_3", "status": "completed", "output": {}},
        {"type": "message", "role": "user", "content": "thanks"},
        {"type": "item_reference", "id": "msg_123"},
    ]
    turn = parsed_request({"model": MODEL, "input": items})
    hello = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert turn.messages == [
        Message(
            role="user",
            parts=[
                Part(type="text", text="What is in this picture?"),
                Part(type="image", media_type="image/png", data=hello),
                Part(type="image", data="https://example.com/a.jpg"),
                Part(type="image", data="file-abc"),
                Part(
                    type="other",
                    name="input_file",
                    data={"type": "input_file", "filename": "a.pdf", "file_data": hello},
                ),
            ],
        ),
        Message(
            role="assistant",
            parts=[
                Part(type="thinking", text="", signature="gAAA"),
                Part(type="text", text="A"),
                Part(
                    type="other",
                    name="local_shell_call",
                    data={k: v for k, v in shell.items() if k not in ("id", "status")},
                ),
                Part(type="tool_call", id="call_1", name="apply_patch", arguments="p"),
            ],
        ),
        Message(
            role="tool",
            parts=[
                Part(type="tool_result", id="call_1", content=[Part("text", text="Done!")]),
                Part(
                    type="tool_result",
                    id="call_2",
                    content=[
                        Part("text", text="screenshot:"),
                        Part("image", media_type="image/jpeg", data=hello),
                    ],
                ),
                Part(
                    type="other",
                    name="computer_call_output",
                    data={"type": "computer_call_output", "call_id": "call_3", "output": {}},
                ),
            ],
        ),
        Message(role="user", parts=[Part(type="text", text="thanks")]),
        Message(
            role="user",
            parts=[
                Part(
                    type="other",
                    name="item_reference",
                    data={"type": "item_reference", "id": "msg_123"},
                )
            ],
        ),
    ]
    assert "aGVsbG8=" not in orjson.dumps([m.as_json() for m in turn.messages]).decode()


def test_bad_request_shapes_do_not_raise() -> None:
    turn = parsed_request({"model": 5, "input": 7, "tools": "x", "stream": "yes"})
    assert turn.error == "request input is a int, not a string or a list"
    assert turn.model is None
    assert turn.tools == []
    assert turn.stream is False
    turn = parsed_request(
        {"input": [1, None, {"type": "function_call", "arguments": {"a": 1}}, {"content": 5}]}
    )
    assert turn.messages[2] == Message("assistant", [Part(type="tool_call", arguments={"a": 1})])


# ---- through parse_exchange --------------------------------------------------------------------


def test_parse_exchange_streamed() -> None:
    body = orjson.dumps(request([DEVELOPER, USER]))
    resp = stream_of(response(OUTPUTS["reasoning+function_call"]))
    turn = parse_exchange(
        "openai.responses", body, None, resp, None, "text/event-stream; charset=utf-8", 200
    )
    assert turn.error is None
    assert turn.model == MODEL
    assert turn.output is not None
    assert [p.type for p in turn.output.parts] == ["thinking", "tool_call"]


def test_parse_exchange_http_error() -> None:
    error = b'{"error": {"type": "invalid_request_error", "message": "bad input"}}'
    turn = parse_exchange(
        "openai.responses", b'{"model": "m", "input": "x"}', None, error, None, None, 400
    )
    assert turn.error == "HTTP 400: invalid_request_error: bad input"
    assert turn.outputs == []


GARBAGE = [
    b"",
    b"{",
    b"[]",
    b"null",
    b'{"output": 5, "usage": [], "status": 3, "error": "x"}',
    b'{"output": [1, {"type": "message", "content": 5}, {"type": "reasoning", "summary": 3}]}',
    b'data: {"type": "response.output_text.delta", "output_index": "x"}\n\n',
    b'data: {"type": "response.output_item.added", "output_index": 0, "item": {"type": "message",'
    b' "content": 5}}\n\ndata: {"type": "response.output_text.delta", "output_index": 0,'
    b' "content_index": -3, "delta": 7}\n\ndata: {"type": "response.reasoning_summary_text.delta",'
    b' "output_index": 0, "summary_index": "a", "delta": "x"}\n\n',
    b'data: {"type": "response.completed", "response": [1]}\n\n',
    b'data: {"type": "response.completed", "response": {"output": "x", "usage": 4}}\n\n',
    b"event: error\ndata: 5\n\n",
    b"\xff\xfe\x00garbage",
]


@pytest.mark.parametrize("body", GARBAGE)
@pytest.mark.parametrize("ctype", ["application/json", "text/event-stream", None])
def test_parse_exchange_never_raises_on_garbage(body: bytes, ctype: str | None) -> None:
    turn = parse_exchange("openai.responses", body, None, body, None, ctype, 200)
    assert isinstance(turn, Turn)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=4000))
def test_fuzzed_streams_never_raise(noise: bytes, cut: int) -> None:
    body = stream_of(response(OUTPUTS["message+call"]))
    mangled = body[:cut] + noise + body[cut:]
    turn = Turn(api="openai.responses")
    parse_response(mangled, turn, streamed=True)
    parse_response(noise, turn, streamed=False)
