"""Each wire format, spoken by its real client through tapewire to the fake provider, streamed
and not: both forms derive to the same turns and the same content-addressed node ids, a tool
call is linked to the result the next request carries, and a resent assistant message resolves
to the node of the response it echoes, so a turn's input holds only what is new.

OpenAI Chat Completions, OpenAI Responses and Anthropic Messages use the real SDKs; Ollama is
spoken with aiohttp in its documented NDJSON wire format.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import openai

from conftest import stored
from fakeprovider import TEXT, TOOL_ARGS
from tapewire.query import resolve_session, session_detail, sessions
from tapewire.service import Service
from tapewire.store import Store

SYSTEM = "You are terse."
PROMPT = "What's the weather in Paris?"
RESULT = "18°C, sunny"
CALL_ARGS = json.loads(TOOL_ARGS)
TOOL_CALL_PART = {"type": "tool_call", "id": "call_fake1", "name": "get_weather",
                  "arguments": CALL_ARGS}  # fmt: skip
TEXT_PART = {"type": "text", "text": TEXT}
PARAMS: Any = {"type": "object", "properties": {"city": {"type": "string"}}}
CHAT_TOOLS: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": PARAMS}}]
RESPONSES_TOOLS: Any = [{"type": "function", "name": "get_weather", "parameters": PARAMS}]
ANTHROPIC_TOOLS: Any = [{"name": "get_weather", "description": "Weather", "input_schema": PARAMS}]
OLLAMA_TOOLS = CHAT_TOOLS

# What a turn is, apart from when and how it crossed the wire (exchange, session and thread
# ids, timings, response id, the stream flag and the stream's own params).
_TURN_FIELDS = ("kind", "api", "model", "response_model", "status", "outcome", "stop_reason",
                "error", "request_node", "response_nodes", "input_nodes", "tools_doc",
                "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                "cache_write_1h_tokens", "reasoning_tokens", "cost_usd")  # fmt: skip


# --------------------------------------------------------------------------- reading back


def _session(store: Store, name: str) -> str:
    return resolve_session(store, name)


def _turns(store: Store, session: str) -> list[dict[str, Any]]:
    """Each turn of a session as the store and the query layer give it, less what may differ
    between a streamed and a plain run of the same conversation."""
    rows = store.turn_rows(session)
    shown = session_detail(store, session)["turns"]
    assert [r["exchange"] for r in rows] == [t["exchange_id"] for t in shown]
    out = []
    for row, turn in zip(rows, shown, strict=True):
        same = {k: row[k] for k in _TURN_FIELDS}
        same["input"] = turn["input"]
        same["output"] = turn["output"]
        same["tool_calls"] = [
            {k: v for k, v in c.items() if k != "latency_ms"} for c in turn["tool_calls"]
        ]
        out.append(same)
    return out


def _summary(store: Store, session: str) -> dict[str, Any]:
    (row,) = store.session_rows(ids=[session])
    return row


def _assert_tool_round_trip(
    store: Store, session: str, *, stream: bool, call_id: str = "call_fake1"
) -> list[dict[str, Any]]:
    """One session, one thread, two turns: the first asks for get_weather, the second carries
    its result (only that is new input) and gets text back; the call is linked to the result."""
    summary = _summary(store, session)
    assert (summary["turns"], summary["threads"], summary["tool_calls"]) == (2, 1, 1)
    rows = store.turn_rows(session)
    assert [r["stream"] for r in rows] == [stream, stream]
    assert len({r["thread"] for r in rows}) == 1 and rows[0]["thread"] is not None
    assert all(r["error"] is None and r["outcome"] == "complete" for r in rows)
    first, second = _turns(store, session)

    assert first["output"] == [{**TOOL_CALL_PART, "id": call_id}]
    assert [m["role"] for m in first["input"]] == ["system", "user"]
    assert first["input"][-1]["node"] == first["request_node"]
    (call,) = first["tool_calls"]
    assert call == {"id": call_id, "name": "get_weather", "arguments": CALL_ARGS,
                    "result": RESULT, "is_error": None, "answered": True}  # fmt: skip

    # The assistant message the client sent back is the first response's node: the request's
    # chain runs through it, and the only new input is the tool's result.
    (tool_message,) = second["input"]
    assert tool_message["role"] in ("tool", "user")  # Anthropic's results ride a user message
    assert [p["type"] for p in tool_message["parts"]] == ["tool_result"]
    assert tool_message["parts"][0]["id"] == call_id
    assert second["request_node"] == tool_message["node"]
    nodes = store.node_rows([second["request_node"], first["response_nodes"][0]])
    assert nodes[second["request_node"]]["parent"] == first["response_nodes"][0]
    assert nodes[first["response_nodes"][0]]["parent"] == first["request_node"]
    assert second["output"] == [TEXT_PART]
    assert second["tool_calls"] == []
    for turn in (first, second):
        assert (turn["input_tokens"], turn["output_tokens"]) == (12, 7)
    return [first, second]


# --------------------------------------------------------------------------- OpenAI Chat


def _chat_turn(client: openai.OpenAI, messages: list[Any], stream: bool) -> tuple[Any, str | None]:
    """One request; returns the assistant message to send back and the finish reason. Plain:
    the SDK's own message object, resent as is. Streamed: rebuilt from the deltas, as a client
    consuming a stream does."""
    kw: dict[str, Any] = {"model": "gpt-test", "messages": messages, "tools": CHAT_TOOLS}
    if not stream:
        completion = client.chat.completions.create(**kw)
        return completion.choices[0].message, completion.choices[0].finish_reason
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    usage = None
    for chunk in client.chat.completions.create(
        **kw, stream=True, stream_options={"include_usage": True}
    ):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            delta = choice.delta
            text.append(delta.content or "")
            for tc in delta.tool_calls or []:
                slot = calls.setdefault(
                    tc.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                )  # fmt: skip
                slot["id"] += tc.id or ""
                if tc.function is not None:
                    slot["function"]["name"] += tc.function.name or ""
                    slot["function"]["arguments"] += tc.function.arguments or ""
            finish = choice.finish_reason or finish
    assert usage is not None and usage.total_tokens == 19
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message, finish


def _chat_conversation(client: openai.OpenAI, stream: bool) -> None:
    messages: list[Any] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": PROMPT},
    ]
    assistant, finish = _chat_turn(client, messages, stream)
    assert finish == "tool_calls"
    messages += [assistant, {"role": "tool", "tool_call_id": "call_fake1", "content": RESULT}]
    answer, finish = _chat_turn(client, messages, stream)
    assert finish == "stop"
    content = answer.content if not isinstance(answer, dict) else answer["content"]
    assert content == TEXT


def test_openai_chat_streamed_and_plain_give_the_same_turns(recorder: Service) -> None:
    for name, stream in (("chat-plain", False), ("chat-stream", True)):
        with openai.OpenAI(base_url=f"{recorder.url}/s/{name}/v1", api_key="sk-test") as client:
            _chat_conversation(client, stream)
    store = stored(recorder)
    plain = _assert_tool_round_trip(store, _session(store, "chat-plain"), stream=False)
    streamed = _assert_tool_round_trip(store, _session(store, "chat-stream"), stream=True)
    assert streamed == plain
    assert [t["stop_reason"] for t in plain] == ["tool_calls", "stop"]
    assert {t["api"] for t in plain} == {"openai.chat"}


# --------------------------------------------------------------------------- OpenAI Responses


def _responses_turn(client: openai.OpenAI, stream: bool, **kw: Any) -> Any:
    """One Responses request; the final Response, read by the SDK (its stream helper checks
    the event sequence as it assembles the response)."""
    kw = {"model": "gpt-test", "instructions": SYSTEM, "tools": RESPONSES_TOOLS, **kw}
    if not stream:
        return client.responses.create(**kw)
    with client.responses.stream(**kw) as events:
        return events.get_final_response()


def _responses_conversation(
    client: openai.OpenAI, prompt: str, *, stream: bool, style: str
) -> None:
    """Two turns with a function tool. style "resend": the second request resends the whole
    history, output items included, without their server ids (what Codex does); "objects":
    the same with the SDK's output objects as they came (server ids and status included);
    "previous": it names previous_response_id and sends only the function_call_output."""
    first = _responses_turn(client, stream, input=[{"role": "user", "content": prompt}])
    (call,) = first.output
    assert (call.type, call.call_id, call.name, call.arguments) == (
        "function_call", "call_fake1", "get_weather", TOOL_ARGS
    )  # fmt: skip
    result = {"type": "function_call_output", "call_id": call.call_id, "output": RESULT}
    if style == "resend":
        echoed = {"type": "function_call", "call_id": call.call_id, "name": call.name,
                  "arguments": call.arguments}  # fmt: skip
        history = [{"role": "user", "content": prompt}, echoed, result]
        second = _responses_turn(client, stream, input=history)
    elif style == "objects":
        history = [{"role": "user", "content": prompt}, *first.output, result]
        second = _responses_turn(client, stream, input=history)
    else:
        second = _responses_turn(client, stream, previous_response_id=first.id, input=[result])
    assert second.output_text == TEXT
    assert second.usage.input_tokens_details.cached_tokens == 0


def test_openai_responses_streamed_and_plain_and_both_continuations_agree(
    recorder: Service,
) -> None:
    styles = ("resend", "objects", "previous")
    runs = [(style, stream) for style in styles for stream in (False, True)]
    for style, stream in runs:
        name = f"responses-{style}-{'stream' if stream else 'plain'}"
        with openai.OpenAI(base_url=f"{recorder.url}/s/{name}/v1", api_key="sk-test") as client:
            _responses_conversation(client, PROMPT, stream=stream, style=style)
    store = stored(recorder)
    derived = {
        (style, stream): _assert_tool_round_trip(
            store,
            _session(store, f"responses-{style}-{'stream' if stream else 'plain'}"),
            stream=stream,
        )
        for style, stream in runs
    }
    for style in styles:
        assert derived[style, True] == derived[style, False], style
    # Resending the history (with or without server ids) or naming the previous response: the
    # same chain, the same node for the tool's output, and so the same turns.
    plain = derived["resend", False]
    assert derived["objects", False] == plain
    assert derived["previous", False] == plain
    assert [t["stop_reason"] for t in plain] == ["completed", "completed"]
    assert {t["api"] for t in plain} == {"openai.responses"}
    assert [(t["cache_read_tokens"], t["reasoning_tokens"]) for t in plain] == [(0, 0), (0, 0)]


def test_openai_responses_continue_their_session_without_one_named(recorder: Service) -> None:
    """No /s/ name and no harness header: the second turn joins its first one's session and
    thread by the chain (resent history) or by previous_response_id alone."""
    runs = [(style, stream) for style in ("resend", "previous") for stream in (False, True)]
    prompts = {run: f"{PROMPT} ({run[0]}, {'streamed' if run[1] else 'plain'})" for run in runs}
    with openai.OpenAI(base_url=f"{recorder.url}/v1", api_key="sk-test") as client:
        for (style, stream), prompt in prompts.items():
            _responses_conversation(client, prompt, stream=stream, style=style)
    store = stored(recorder)
    found = sessions(store)
    assert sorted(row["title"] for row in found) == sorted(prompts.values())  # one each
    by_prompt = {row["title"]: row["id"] for row in found}
    tool_nodes = {}
    for (style, stream), prompt in prompts.items():
        first, second = _assert_tool_round_trip(store, by_prompt[prompt], stream=stream)
        assert first["input"][1]["parts"] == [{"type": "text", "text": prompt}]
        tool_nodes[style, stream] = second["request_node"]
    assert len(set(tool_nodes.values())) == len(runs)  # distinct prompts, distinct chains


# --------------------------------------------------------------------------- Ollama


async def _ollama(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to Ollama; the answer as one object: the plain body, or the NDJSON lines folded
    together (message content and response text concatenated, tool calls collected)."""
    async with http.post(url, json=body) as resp:
        assert resp.status == 200
        raw = await resp.read()
        ctype = resp.headers["Content-Type"]
    if body.get("stream", True) is False:
        assert ctype.startswith("application/json")
        answer: dict[str, Any] = json.loads(raw)
        return answer
    assert ctype == "application/x-ndjson"
    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    folded = dict(lines[-1])
    if "message" in folded:
        message: dict[str, Any] = {"role": "assistant", "content": ""}
        for line in lines:
            message["content"] += line["message"].get("content", "")
            if line["message"].get("tool_calls"):
                message["tool_calls"] = [
                    *message.get("tool_calls", []), *line["message"]["tool_calls"]
                ]  # fmt: skip
        folded["message"] = message
    else:
        folded["response"] = "".join(line["response"] for line in lines)
    return folded


