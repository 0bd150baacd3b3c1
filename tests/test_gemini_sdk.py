"""Gemini through tapewire: the real `google-genai` SDK (pointed at the proxy with
`HttpOptions(base_url=...)`, which it honours for the Gemini API when an API key is given)
talks to the fake provider; plain and streamed (`alt=sse`) conversations derive to the same
turns, as does the JSON-array stream (which the SDK never asks for, so aiohttp speaks it); the
API key, sent as `x-goog-api-key` or `?key=`, reaches the upstream and never the record."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google import genai
from google.genai import types
from google.genai.errors import APIError

from conftest import settings_for, stored
from fakegemini import CALL_ID, MODEL_VERSION, THOUGHT_PIECES
from fakeprovider import TEXT, FakeProvider, unreachable_port
from tapewire.query import resolve_session, session_detail
from tapewire.service import Service, ServiceThread
from tapewire.store import Store
from tapewire.store.location import DbRef

SECRET = "AIzaSyTEST-never-stored-0123456789"
MODEL = "gemini-2.5-flash"
SYSTEM = "You are terse."
PROMPT = "What's the weather in Paris?"
RESULT = "18C, sunny"
PARAMS: Any = {"type": "object", "properties": {"city": {"type": "string"}}}
CONFIG = types.GenerateContentConfig(
    system_instruction=SYSTEM,
    tools=[
        types.Tool(
            function_declarations=[
                types.FunctionDeclaration(name="get_weather", parameters_json_schema=PARAMS)
            ]
        )
    ],
    automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    thinking_config=types.ThinkingConfig(include_thoughts=True),
)
_SAME = ("kind", "api", "model", "response_model", "status", "outcome", "stop_reason", "error",
         "request_node", "response_nodes", "input_nodes", "tools_doc", "input_tokens",
         "output_tokens", "reasoning_tokens")  # fmt: skip


def _client(service: Service, session: str) -> genai.Client:
    options = types.HttpOptions(base_url=f"{service.url}/s/{session}")
    return genai.Client(api_key=SECRET, http_options=options)


def _ask(client: genai.Client, contents: list[types.Content], stream: bool) -> types.Content:
    """One request; the model's content to send back, as the client has it."""
    if not stream:
        response = client.models.generate_content(model=MODEL, contents=contents, config=CONFIG)
        assert response.candidates and response.candidates[0].content is not None
        assert response.model_version == MODEL_VERSION
        return response.candidates[0].content
    parts: list[types.Part] = []
    for chunk in client.models.generate_content_stream(
        model=MODEL, contents=contents, config=CONFIG
    ):
        assert chunk.candidates and chunk.candidates[0].content is not None
        parts.extend(chunk.candidates[0].content.parts or [])
    return types.Content(role="model", parts=parts)


def _conversation(client: genai.Client, stream: bool) -> None:
    contents = [types.Content(role="user", parts=[types.Part(text=PROMPT)])]
    first = _ask(client, contents, stream)
    calls = [p.function_call for p in first.parts or [] if p.function_call]
    assert [(c.id, c.name, c.args) for c in calls] == [(CALL_ID, "get_weather", {"city": "Paris"})]
    result = types.FunctionResponse(id=CALL_ID, name="get_weather", response={"output": RESULT})
    contents += [first, types.Content(role="user", parts=[types.Part(function_response=result)])]
    second = _ask(client, contents, stream)
    text = "".join(p.text or "" for p in second.parts or [] if not p.thought)
    assert text == TEXT


def _turns(store: Store, name: str) -> list[dict[str, Any]]:
    session = resolve_session(store, name)
    rows = store.turn_rows(session)
    shown = session_detail(store, session)["turns"]
    out = []
    for row, turn in zip(rows, shown, strict=True):
        same = {k: row[k] for k in _SAME}
        same["input"], same["output"] = turn["input"], turn["output"]
        same["tool_calls"] = [
            {k: v for k, v in c.items() if k != "latency_ms"} for c in turn["tool_calls"]
        ]
        out.append(same)
    return out


def _assert_round_trip(turns: list[dict[str, Any]]) -> None:
    first, second = turns
    assert all(t["api"] == "gemini.generate" and t["error"] is None for t in turns)
    assert {t["model"] for t in turns} == {MODEL}
    assert {t["response_model"] for t in turns} == {MODEL_VERSION}
    assert [m["role"] for m in first["input"]] == ["system", "user"]
    thinking, call = first["output"]
    assert thinking == {"type": "thinking", "text": "".join(THOUGHT_PIECES)}
    assert call == {"type": "tool_call", "id": CALL_ID, "name": "get_weather",
                    "arguments": {"city": "Paris"}}  # fmt: skip
    assert first["tool_calls"] == [{"id": CALL_ID, "name": "get_weather",
                                    "arguments": {"city": "Paris"}, "result": RESULT,
                                    "is_error": None, "answered": True}]  # fmt: skip
    # The model's content the client sent back is the first response's node: only the
    # function's response is new input.
    (new,) = second["input"]
    assert [p["type"] for p in new["parts"]] == ["tool_result"]
    assert second["output"][-1] == {"type": "text", "text": TEXT}
    assert (second["input_tokens"], second["output_tokens"], second["reasoning_tokens"]) == (
        12, 10, 3,
    )  # fmt: skip


