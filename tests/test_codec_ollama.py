"""The Ollama codec: /api/chat and /api/generate, streamed (NDJSON) and plain, per docs/api.md."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapewire.model import Message, Part, Turn
from tapewire.providers import ollama, parse_exchange

MODEL = "qwen3:8b"
STATS = {
    "total_duration": 4883583458,
    "load_duration": 1334875,
    "prompt_eval_count": 42,
    "prompt_eval_duration": 342546000,
    "eval_count": 17,
    "eval_duration": 4535599000,
}
WEATHER_CALL = {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}
TIME_CALL = {"function": {"name": "get_time", "arguments": {"tz": "Europe/Paris"}}}
PNG = b"\x89PNG\r\n\x1a\n not really a picture"
PNG_B64 = base64.b64encode(PNG).decode()
PNG_ID = "sha256:" + hashlib.sha256(PNG).hexdigest()


def ndjson(*objects: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(o) + b"\n" for o in objects)


def chat_chunk(**message: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "created_at": "2025-08-04T08:52:19.385406455-07:00",
        "message": {"role": "assistant", "content": "", **message},
        "done": False,
    }


def chat_done(**message: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "created_at": "2025-08-04T08:52:20.1Z",
        "message": {"role": "assistant", "content": "", **message},
        "done_reason": "stop",
        "done": True,
        **STATS,
    }


def gen_chunk(**fields: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "created_at": "2025-08-04T08:52:19Z", **fields, "done": False}


def gen_done(**fields: Any) -> dict[str, Any]:
    return {
        "model": "llama3.2",
        "created_at": "2025-08-04T19:22:45.499127Z",
        "response": "",
        **fields,
        "done": True,
        "done_reason": "stop",
        "context": [1, 2, 3],
        **STATS,
    }


# The same answer twice: as a stream of chunks and as one plain object.
CHAT_STREAM = ndjson(
    chat_chunk(thinking="The user wants"),
    chat_chunk(thinking=" the weather."),
    chat_chunk(content="Let me"),
    chat_chunk(content=" check."),
    chat_chunk(tool_calls=[WEATHER_CALL]),
    chat_chunk(tool_calls=[TIME_CALL]),
    chat_done(),
)
CHAT_PLAIN = orjson.dumps(
    chat_done(
        content="Let me check.",
        thinking="The user wants the weather.",
        tool_calls=[WEATHER_CALL, TIME_CALL],
    )
)
GEN_STREAM = ndjson(
    gen_chunk(response="", thinking="Rayleigh"),
    gen_chunk(response="", thinking=" scattering."),
    gen_chunk(response="The"),
    gen_chunk(response=" sky scatters blue light."),
    gen_done(),
)
GEN_PLAIN = orjson.dumps(
    gen_done(response="The sky scatters blue light.", thinking="Rayleigh scattering.")
)


def response(api: str, body: bytes, streamed: bool) -> Turn:
    turn = Turn(api=api)
    ollama.parse_response(body, turn, streamed)
    return turn


def request(api: str, body: dict[str, Any]) -> Turn:
    turn = Turn(api=api)
    ollama.parse_request(body, turn)
    return turn


def outcome(turn: Turn) -> dict[str, Any]:
    """Everything parse_response fills, in comparable form."""
    return {
        "outputs": [m.as_json() for m in turn.outputs],
        "usage": turn.usage.as_json(),
        "stop_reason": turn.stop_reason,
        "response_model": turn.response_model,
        "response_id": turn.response_id,
        "error": turn.error,
    }


def canonical(message: Message) -> dict[str, Any]:
    return {"role": message.role, "parts": [p.canonical() for p in message.parts]}


# ---- responses -----------------------------------------------------------------------------


def test_chat_stream_assembles_thinking_text_and_tool_calls() -> None:
    turn = response("ollama.chat", CHAT_STREAM, streamed=True)
    assert turn.error is None
    assert turn.response_model == MODEL
    assert turn.stop_reason == "stop"
    assert turn.usage.input_tokens == 42
    assert turn.usage.output_tokens == 17
    assert turn.usage.cache_read_tokens is None
    assert turn.usage.reasoning_tokens is None
    assert turn.output is not None
    assert turn.output.role == "assistant"
    assert turn.output.parts == [
        Part(type="thinking", text="The user wants the weather."),
        Part(type="text", text="Let me check."),
        Part(
            type="tool_call",
            id="call_0",
            name="get_weather",
            arguments=WEATHER_CALL["function"]["arguments"],
        ),
        Part(type="tool_call", id="call_1", name="get_time", arguments={"tz": "Europe/Paris"}),
    ]


def test_chat_streamed_and_plain_give_the_same_turn() -> None:
    streamed = response("ollama.chat", CHAT_STREAM, streamed=True)
    plain = response("ollama.chat", CHAT_PLAIN, streamed=False)
    assert outcome(streamed) == outcome(plain)


def test_generate_streamed_and_plain_give_the_same_turn() -> None:
    streamed = response("ollama.generate", GEN_STREAM, streamed=True)
    plain = response("ollama.generate", GEN_PLAIN, streamed=False)
    assert outcome(streamed) == outcome(plain)
    assert streamed.error is None
    assert streamed.output is not None
    assert streamed.output.parts == [
        Part(type="thinking", text="Rayleigh scattering."),
        Part(type="text", text="The sky scatters blue light."),
    ]
    assert streamed.usage.input_tokens == 42
    assert streamed.usage.output_tokens == 17
    assert streamed.stop_reason == "stop"
    assert streamed.response_model == "llama3.2"


def test_the_documented_examples_parse() -> None:
    """Bodies as docs/api.md shows them: a chat answer with no done_reason (older servers) and
    a tool call in a plain response."""
    doc_stream = ndjson(
        {
            "model": "llama3.2",
            "created_at": "2023-08-04T08:52:19.385406455-07:00",
            "message": {"role": "assistant", "content": "The", "images": None},
            "done": False,
        },
        {
            "model": "llama3.2",
            "created_at": "2023-08-04T19:22:45.499127Z",
            "done": True,
            "total_duration": 4883583458,
            "load_duration": 1334875,
            "prompt_eval_count": 26,
            "prompt_eval_duration": 342546000,
            "eval_count": 282,
            "eval_duration": 4535599000,
        },
    )
    turn = response("ollama.chat", doc_stream, streamed=True)
    assert turn.error is None
    assert turn.output == Message(role="assistant", parts=[Part(type="text", text="The")])
    assert (turn.usage.input_tokens, turn.usage.output_tokens, turn.stop_reason) == (26, 282, None)

    tool_plain = orjson.dumps(
        {
            "model": "llama3.2",
            "created_at": "2024-07-22T20:33:28.123648Z",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "function": {
                            "name": "get_current_weather",
                            "arguments": {"format": "celsius", "location": "Paris, FR"},
                        }
                    }
                ],
            },
            "done_reason": "stop",
            "done": True,
            "total_duration": 885095291,
            "prompt_eval_count": 122,
            "eval_count": 33,
        }
    )
    turn = response("ollama.chat", tool_plain, streamed=False)
    assert turn.output is not None
    assert [p.canonical() for p in turn.output.parts] == [
        {
            "type": "tool_call",
            "id": "call_0",
            "name": "get_current_weather",
            "arguments": {"format": "celsius", "location": "Paris, FR"},
        }
    ]


def test_load_a_model_response_is_an_empty_answer() -> None:
    body = orjson.dumps(
        {
            "model": "llama3.2",
            "created_at": "2024-09-12T21:17:29.110811Z",
            "message": {"role": "assistant", "content": ""},
            "done_reason": "load",
            "done": True,
        }
    )
    turn = response("ollama.chat", body, streamed=False)
    assert turn.error is None
    assert turn.output == Message(role="assistant", parts=[])
    assert turn.stop_reason == "load"
    assert turn.usage.input_tokens is None


def test_wire_ids_are_kept_and_index_dropped() -> None:
    call = {"id": "call_x1", "function": {"index": 0, "name": "ls", "arguments": {}}}
    turn = response("ollama.chat", ndjson(chat_chunk(tool_calls=[call]), chat_done()), True)
    assert turn.output is not None
    assert turn.output.parts == [Part(type="tool_call", id="call_x1", name="ls", arguments={})]


def test_arguments_sent_as_a_string_are_parsed() -> None:
    call = {"function": {"name": "ls", "arguments": '{"path": "/tmp"}'}}
    empty = {"function": {"name": "pwd"}}
    turn = response("ollama.chat", orjson.dumps(chat_done(tool_calls=[call, empty])), False)
    assert turn.output is not None
    assert [p.arguments for p in turn.output.parts] == [{"path": "/tmp"}, {}]


# ---- requests ------------------------------------------------------------------------------


def chat_request(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather and time in Paris?", "images": [PNG_B64]},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        **extra,
    }


def test_chat_request_fields() -> None:
    turn = request(
        "ollama.chat",
        chat_request(options={"temperature": 0}, format="json", think=True, keep_alive="5m"),
    )
    assert turn.error is None
    assert turn.model == MODEL
    assert turn.stream is True  # Ollama streams unless the request says stream: false
    assert turn.system == []
    assert turn.messages == [
        Message(role="system", parts=[Part(type="text", text="You are terse.")]),
        Message(
            role="user",
            parts=[
                Part(type="text", text="Weather and time in Paris?"),
                Part(type="image", data=PNG_ID),
            ],
        ),
    ]
    assert turn.tools == chat_request()["tools"]
    assert turn.params == {
        "options": {"temperature": 0},
        "format": "json",
        "think": True,
        "keep_alive": "5m",
    }
    assert PNG_B64 not in orjson.dumps([m.as_json() for m in turn.messages]).decode()


def test_stream_false_is_read() -> None:
    assert request("ollama.chat", chat_request(stream=False)).stream is False
    assert request("ollama.generate", {"model": "m", "prompt": "hi"}).stream is True


def test_echoed_assistant_message_matches_the_response() -> None:
    """The agent sends the answer back in its next request; both must have the same identity,
    and each tool result must answer the call it follows."""
    answer = response("ollama.chat", CHAT_STREAM, streamed=True).output
    assert answer is not None
    echoed = {
        "role": "assistant",
        "content": "Let me check.",
        "thinking": "The user wants the weather.",
        "tool_calls": [WEATHER_CALL, TIME_CALL],
    }
    body = chat_request()
    body["messages"] += [
        echoed,
        {"role": "tool", "content": "18 C, sunny", "tool_name": "get_weather"},
        {"role": "tool", "content": "14:05", "tool_name": "get_time"},
    ]
    turn = request("ollama.chat", body)
    assert canonical(turn.messages[2]) == canonical(answer)
    calls = [p for p in answer.parts if p.type == "tool_call"]
    results = [m.parts[0] for m in turn.messages[3:]]
    assert [m.role for m in turn.messages[3:]] == ["tool", "tool"]
    assert [r.id for r in results] == [c.id for c in calls] == ["call_0", "call_1"]
    assert results[0] == Part(
        type="tool_result",
        id="call_0",
        name="get_weather",
        content=[Part(type="text", text="18 C, sunny")],
    )
    assert results[0].is_error is None


def test_tool_result_positions_restart_after_each_assistant_message() -> None:
    body = {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "", "tool_calls": [WEATHER_CALL, TIME_CALL]},
            {"role": "tool", "content": "a"},
            {"role": "tool", "content": "b"},
            {"role": "assistant", "content": "", "tool_calls": [TIME_CALL]},
            {"role": "tool", "content": "c"},
            {"role": "tool", "content": "d", "tool_call_id": "call_wire"},
        ],
    }
    turn = request("ollama.chat", body)
    ids = [m.parts[0].id for m in turn.messages if m.role == "tool"]
    assert ids == ["call_0", "call_1", "call_0", "call_wire"]
    assert turn.messages[1].parts[0].id == "call_0"
    assert turn.messages[4].parts[0].id == "call_0"


def test_generate_request_fields() -> None:
    turn = request(
        "ollama.generate",
        {
            "model": "llava",
            "prompt": "What is in this picture?",
            "system": "Describe precisely.",
            "images": [PNG_B64],
            "suffix": "",
            "template": "{{ .Prompt }}",
            "context": [1, 2, 3],
            "raw": False,
            "stream": False,
            "format": "json",
            "options": {"seed": 123},
            "think": False,
        },
    )
    assert turn.error is None
    assert turn.model == "llava"
    assert turn.stream is False
    assert turn.system == [Part(type="text", text="Describe precisely.")]
    assert turn.messages == [
        Message(
            role="user",
            parts=[
                Part(type="text", text="What is in this picture?"),
                Part(type="image", data=PNG_ID),
            ],
        )
    ]
    assert turn.params == {  # `context` (token ids) stays in the raw body only
        "suffix": "",
        "template": "{{ .Prompt }}",
        "raw": False,
        "format": "json",
        "options": {"seed": 123},
        "think": False,
    }


def test_generate_without_prompt_has_no_message() -> None:
    turn = request("ollama.generate", {"model": "llama3.2", "keep_alive": 0})
    assert turn.messages == []
    assert turn.params == {"keep_alive": 0}


def test_odd_request_shapes_are_kept_not_dropped() -> None:
    turn = request(
        "ollama.chat",
        {
            "model": MODEL,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}], "images": [7]},
                "not a message",
                {"role": "assistant", "tool_calls": ["nonsense"]},
            ],
        },
    )
    assert turn.messages[0].parts == [
        Part(type="other", name="content", data=[{"type": "text", "text": "hi"}]),
        Part(type="other", name="image", data=7),
    ]
    assert turn.messages[1].parts == [Part(type="other", name="tool_call", data="nonsense")]
    assert turn.error == "request message is not a JSON object"

    turn = request("ollama.chat", {"model": MODEL, "messages": "hi"})
    assert turn.error == "request messages is not a list"


def test_an_image_that_is_not_base64_is_hashed_not_kept() -> None:
    turn = request("ollama.generate", {"model": "m", "prompt": "p", "images": ["not base64!"]})
    image = turn.messages[0].parts[1]
    assert image.type == "image"
    assert image.data == "sha256:" + hashlib.sha256(b"not base64!").hexdigest()


# ---- errors, truncation, garbage -----------------------------------------------------------


def test_error_line_mid_stream_keeps_what_came_before() -> None:
    body = ndjson(
        chat_chunk(content="Half an"), {"error": "an error was encountered while running the model"}
    )
    turn = response("ollama.chat", body, streamed=True)
    assert turn.error == "an error was encountered while running the model"
    assert turn.output == Message(role="assistant", parts=[Part(type="text", text="Half an")])
    assert turn.usage.input_tokens is None


def test_stream_without_done_is_partial() -> None:
    lines = CHAT_STREAM.splitlines(keepends=True)
    turn = response("ollama.chat", b"".join(lines[:5]), streamed=True)
    assert turn.error == "stream ended before done:true"
    assert turn.output is not None
    assert [p.type for p in turn.output.parts] == ["thinking", "text", "tool_call"]
    assert turn.stop_reason is None


def test_stream_cut_mid_line_is_partial() -> None:
    cut = CHAT_STREAM[: CHAT_STREAM.index(b'" check."') + 4]
    turn = response("ollama.chat", cut, streamed=True)
    assert turn.error is not None
    assert "response line 4 is not JSON" in turn.error
    assert turn.error.endswith("stream ended before done:true")
    assert turn.output is not None
    assert turn.output.parts[1] == Part(type="text", text="Let me")


def test_a_garbage_line_is_skipped_and_reported() -> None:
    lines = CHAT_STREAM.splitlines(keepends=True)
    body = b"".join([lines[0], b"{not json\n", b"[1, 2]\n", *lines[1:]])
    turn = response("ollama.chat", body, streamed=True)
    assert turn.error is not None
    assert "response line 2 is not JSON" in turn.error
    assert "response line 3 is not a JSON object" in turn.error
    clean = response("ollama.chat", CHAT_STREAM, streamed=True)
    assert [m.as_json() for m in turn.outputs] == [m.as_json() for m in clean.outputs]


def test_plain_bodies_that_are_not_an_answer() -> None:
    assert response("ollama.chat", b"", streamed=False).error == (
        "response body is empty; response lacks done:true"
    )
    turn = response("ollama.chat", b"[1, 2, 3]", streamed=False)
    assert turn.error == "response body is not a JSON object; response lacks done:true"
    assert turn.outputs == []
    turn = response("ollama.generate", b'{"response": "cut', streamed=False)
    assert turn.error is not None
    assert turn.error.startswith("response line 1 is not JSON")


def test_ndjson_recorded_without_content_type_is_still_read() -> None:
    turn = parse_exchange(
        "ollama.chat", orjson.dumps(chat_request()), None, CHAT_STREAM, None, None, 200
    )
    assert turn.error is None
    assert outcome(turn) == outcome(response("ollama.chat", CHAT_PLAIN, streamed=False))


@pytest.mark.parametrize(
    ("api", "stream_body", "plain_body"),
    [("ollama.chat", CHAT_STREAM, CHAT_PLAIN), ("ollama.generate", GEN_STREAM, GEN_PLAIN)],
)
def test_parse_exchange_with_real_content_types(
    api: str, stream_body: bytes, plain_body: bytes
) -> None:
    req = orjson.dumps({"model": MODEL, "prompt": "x", "messages": []})
    streamed = parse_exchange(api, req, None, stream_body, None, "application/x-ndjson", 200)
    plain = parse_exchange(api, req, None, plain_body, None, "application/json; charset=utf-8", 200)
    assert streamed.error is None
    assert outcome(streamed) == outcome(plain)


def test_http_error_body() -> None:
    turn = parse_exchange(
        "ollama.chat",
        orjson.dumps(chat_request()),
        None,
        b'{"error":"model \\"nope\\" not found, try pulling it first"}',
        None,
        "application/json; charset=utf-8",
        404,
    )
    assert turn.error == 'HTTP 404: model "nope" not found, try pulling it first'
    assert turn.outputs == []


# Garbage that looks enough like Ollama's JSON to reach deep into the codec.
_KEYS = st.sampled_from(
    [
        "model",
        "messages",
        "role",
        "content",
        "thinking",
        "tool_calls",
        "tool_call_id",
        "images",
        "function",
        "name",
        "arguments",
        "id",
        "prompt",
        "system",
        "stream",
        "message",
        "response",
        "done",
        "error",
        "done_reason",
        "eval_count",
    ]
)
_SCALARS = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=12)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=20,
)
_REQUESTS = st.binary(max_size=200) | _JSON.map(orjson.dumps)
_RESPONSES = st.binary(max_size=300) | st.lists(_JSON, max_size=5).map(
    lambda objs: b"\n".join(orjson.dumps(o) for o in objs)
)


@settings(max_examples=200, deadline=None)
@given(
    api=st.sampled_from(["ollama.chat", "ollama.generate"]),
    request_body=_REQUESTS,
    response_body=_RESPONSES,
    content_type=st.sampled_from([None, "application/x-ndjson", "application/json", "text/plain"]),
    status=st.sampled_from([None, 200, 500]),
)
def test_parse_exchange_never_raises_on_garbage(
    api: str,
    request_body: bytes,
    response_body: bytes,
    content_type: str | None,
    status: int | None,
) -> None:
    turn = parse_exchange(api, request_body, None, response_body, None, content_type, status)
    assert turn.api == api
    assert "not understood" not in (turn.error or "")  # the codec met no shape it choked on
    for message in [*turn.messages, *turn.outputs]:
        assert isinstance(message, Message)