async def _ollama_chat(http: aiohttp.ClientSession, base: str, stream: bool) -> None:
    messages: list[Any] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": PROMPT},
    ]
    body: dict[str, Any] = {"model": "llama3.2", "messages": messages, "tools": OLLAMA_TOOLS}
    if not stream:
        body["stream"] = False  # Ollama streams unless told not to
    first = await _ollama(http, base + "/api/chat", body)
    assistant = first["message"]
    assert assistant["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": CALL_ARGS}}
    ]
    messages += [assistant, {"role": "tool", "content": RESULT, "tool_name": "get_weather"}]
    second = await _ollama(http, base + "/api/chat", body)
    assert second["message"]["content"] == TEXT
    assert second["done_reason"] == "stop"


async def test_ollama_streamed_and_plain_give_the_same_turns(recorder: Service) -> None:
    async with aiohttp.ClientSession() as http:
        for stream in (False, True):
            mode = "stream" if stream else "plain"
            await _ollama_chat(http, f"{recorder.url}/s/ollama-chat-{mode}", stream)
            body: dict[str, Any] = {"model": "llama3.2", "system": SYSTEM, "prompt": PROMPT}
            if not stream:
                body["stream"] = False
            answer = await _ollama(http, f"{recorder.url}/s/ollama-generate-{mode}/api/generate", body)  # fmt: skip
            assert answer["response"] == TEXT
            assert isinstance(answer["context"], list)
    store = stored(recorder)

    # Ollama's tool calls carry no id: the first call of a message is call_0 on both sides.
    plain = _assert_tool_round_trip(
        store, _session(store, "ollama-chat-plain"), stream=False, call_id="call_0"
    )
    streamed = _assert_tool_round_trip(
        store, _session(store, "ollama-chat-stream"), stream=True, call_id="call_0"
    )
    assert streamed == plain
    assert {t["api"] for t in plain} == {"ollama.chat"}
    assert [t["stop_reason"] for t in plain] == ["stop", "stop"]

    generated = {}
    for mode in ("plain", "stream"):
        session = _session(store, f"ollama-generate-{mode}")
        rows = store.turn_rows(session)
        assert [r["stream"] for r in rows] == [mode == "stream"]
        (generated[mode],) = _turns(store, session)
    assert generated["stream"] == generated["plain"]
    turn = generated["plain"]
    assert turn["api"] == "ollama.generate" and turn["error"] is None
    assert [(m["role"], m["parts"]) for m in turn["input"]] == [
        ("system", [{"type": "text", "text": SYSTEM}]),
        ("user", [{"type": "text", "text": PROMPT}]),
    ]
    assert turn["output"] == [TEXT_PART]
    assert (turn["input_tokens"], turn["output_tokens"], turn["stop_reason"]) == (12, 7, "stop")