def _assert_no_secret(service: Service, store: Store) -> None:
    """The key is in no stored exchange (headers, path, upstream URL, bodies) and nowhere in
    the journal's files."""
    rows = [r for r in store.exchanges(limit=1000, with_bodies=True) if r.provider == "gemini"]
    assert rows
    for row in rows:
        assert SECRET not in json.dumps(
            [row.path, row.upstream_url, row.request_headers, row.response_headers]
        )
        assert SECRET.encode() not in (row.request_body or b"") + (row.response_body or b"")
    journal = Path(service.settings.journal)
    files = [journal] if journal.is_file() else [p for p in journal.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path


def test_sdk_plain_and_streamed_give_the_same_turns(recorder: Service, fake: FakeProvider) -> None:
    for name, stream in (("gemini-plain", False), ("gemini-sse", True)):
        with _client(recorder, name) as client:
            _conversation(client, stream)
    # The upstream got the key, as the SDK sent it, and the paths without tapewire's prefix.
    sent = [r for r in fake.received if "models/" in r.raw_path]
    assert len(sent) == 4
    assert all(("x-goog-api-key", SECRET) in r.headers for r in sent)
    # (google-genai 3 asks /v1/models/…, older versions /v1beta/models/…: both are Gemini's.)
    assert {r.raw_path.partition("/models/")[0] for r in sent} <= {"/v1", "/v1beta"}
    assert {r.raw_path.partition("/models/")[2] for r in sent} == {
        f"{MODEL}:generateContent",
        f"{MODEL}:streamGenerateContent?alt=sse",
    }
    store = stored(recorder)
    try:
        plain, streamed = _turns(store, "gemini-plain"), _turns(store, "gemini-sse")
        _assert_round_trip(plain)
        assert streamed == plain
        rows = store.exchanges(limit=10)
        assert {r.provider for r in rows} == {"gemini"}
        assert all(("x-goog-api-key", "") in r.request_headers for r in rows)
        _assert_no_secret(recorder, store)
    finally:
        store.close()


async def _post_json_array(url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            chunks = json.loads(await resp.read())
    assert isinstance(chunks, list) and len(chunks) > 1
    parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    return {"role": "model", "parts": parts}


async def test_json_array_stream_and_key_in_query(recorder: Service, fake: FakeProvider) -> None:
    """streamGenerateContent without alt=sse, the key in the query: the same turns again."""
    url = (
        f"{recorder.url}/s/gemini-array/gemini/v1beta/models/{MODEL}:streamGenerateContent"
        f"?key={SECRET}"
    )
    request: dict[str, Any] = {
        "systemInstruction": {"parts": [{"text": SYSTEM}]},
        "contents": [{"role": "user", "parts": [{"text": PROMPT}]}],
        "tools": [{"functionDeclarations": [{"name": "get_weather",
                                             "parametersJsonSchema": PARAMS}]}],
        "generationConfig": {"thinkingConfig": {"includeThoughts": True}},
    }  # fmt: skip
    first = await _post_json_array(url, request)
    result = {"functionResponse": {"id": CALL_ID, "name": "get_weather",
                                   "response": {"output": RESULT}}}  # fmt: skip
    request["contents"] += [first, {"role": "user", "parts": [result]}]
    await _post_json_array(url, request)
    assert fake.received[-1].raw_path.endswith(f":streamGenerateContent?key={SECRET}")

    store = stored(recorder)
    try:
        _assert_round_trip(_turns(store, "gemini-array"))
        rows = store.exchanges(limit=10)
        assert {r.path.partition("?")[2] for r in rows} == {"key="}
        assert all(r.upstream_url.endswith(":streamGenerateContent?key=") for r in rows)
        _assert_no_secret(recorder, store)
    finally:
        store.close()


def test_unreachable_upstream_answers_in_googles_shape(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    """tapewire's own 502 is an error the SDK reads, naming the upstream but not the key."""
    dead = f"http://127.0.0.1:{unreachable_port()}"
    settings = settings_for(fake, tmp_path, db=db, upstreams=[f"gemini={dead}"])
    with ServiceThread(settings) as service:
        with _client(service, "gemini-dead") as client, pytest.raises(APIError) as info:
            client.models.generate_content(model=MODEL, contents="hi")
        assert (info.value.code, info.value.status) == (502, "UNAVAILABLE")
        assert str(info.value.message).startswith("tapewire:")
        url = f"{service.url}/v1beta/models/{MODEL}:generateContent?key={SECRET}"
        request = urllib.request.Request(url, data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        answer = refused.value.read()
        assert refused.value.code == 502 and dead.encode() in answer
        assert SECRET.encode() not in answer
        store = stored(service)
        try:
            assert all(r.outcome == "upstream_error" for r in store.exchanges())
            _assert_no_secret(service, store)
        finally:
            store.close()
