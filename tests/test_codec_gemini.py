"""The Gemini codec: requests, plain responses and both stream framings, read into one Turn."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tapewire.model import Part, Turn, Usage
from tapewire.providers import api_for, parse_exchange

PATH = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM_PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
API = "gemini.generate"

REQUEST: dict[str, Any] = {
    "contents": [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {
            "role": "model",
            "parts": [
                {"functionCall": {"id": "c1", "name": "get_weather", "args": {"city": "Paris"}},
                 "thoughtSignature": "c2lnMQ=="},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"id": "c1", "name": "get_weather",
                                      "response": {"output": "18C, cloudy"}}},
            ],
        },
    ],
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object"}}]}],
    "generationConfig": {"thinkingConfig": {"includeThoughts": True}, "maxOutputTokens": 256},
}  # fmt: skip

USAGE = {
    "promptTokenCount": 40,
    "candidatesTokenCount": 9,
    "thoughtsTokenCount": 5,
    "cachedContentTokenCount": 16,
    "totalTokenCount": 54,
}
PLAIN: dict[str, Any] = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "The user wants weather.", "thought": True},
                    {"text": "It is 18C and cloudy.", "thoughtSignature": "c2lnMg=="},
                    {"functionCall": {"id": "c2", "name": "get_time", "args": {}}},
                ],
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": USAGE,
    "modelVersion": "gemini-2.5-flash",
    "responseId": "resp-1",
}
# The same answer as a stream delivers it: text in pieces, usage and finish reason at the end.
CHUNKS: list[dict[str, Any]] = [
    {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "The user", "thought": True}]}, "index": 0}],
     "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"},
    {"candidates": [{"content": {"role": "model", "parts": [
        {"text": " wants weather.", "thought": True}]}, "index": 0}],
     "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "It is 18C"}]},
                     "index": 0}],
     "usageMetadata": {"promptTokenCount": 40, "totalTokenCount": 40},
     "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"},
    {"candidates": [{"content": {"role": "model", "parts": [
        {"text": " and cloudy.", "thoughtSignature": "c2lnMg=="},
        {"functionCall": {"id": "c2", "name": "get_time", "args": {}}}]},
        "finishReason": "STOP", "index": 0}],
     "usageMetadata": USAGE, "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"},
]  # fmt: skip


def sse(chunks: list[dict[str, Any]]) -> bytes:
    """As Google frames `alt=sse`: `data: ` lines, events separated by CRLF CRLF."""
    return b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)


def json_array(chunks: list[dict[str, Any]]) -> bytes:
    """As Google frames a stream without `alt=sse`: one JSON array, written object by object."""
    return b"[" + b"\r\n,".join(json.dumps(c, indent=2).encode() for c in chunks) + b"]"


def parse(response: bytes, ctype: str, path: str = PATH, request: bytes | None = None) -> Turn:
    body = request if request is not None else json.dumps(REQUEST).encode()
    return parse_exchange(API, body, None, response, None, ctype, 200, path=path)


def test_api_for() -> None:
    assert api_for("POST", PATH + "?key=x") == API
    assert api_for("POST", STREAM_PATH + "?alt=sse") == API
    assert api_for("GET", PATH) is None


def test_request() -> None:
    turn = parse(json.dumps(PLAIN).encode(), "application/json")
    assert turn.error is None
    assert turn.model == "gemini-2.5-flash"
    assert turn.stream is False
    assert turn.system == [Part(type="text", text="Be brief.")]
    assert [m.role for m in turn.messages] == ["user", "assistant", "user"]
    call = turn.messages[1].parts[0]
    assert (call.type, call.id, call.name, call.arguments) == (
        "tool_call", "c1", "get_weather", {"city": "Paris"},
    )  # fmt: skip
    result = turn.messages[2].parts[0]
    assert (result.type, result.id, result.name, result.is_error) == (
        "tool_result", "c1", "get_weather", None,
    )  # fmt: skip
    assert result.content == [Part(type="text", text="18C, cloudy")]
    assert turn.tools == REQUEST["tools"]
    assert turn.params == {"generationConfig": REQUEST["generationConfig"]}


def test_calls_without_ids_pair_with_their_responses_by_name_and_order() -> None:
    """The API's ids are optional (most answers have none): the k-th response of a name answers
    the k-th call of it, and both get `name#k`, in the answer and where the next request
    resends them, so that derivation links each call to its result."""

    def call(name: str, city: str) -> dict[str, Any]:
        return {"functionCall": {"name": name, "args": {"city": city}}}

    def result(name: str, out: str) -> dict[str, Any]:
        return {"functionResponse": {"name": name, "response": {"output": out}}}

    calls = [call("get_weather", "Paris"), call("get_time", "Paris"), call("get_weather", "Oslo")]
    answer = {"candidates": [{"content": {"role": "model", "parts": calls},
                              "finishReason": "STOP"}]}  # fmt: skip
    first = parse(json.dumps(answer).encode(), "application/json")
    asked = [(p.id, p.name) for p in first.outputs[0].parts]
    assert asked == [("get_weather#0", "get_weather"), ("get_time#0", "get_time"),
                     ("get_weather#1", "get_weather")]  # fmt: skip
    resent = {"contents": [
        {"role": "user", "parts": [{"text": "Weather and time?"}]},
        {"role": "model", "parts": calls},
        {"role": "user", "parts": [result("get_weather", "18C"), result("get_time", "09:00"),
                                   result("get_weather", "-3C")]},
    ]}  # fmt: skip
    second = parse(
        json.dumps(PLAIN).encode(), "application/json", request=json.dumps(resent).encode()
    )
    assert [p.id for p in second.messages[1].parts] == [i for i, _ in asked]
    answered = {p.id: p.content[0].text for p in second.messages[2].parts}
    assert answered == {"get_weather#0": "18C", "get_time#0": "09:00", "get_weather#1": "-3C"}
    # An id the API did send is kept as it is.
    assert turn_ids(parse(json.dumps(PLAIN).encode(), "application/json")) == ["c2"]


def turn_ids(turn: Turn) -> list[str | None]:
    return [p.id for m in turn.outputs for p in m.parts if p.type == "tool_call"]


def test_plain_response() -> None:
    turn = parse(json.dumps(PLAIN).encode(), "application/json; charset=UTF-8")
    assert turn.error is None
    assert turn.response_model == "gemini-2.5-flash"
    assert turn.response_id == "resp-1"
    assert turn.stop_reason == "STOP"
    assert turn.usage == Usage(
        input_tokens=40, output_tokens=14, cache_read_tokens=16, reasoning_tokens=5
    )
    assert turn.output is not None
    assert turn.output.role == "assistant"
    assert turn.output.parts == [
        Part(type="thinking", text="The user wants weather."),
        Part(type="text", text="It is 18C and cloudy."),
        Part(type="tool_call", id="c2", name="get_time", arguments={}),
    ]


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (sse(CHUNKS), "text/event-stream"),
        (sse(CHUNKS).replace(b"\r\n", b"\n"), "text/event-stream"),
        (json_array(CHUNKS), "application/json; charset=UTF-8"),
    ],
    ids=["sse-crlf", "sse-lf", "json-array"],
)
def test_streamed_forms_give_the_plain_turn(body: bytes, ctype: str) -> None:
    plain = parse(json.dumps(PLAIN).encode(), "application/json")
    streamed = parse(body, ctype, path=STREAM_PATH + "?alt=sse")
    assert streamed.error is None
    assert streamed.stream is True
    streamed.stream = False
    assert streamed == plain


def test_snake_case_request() -> None:
    """The REST examples write snake_case; the API reads both."""
    request = {
        "system_instruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"parts": [{"text": "hi"}, {"inline_data": {"mime_type": "image/png",
                                                                 "data": "iVBORw0KGgo="}}]}],
        "generation_config": {"temperature": 0},
    }  # fmt: skip
    turn = parse(json.dumps(PLAIN).encode(), "application/json",
                 request=json.dumps(request).encode())  # fmt: skip
    assert turn.system == [Part(type="text", text="Be brief.")]
    assert turn.messages[0].role == "user"  # a role may be left out of a single turn
    text, image = turn.messages[0].parts
    assert text == Part(type="text", text="hi")
    assert (image.type, image.media_type) == ("image", "image/png")
    assert str(image.data).startswith("sha256:")
    assert turn.params == {"generation_config": {"temperature": 0}}


def test_function_error_result() -> None:
    request = {"contents": [{"role": "user", "parts": [
        {"functionResponse": {"name": "run", "response": {"error": "exit 1"}}}]}]}  # fmt: skip
    turn = parse(json.dumps(PLAIN).encode(), "application/json",
                 request=json.dumps(request).encode())  # fmt: skip
    result = turn.messages[0].parts[0]
    assert (result.id, result.name, result.is_error) == ("run#0", "run", True)
    assert result.content == [Part(type="text", text="exit 1")]


def test_cut_short_streams_keep_what_arrived() -> None:
    for body in (sse(CHUNKS[:3]), json_array(CHUNKS[:3])[:-1]):
        turn = parse(body, "text/event-stream", path=STREAM_PATH)
        assert turn.output is not None
        assert turn.output.parts[-1] == Part(type="text", text="It is 18C")
        assert turn.error is not None


def test_errors() -> None:
    error = {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}
    turn = parse_exchange(API, b"{}", None, json.dumps(error).encode(), None, "application/json",
                          400, path=PATH)  # fmt: skip
    assert turn.error is not None
    assert "INVALID_ARGUMENT: API key not valid." in turn.error
    turn = parse_exchange(API, b"{}", None, json.dumps([error]).encode(), None,
                          "application/json", 400, path=STREAM_PATH)  # fmt: skip
    assert turn.error is not None
    assert "INVALID_ARGUMENT: API key not valid." in turn.error


def test_blocked_prompt() -> None:
    body = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}
    turn = parse(json.dumps(body).encode(), "application/json")
    assert turn.outputs == []
    assert turn.stop_reason == "SAFETY"
    assert turn.error is None


@pytest.mark.parametrize(
    "body",
    [b"", b"[", b"[{", b"[1, 2]", b"data: {\r\n\r\n", b"{}", b"null", b'{"candidates": 3}',
     b'{"candidates": [{"content": {"parts": [1, {"functionCall": 2}]}}]}'],
)  # fmt: skip
def test_never_raises_on_garbage(body: bytes) -> None:
    for ctype in ("application/json", "text/event-stream", None):
        assert isinstance(parse(body, ctype or "", path=STREAM_PATH), Turn)