# --------------------------------------------------------------------------- Anthropic


def _anthropic_turn(client: anthropic.Anthropic, messages: list[Any], stream: bool) -> Any:
    kw: dict[str, Any] = {"model": "claude-test", "max_tokens": 256, "system": SYSTEM,
                          "messages": messages, "tools": ANTHROPIC_TOOLS}  # fmt: skip
    if not stream:
        return client.messages.create(**kw)
    with client.messages.stream(**kw) as events:
        return events.get_final_message()


def _anthropic_conversation(client: anthropic.Anthropic, stream: bool) -> None:
    messages: list[Any] = [{"role": "user", "content": PROMPT}]
    first = _anthropic_turn(client, messages, stream)
    assert first.stop_reason == "tool_use"
    (block,) = first.content
    result = {"type": "tool_result", "tool_use_id": block.id, "content": RESULT}
    # The SDK's documented loop: the response's content blocks go back as they came.
    messages += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [result]},
    ]
    second = _anthropic_turn(client, messages, stream)
    assert second.stop_reason == "end_turn"
    assert [b.text for b in second.content] == [TEXT]


def test_anthropic_streamed_and_plain_give_the_same_turns(recorder: Service) -> None:
    for name, stream in (("anthropic-plain", False), ("anthropic-stream", True)):
        with anthropic.Anthropic(base_url=f"{recorder.url}/s/{name}", api_key="sk-test") as client:
            _anthropic_conversation(client, stream)
    store = stored(recorder)
    plain = _assert_tool_round_trip(
        store, _session(store, "anthropic-plain"), stream=False, call_id="toolu_fake1"
    )
    streamed = _assert_tool_round_trip(
        store, _session(store, "anthropic-stream"), stream=True, call_id="toolu_fake1"
    )
    assert streamed == plain
    assert [t["stop_reason"] for t in plain] == ["tool_use", "end_turn"]
    assert {t["api"] for t in plain} == {"anthropic.messages"}
    assert [m["role"] for m in plain[1]["input"]] == ["user"]
