"""The OpenAI Chat Completions codec: requests, plain and streamed responses, and bad input."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion

from tapewire.model import Message, Part, Turn, Usage
from tapewire.providers import openai_chat, parse_exchange

COMPLETION_ID = "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
MODEL = "gpt-4o-2024-08-06"
HEADER = {
    "id": COMPLETION_ID,
    "created": 1741570283,
    "model": MODEL,
    "service_tier": "default",
    "system_fingerprint": "fp_eb9dce56a8",
}
USAGE = {
    "prompt_tokens": 1240,
    "completion_tokens": 57,
    "total_tokens": 1297,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
WEATHER_ARGS = '{"location": "Paris, France", "unit": "celsius"}'
TIME_ARGS = '{"timezone":"Europe/Paris"}'


# ---- wire builders -------------------------------------------------------------------------


def plain(*choices: dict[str, Any], usage: dict[str, Any] | None = USAGE) -> bytes:
    return orjson.dumps(
        {**HEADER, "object": "chat.completion", "choices": list(choices), "usage": usage}
    )


def choice(message: dict[str, Any], finish: str = "stop", index: int = 0) -> dict[str, Any]:
    full = {"role": "assistant", "content": None, "refusal": None, "annotations": [], **message}
    return {"index": index, "message": full, "logprobs": None, "finish_reason": finish}


def chunk(*choices: dict[str, Any], usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**HEADER, "object": "chat.completion.chunk", "choices": list(choices), "usage": usage}


def delta(finish: str | None = None, index: int = 0, **fields: Any) -> dict[str, Any]:
    return {"index": index, "delta": fields, "logprobs": None, "finish_reason": finish}


def sse(*chunks: dict[str, Any] | str, done: bool = True) -> bytes:
    lines = [f"data: {c if isinstance(c, str) else orjson.dumps(c).decode()}\n\n" for c in chunks]
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def response(body: bytes, streamed: bool) -> Turn:
    turn = Turn(api="openai.chat")
    openai_chat.parse_response(body, turn, streamed)
    return turn


def request(body: dict[str, Any]) -> Turn:
    turn = Turn(api="openai.chat")
    openai_chat.parse_request(body, turn)
    return turn


def canonical(parts: list[Part]) -> list[dict[str, Any]]:
    return [p.canonical() for p in parts]


def streamed_text(text: str, size: int = 7) -> list[dict[str, Any]]:
    """Content deltas as the API sends them: a role chunk with empty content, then fragments."""
    first = chunk(delta(role="assistant", content="", refusal=None))
    return [first] + [chunk(delta(content=text[i : i + size])) for i in range(0, len(text), size)]


# ---- equivalent plain and streamed samples -------------------------------------------------

TEXT = "The capital of France is Paris. It has been the capital since 987."

TEXT_PLAIN = plain(choice({"content": TEXT}))
TEXT_STREAM = sse(
    *streamed_text(TEXT),
    chunk(delta("stop")),
    chunk(usage=USAGE),  # stream_options.include_usage: choices [] and the usage
)

TOOLS_PLAIN = plain(
    choice(
        {
            "content": "Let me look both up.",
            "tool_calls": [
                {
                    "id": "call_weather1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": WEATHER_ARGS},
                },
                {
                    "id": "call_time2",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": TIME_ARGS},
                },
            ],
        },
        finish="tool_calls",
    )
)


def tool_deltas(index: int, call_id: str, name: str, arguments: str) -> list[dict[str, Any]]:
    start = {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    pieces = [arguments[i : i + 9] for i in range(0, len(arguments), 9)]
    rest = [{"index": index, "function": {"arguments": p}} for p in pieces]
    return [chunk(delta(tool_calls=[d])) for d in [start, *rest]]


TOOLS_STREAM = sse(
    *streamed_text("Let me look both up."),
    *tool_deltas(0, "call_weather1", "get_weather", WEATHER_ARGS),
    *tool_deltas(1, "call_time2", "get_time", TIME_ARGS),
    chunk(delta("tool_calls")),
    chunk(usage=USAGE),
)

N2_PLAIN = plain(
    choice({"content": "Heads."}, index=0),
    choice({"content": "Tails, after a long spin."}, finish="length", index=1),
)
N2_STREAM = sse(
    chunk(delta(role="assistant", content="", refusal=None, index=0)),
    chunk(delta(role="assistant", content="", refusal=None, index=1)),
    chunk(delta(content="Tails, ", index=1)),
    chunk(delta(content="Hea", index=0)),
    chunk(delta(content="ds.", index=0)),
    chunk(delta(content="after a long spin.", index=1)),
    chunk(delta("stop", index=0)),
    chunk(delta("length", index=1)),
    chunk(usage=USAGE),
)

REFUSAL = "I'm sorry, I can't help with that."
REFUSAL_PLAIN = plain(choice({"refusal": REFUSAL}))
REFUSAL_STREAM = sse(
    chunk(delta(role="assistant", content=None, refusal="")),
    chunk(delta(refusal="I'm sorry, ")),
    chunk(delta(refusal="I can't help with that.")),
    chunk(delta("stop")),
    chunk(usage=USAGE),
)

PAIRS = {
    "text": (TEXT_PLAIN, TEXT_STREAM),
    "tools": (TOOLS_PLAIN, TOOLS_STREAM),
    "n2": (N2_PLAIN, N2_STREAM),
    "refusal": (REFUSAL_PLAIN, REFUSAL_STREAM),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_streamed_and_plain_give_the_same_turn(name: str) -> None:
    plain_body, stream_body = PAIRS[name]
    from_plain, from_stream = response(plain_body, False), response(stream_body, True)
    assert from_plain.error is None
    assert from_stream.error is None
    assert from_stream == from_plain
    assert from_plain.response_id == COMPLETION_ID
    assert from_plain.response_model == MODEL
    assert from_plain.usage == Usage(
        input_tokens=1240, output_tokens=57, cache_read_tokens=1024, reasoning_tokens=0
    )


def test_text_turn() -> None:
    turn = response(TEXT_STREAM, True)
    assert turn.outputs == [Message("assistant", [Part(type="text", text=TEXT)])]
    assert turn.stop_reason == "stop"


def test_parallel_tool_calls_follow_the_text_in_index_order() -> None:
    turn = response(TOOLS_STREAM, True)
    assert turn.stop_reason == "tool_calls"
    assert turn.output is not None
    assert canonical(turn.output.parts) == [
        {"type": "text", "text": "Let me look both up."},
        {
            "type": "tool_call",
            "id": "call_weather1",
            "name": "get_weather",
            "arguments": {"location": "Paris, France", "unit": "celsius"},
        },
        {
            "type": "tool_call",
            "id": "call_time2",
            "name": "get_time",
            "arguments": {"timezone": "Europe/Paris"},
        },
    ]


def test_interleaved_tool_call_deltas_are_assembled_by_index() -> None:
    first = tool_deltas(0, "call_a", "get_weather", WEATHER_ARGS)
    second = tool_deltas(1, "call_b", "get_time", TIME_ARGS)
    mixed = [c for pair in zip(first, second, strict=False) for c in pair]
    mixed += first[len(second) :] + second[len(first) :]
    turn = response(sse(*mixed, chunk(delta("tool_calls"))), True)
    assert turn.error is None
    assert turn.output is not None
    assert [(p.id, p.name, p.arguments) for p in turn.output.parts] == [
        ("call_a", "get_weather", orjson.loads(WEATHER_ARGS)),
        ("call_b", "get_time", orjson.loads(TIME_ARGS)),
    ]


def test_n2_gives_one_output_per_choice_and_the_stop_reason_of_choice_0() -> None:
    turn = response(N2_STREAM, True)
    assert [m.parts for m in turn.outputs] == [
        [Part(type="text", text="Heads.")],
        [Part(type="text", text="Tails, after a long spin.")],
    ]
    assert turn.stop_reason == "stop"


def test_plain_choices_are_put_in_index_order() -> None:
    turn = response(plain(choice({"content": "B"}, index=1), choice({"content": "A"})), False)
    assert [m.parts[0].text for m in turn.outputs] == ["A", "B"]


def test_refusal_is_a_refusal_part() -> None:
    turn = response(REFUSAL_PLAIN, False)
    assert turn.outputs == [Message("assistant", [Part(type="refusal", text=REFUSAL)])]


def test_legacy_function_call_streamed_and_plain() -> None:
    plain_body = plain(
        choice({"function_call": {"name": "get_time", "arguments": TIME_ARGS}}, "function_call")
    )
    stream_body = sse(
        chunk(
            delta(
                role="assistant", content=None, function_call={"name": "get_time", "arguments": ""}
            )
        ),
        chunk(delta(function_call={"arguments": TIME_ARGS[:10]})),
        chunk(delta(function_call={"arguments": TIME_ARGS[10:]})),
        chunk(delta("function_call")),
    )
    from_plain, from_stream = response(plain_body, False), response(stream_body, True)
    assert from_stream.outputs == from_plain.outputs
    assert from_plain.outputs[0].parts == [
        Part(type="tool_call", name="get_time", arguments={"timezone": "Europe/Paris"})
    ]


def test_reasoning_text_from_compatible_servers_is_thinking() -> None:
    plain_body = plain(choice({"reasoning_content": "Think.", "content": "Answer."}))
    stream_body = sse(
        chunk(delta(role="assistant", reasoning_content="Thi")),
        chunk(delta(reasoning_content="nk.")),
        chunk(delta(content="Answer.")),
        chunk(delta("stop")),
        chunk(usage=USAGE),
    )
    from_plain, from_stream = response(plain_body, False), response(stream_body, True)
    assert from_stream == from_plain
    assert from_plain.outputs[0].parts == [
        Part(type="thinking", text="Think."),
        Part(type="text", text="Answer."),
    ]


# ---- usage ---------------------------------------------------------------------------------


def test_usage_mapping() -> None:
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920},
        "completion_tokens_details": {"reasoning_tokens": 192},
    }
    turn = response(plain(choice({"content": "ok"}), usage=usage), False)
    assert turn.usage == Usage(
        input_tokens=2006,
        output_tokens=300,
        cache_read_tokens=1920,
        cache_write_tokens=None,
        reasoning_tokens=192,
    )


def test_usage_without_details_leaves_them_unknown() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    turn = response(plain(choice({"content": "ok"}), usage=usage), False)
    assert turn.usage == Usage(input_tokens=12, output_tokens=3)


def test_stream_without_include_usage_has_no_usage() -> None:
    turn = response(sse(*streamed_text("hi"), chunk(delta("stop"))), True)
    assert turn.error is None
    assert turn.usage == Usage()


# ---- requests ------------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a place.",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
                "required": ["location"],
            },
            "strict": True,
        },
    }
]


def test_request_messages_tools_and_params() -> None:
    png_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use celsius."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://x.test/a.jpg", "detail": "low"},
                    },
                    {"type": "image_url", "image_url": {"url": png_url}},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": WEATHER_ARGS},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
            {"role": "function", "name": "get_time", "content": "12:00"},
        ],
        "tools": TOOLS,
        "tool_choice": "auto",
        "temperature": 0.2,
        "n": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 512,
        "reasoning_effort": "low",
        "response_format": {"type": "text"},
    }
    turn = request(body)
    assert turn.error is None
    assert turn.model == "gpt-4o"
    assert turn.stream is True
    assert turn.tools == TOOLS
    assert turn.system == []
    assert turn.params == {
        "tool_choice": "auto",
        "temperature": 0.2,
        "n": 1,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 512,
        "reasoning_effort": "low",
        "response_format": {"type": "text"},
    }
    png_digest = "sha256:" + hashlib.sha256(PNG).hexdigest()
    audio_digest = "sha256:" + hashlib.sha256(base64.b64decode("UklGRg==")).hexdigest()
    assert turn.messages == [
        Message("system", [Part(type="text", text="You are terse.")]),
        Message("developer", [Part(type="text", text="Use celsius.")]),
        Message(
            "user",
            [
                Part(type="text", text="What is in these?"),
                Part(type="image", data="https://x.test/a.jpg"),
                Part(type="image", media_type="image/png", data=png_digest),
                Part(
                    type="other",
                    name="input_audio",
                    data={
                        "type": "input_audio",
                        "input_audio": {"data": audio_digest, "format": "wav"},
                    },
                ),
            ],
        ),
        Message(
            "assistant",
            [
                Part(type="text", text="Checking."),
                Part(
                    type="tool_call",
                    id="call_1",
                    name="get_weather",
                    arguments={"location": "Paris, France", "unit": "celsius"},
                ),
            ],
        ),
        Message(
            "tool",
            [
                Part(
                    type="tool_result",
                    id="call_1",
                    content=[Part(type="text", text="18C and sunny")],
                    is_error=None,
                )
            ],
        ),
        Message(
            "tool",
            [
                Part(
                    type="tool_result",
                    name="get_time",
                    content=[Part(type="text", text="12:00")],
                )
            ],
        ),
    ]


def test_string_content_equals_one_text_part() -> None:
    as_string = request({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    as_list = request(
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    )
    assert as_string.messages == as_list.messages


def test_tool_result_with_text_part_list() -> None:
    turn = request(
        {
            "model": "m",
            "messages": [
                {
                    "role": "tool",
                    "tool_call_id": "call_9",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
        }
    )
    assert turn.messages[0].parts[0].content == [
        Part(type="text", text="a"),
        Part(type="text", text="b"),
    ]


def test_file_part_keeps_no_inline_bytes() -> None:
    pdf = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.7 tiny").decode()
    block = {"type": "file", "file": {"filename": "a.pdf", "file_data": pdf}}
    turn = request({"model": "m", "messages": [{"role": "user", "content": [block]}]})
    part = turn.messages[0].parts[0]
    assert part.type == "other"
    assert part.name == "file"
    assert part.data["file"] == {
        "filename": "a.pdf",
        "file_data": "sha256:" + hashlib.sha256(b"%PDF-1.7 tiny").hexdigest(),
    }


def test_unknown_content_part_is_other() -> None:
    block = {"type": "video_url", "video_url": {"url": "https://x.test/v.mp4"}}
    turn = request({"model": "m", "messages": [{"role": "user", "content": [block]}]})
    assert turn.messages[0].parts == [Part(type="other", name="video_url", data=block)]


def test_tool_call_arguments_normalised() -> None:
    def args(arguments: str) -> Any:
        call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
        turn = request({"model": "m", "messages": [{"role": "assistant", "tool_calls": [call]}]})
        return turn.messages[0].parts[0].arguments

    assert args('{ "a" :  1 }') == args('{"a":1}') == {"a": 1}
    assert args("") == {}
    assert args('{"a": 1') == '{"a": 1'  # not JSON: kept as sent


def test_request_without_messages_is_an_error_not_an_exception() -> None:
    turn = request({"model": "m", "messages": "hi"})
    assert turn.error == "request has no messages list"
    turn = request({"model": "m", "messages": [3, {"role": "user", "content": "ok"}]})
    assert turn.error == "messages[0] is not an object"
    assert turn.messages == [Message("user", [Part(type="text", text="ok")])]


# ---- the echo: what the agent sends back next turn -----------------------------------------


@pytest.mark.parametrize("name", ["text", "tools", "refusal"])
def test_sdk_echo_gives_the_same_parts_as_the_output(name: str) -> None:
    """openai-python sends a returned message back as model_dump(exclude_unset=True)."""
    plain_body, stream_body = PAIRS[name]
    completion = ChatCompletion.model_validate_json(plain_body)
    echoed = completion.choices[0].message.model_dump(exclude_unset=True, mode="json")
    turn = request({"model": MODEL, "messages": [{"role": "user", "content": "q"}, echoed]})
    assert turn.error is None
    out = response(stream_body, True).output
    assert out is not None
    assert turn.messages[1].role == "assistant"
    assert canonical(turn.messages[1].parts) == canonical(out.parts)


def test_hand_written_echo_with_empty_content_matches_null_content() -> None:
    """Agents that build the dict themselves often send content "" next to tool calls."""
    calls = orjson.loads(TOOLS_PLAIN)["choices"][0]["message"]["tool_calls"]
    echoed = {"role": "assistant", "content": "", "tool_calls": calls}
    turn = request({"model": MODEL, "messages": [echoed]})
    out = response(plain(choice({"content": None, "tool_calls": calls}, "tool_calls")), False)
    assert out.output is not None
    assert canonical(turn.messages[0].parts) == canonical(out.output.parts)


# ---- trouble: partial turns with errors, never exceptions ----------------------------------


def test_missing_done_keeps_what_arrived() -> None:
    body = sse(*streamed_text(TEXT), chunk(delta("stop")), done=False)
    turn = response(body, True)
    assert turn.error == "stream ended before [DONE]"
    assert turn.outputs == [Message("assistant", [Part(type="text", text=TEXT)])]
    assert turn.stop_reason == "stop"


def test_truncated_stream_at_every_byte_never_raises() -> None:
    whole_done = TOOLS_STREAM.rindex(b"[DONE]") + len(b"[DONE]")
    for cut in range(whole_done):  # any cut before the [DONE] line is whole
        turn = response(TOOLS_STREAM[:cut], True)
        assert turn.error is not None
        assert "stream ended before [DONE]" in turn.error


def test_stream_cut_mid_tool_call_keeps_the_partial_arguments() -> None:
    cut = TOOLS_STREAM.rindex(b"data:", 0, TOOLS_STREAM.index(b"Europ"))  # before that delta
    turn = response(TOOLS_STREAM[:cut], True)
    assert turn.error is not None
    assert turn.output is not None
    weather, time_call = turn.output.parts[1:]
    assert weather.arguments == orjson.loads(WEATHER_ARGS)
    assert time_call.name == "get_time"
    assert time_call.arguments == '{"timezon'  # not JSON yet: the string as far as it got


def test_malformed_chunk_is_reported_and_skipped() -> None:
    chunks = streamed_text("Hello there")
    body = sse(
        chunks[0], chunks[1], '{"id": "chatcmpl-x", "choices": [', *chunks[2:], chunk(delta("stop"))
    )
    turn = response(body, True)
    assert turn.error is not None
    assert turn.error.startswith("malformed chunk:")
    assert turn.output == Message("assistant", [Part(type="text", text="Hello there")])


def test_error_chunk_sets_the_error() -> None:
    error = {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    body = sse(*streamed_text("Partial ans"), error, done=False)
    turn = response(body, True)
    assert turn.error == (
        "stream error: server_error: The server had an error while processing your request.; "
        "stream ended before [DONE]"
    )
    assert turn.output == Message("assistant", [Part(type="text", text="Partial ans")])


def test_crlf_and_comment_lines_are_tolerated() -> None:
    body = b": keep-alive\r\n\r\n" + TEXT_STREAM.replace(b"\n", b"\r\n")
    assert response(body, True) == response(TEXT_STREAM, True)


def test_plain_error_body_with_status_200() -> None:
    body = b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}'
    turn = response(body, False)
    assert turn.error == "requests: Rate limit reached"
    assert turn.outputs == []


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[1, 2]", b'{"choices": 5}', b'{"choices": [1, {"index": "x"}]}'],
)
def test_garbage_plain_bodies(body: bytes) -> None:
    turn = response(body, False)
    assert turn.error is not None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"data: \n\n",
        b"data: 42\n\n",
        b"data: {}\n\ndata: [DONE]\n\n",
        b'data: {"choices": [{"delta": {"tool_calls": [7, {"function": 3}]}}]}\n\n',
        b'data: {"choices": [{"index": 0, "delta": {"content": 5, "tool_calls": {}}}]}\n\n',
        b"\xff\xfe\x00garbage\n\n",
    ],
)
def test_garbage_streams_never_raise(body: bytes) -> None:
    response(body, True)


def exchange(
    request_body: bytes, response_body: bytes, content_type: str, status: int = 200
) -> Turn:
    return parse_exchange(
        "openai.chat", request_body, None, response_body, None, content_type, status
    )


def test_parse_exchange_end_to_end() -> None:
    req = orjson.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}], "stream": True}
    )
    turn = exchange(req, TEXT_STREAM, "text/event-stream; charset=utf-8")
    assert turn.error is None
    assert turn.stream is True
    assert turn.output == Message("assistant", [Part(type="text", text=TEXT)])
    assert exchange(req, TEXT_PLAIN, "application/json").outputs == turn.outputs


def test_parse_exchange_http_error() -> None:
    body = b'{"error": {"message": "Invalid model", "type": "invalid_request_error", "code": null}}'
    turn = exchange(b'{"model": "nope", "messages": []}', body, "application/json", 404)
    assert turn.error == "HTTP 404: invalid_request_error: Invalid model"


@settings(max_examples=200, deadline=None)
@given(
    request_body=st.binary(max_size=200),
    response_body=st.one_of(
        st.binary(max_size=300),
        st.sampled_from([TEXT_STREAM, TOOLS_STREAM, N2_STREAM]).flatmap(
            lambda s: st.integers(0, len(s)).map(lambda n: s[:n])
        ),
    ),
    content_type=st.sampled_from(["text/event-stream", "application/json", None]),
)
def test_parse_exchange_never_raises_on_garbage(
    request_body: bytes, response_body: bytes, content_type: str | None
) -> None:
    exchange(request_body, response_body, content_type or "")
