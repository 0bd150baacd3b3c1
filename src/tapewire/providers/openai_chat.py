"""OpenAI Chat Completions (`POST /v1/chat/completions`): requests, plain and streamed responses.

The Chat API keeps system prompts as messages (role system or developer), so `turn.system` stays
empty. A streamed response is rebuilt into the same shape as the plain `message` object and
then read by the same function, so both forms give the same parts by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tapewire.model import Message, Part, Turn, Usage
from tapewire.providers import error_message
from tapewire.providers.parts import add_error, digest, json_object, json_or_text
from tapewire.providers.sse import events

# Request fields that have a home of their own on the Turn; every other one is a param.
_OWN_FIELDS = frozenset({"model", "messages", "tools", "stream"})

# Reasoning text as OpenAI-compatible servers send it (DeepSeek and vLLM: reasoning_content;
# OpenRouter and newer vLLM: reasoning). OpenAI itself never returns reasoning text here.
# Some servers send both with the same text, so only the first one present is read.
_REASONING_KEYS = ("reasoning_content", "reasoning")


# ---- request -------------------------------------------------------------------------------


def parse_request(body: dict[str, Any], turn: Turn) -> None:
    model = body.get("model")
    turn.model = model if isinstance(model, str) else None
    turn.stream = body.get("stream") is True
    turn.params = {k: v for k, v in body.items() if k not in _OWN_FIELDS}
    tools = body.get("tools")
    if isinstance(tools, list):
        turn.tools = list(tools)
    elif tools is not None:  # not a shape the API takes; keep it where it can still be seen
        turn.params["tools"] = tools
    messages = body.get("messages")
    if not isinstance(messages, list):
        add_error(turn, "request has no messages list")
        return
    for i, raw in enumerate(messages):
        if isinstance(raw, dict):
            turn.messages.append(_request_message(raw))
        else:
            add_error(turn, f"messages[{i}] is not an object")


def _request_message(raw: dict[str, Any]) -> Message:
    role = raw.get("role")
    role = role if isinstance(role, str) else "unknown"
    content = _content_parts(raw.get("content"))
    if role == "tool":
        call_id = raw.get("tool_call_id")
        result = Part(
            type="tool_result",
            id=call_id if isinstance(call_id, str) else None,
            content=content,
            is_error=None,  # the Chat API has no error flag on tool results
        )
        return Message(role="tool", parts=[result])
    if role == "function":
        # Legacy function results answer by function name: there is no call id.
        name = raw.get("name")
        result = Part(
            type="tool_result",
            name=name if isinstance(name, str) else None,
            content=content,
            is_error=None,
        )
        return Message(role="tool", parts=[result])
    if role == "assistant":
        return Message(role="assistant", parts=_assistant_parts(raw))
    return Message(role=role, parts=content)


# ---- content -------------------------------------------------------------------------------


def _content_parts(content: Any) -> list[Part]:
    """A message's `content`: null, a string, or a list of typed parts."""
    if content is None:
        return []
    if isinstance(content, str):
        # An empty string says nothing: a plain response sends null where an agent may echo "".
        return [Part(type="text", text=content)] if content else []
    items = content if isinstance(content, list) else [content]
    return [part for item in items if (part := _content_part(item)) is not None]


def _content_part(block: Any) -> Part | None:
    if isinstance(block, str):
        return Part(type="text", text=block) if block else None
    if not isinstance(block, dict):
        return Part(type="other", name=type(block).__name__, data=block)
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return Part(type="text", text=text) if isinstance(text, str) and text else None
    if kind == "refusal":
        refusal = block.get("refusal")
        return Part(type="refusal", text=refusal) if isinstance(refusal, str) else None
    if kind == "image_url":
        return _image_part(block.get("image_url"))
    if kind == "input_audio":
        return _other(block, _digest_field(block, "input_audio", "data"))
    if kind == "file":
        return _other(block, _digest_field(block, "file", "file_data"))
    return _other(block, block)


def _other(block: dict[str, Any], data: dict[str, Any]) -> Part:
    kind = block.get("type")
    return Part(type="other", name=kind if isinstance(kind, str) else None, data=data)


def _image_part(image: Any) -> Part:
    # {"url": ..., "detail": ...}; detail is a rendering hint, not content.
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        return Part(type="other", name="image_url", data=image)
    if url.startswith("data:"):
        media_type = url[5:].partition(",")[0].partition(";")[0]
        return Part(type="image", media_type=media_type or None, data=digest(url))
    return Part(type="image", data=url)


def _digest_field(block: dict[str, Any], key: str, name: str) -> dict[str, Any]:
    """The block with its inline base64 payload replaced by a digest: never keep the bytes."""
    inner = block.get(key)
    if isinstance(inner, dict) and isinstance(inner.get(name), str):
        return {**block, key: {**inner, name: digest(inner[name])}}
    return block


# ---- assistant messages (request echo, plain response, rebuilt stream) ---------------------


def _assistant_parts(message: dict[str, Any]) -> list[Part]:
    """Reasoning, then content, then refusal, then tool calls: one order whatever the source."""
    parts: list[Part] = []
    for key in _REASONING_KEYS:
        reasoning = message.get(key)
        if isinstance(reasoning, str) and reasoning:
            parts.append(Part(type="thinking", text=reasoning))
            break
    parts.extend(_content_parts(message.get("content")))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append(Part(type="refusal", text=refusal))
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        parts.extend(_tool_call_part(call) for call in calls)
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        parts.append(_function_part(None, legacy))
    return parts


def _tool_call_part(call: Any) -> Part:
    if not isinstance(call, dict):
        return Part(type="other", name=type(call).__name__, data=call)
    call_id = call.get("id")
    call_id = call_id if isinstance(call_id, str) else None
    kind = call.get("type") or "function"
    if kind == "function" and isinstance(call.get("function"), dict):
        return _function_part(call_id, call["function"])
    custom = call.get("custom")
    if kind == "custom" and isinstance(custom, dict):
        # Custom tools take free-form text, not JSON: the input stays the string sent.
        name = custom.get("name")
        return Part(
            type="tool_call",
            id=call_id,
            name=name if isinstance(name, str) else None,
            arguments=custom.get("input"),
        )
    return Part(type="other", name=kind if isinstance(kind, str) else None, data=call)


def _function_part(call_id: str | None, function: dict[str, Any]) -> Part:
    name = function.get("name")
    arguments = function.get("arguments")
    return Part(
        type="tool_call",
        id=call_id,
        name=name if isinstance(name, str) else None,
        arguments=json_or_text(arguments) if isinstance(arguments, str) else arguments,
    )


# ---- response ------------------------------------------------------------------------------


def parse_response(body: bytes, turn: Turn, streamed: bool) -> None:
    if streamed:
        _parse_stream(body, turn)
    else:
        _parse_plain(body, turn)


def _parse_plain(body: bytes, turn: Turn) -> None:
    data = json_object(body, turn)
    if data is None:
        return
    if data.get("error"):
        add_error(turn, error_message(body) or "error in response body")
        return
    _take_ids(turn, data)
    usage = data.get("usage")
    if isinstance(usage, dict):
        turn.usage = _usage(usage)
    choices = data.get("choices")
    if not isinstance(choices, list):
        add_error(turn, "response has no choices list")
        return
    ordered = sorted(
        (c for c in choices if isinstance(c, dict)), key=lambda c: _index(c, len(choices))
    )
    for choice in ordered:
        message = choice.get("message")
        if not isinstance(message, dict):
            add_error(turn, f"choice {choice.get('index')} has no message")
            message = {}
        role = message.get("role")
        turn.outputs.append(
            Message(
                role=role if isinstance(role, str) else "assistant", parts=_assistant_parts(message)
            )
        )
    if ordered:
        reason = ordered[0].get("finish_reason")
        turn.stop_reason = reason if isinstance(reason, str) else None


def _index(obj: dict[str, Any], default: int) -> int:
    index = obj.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else default


def _take_ids(turn: Turn, data: dict[str, Any]) -> None:
    """Every chunk repeats the completion's id and model; the first one seen is kept."""
    response_id, model = data.get("id"), data.get("model")
    if turn.response_id is None and isinstance(response_id, str) and response_id:
        turn.response_id = response_id
    if turn.response_model is None and isinstance(model, str) and model:
        turn.response_model = model


def _usage(raw: dict[str, Any]) -> Usage:
    # prompt_tokens already counts cached tokens, as Usage.input_tokens wants.
    prompt = raw.get("prompt_tokens_details")
    prompt = prompt if isinstance(prompt, dict) else {}
    completion = raw.get("completion_tokens_details")
    completion = completion if isinstance(completion, dict) else {}
    return Usage(
        input_tokens=_count(raw.get("prompt_tokens")),
        output_tokens=_count(raw.get("completion_tokens")),
        cache_read_tokens=_count(prompt.get("cached_tokens")),
        cache_write_tokens=_count(prompt.get("cache_write_tokens")),
        reasoning_tokens=_count(completion.get("reasoning_tokens")),
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ---- streamed response ---------------------------------------------------------------------


@dataclass
class _ToolCallDelta:
    """One tool call assembled from its deltas: the first carries id, type and name, later ones
    only more of the arguments string."""

    id: str | None = None
    type: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)

    def add(self, delta: dict[str, Any]) -> None:
        # Some compatible servers repeat id and name on every delta: keep the first.
        if self.id is None and isinstance(delta.get("id"), str):
            self.id = delta["id"]
        if self.type is None and isinstance(delta.get("type"), str):
            self.type = delta["type"]
        function = delta.get("function")
        if isinstance(function, dict):
            self.add_function(function)

    def add_function(self, function: dict[str, Any]) -> None:
        if self.name is None and isinstance(function.get("name"), str):
            self.name = function["name"]
        if isinstance(function.get("arguments"), str):
            self.arguments.append(function["arguments"])

    def function(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": "".join(self.arguments)}

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type or "function", "function": self.function()}


@dataclass
class _ChoiceState:
    role: str = "assistant"
    text: dict[str, list[str]] = field(default_factory=dict)  # content, refusal, reasoning...
    tool_calls: dict[int, _ToolCallDelta] = field(default_factory=dict)
    function_call: _ToolCallDelta | None = None  # the legacy, pre-tools form
    finish_reason: str | None = None

    def add(self, delta: dict[str, Any]) -> None:
        if isinstance(delta.get("role"), str):
            self.role = delta["role"]
        for key in ("content", "refusal", *_REASONING_KEYS):
            if isinstance(delta.get(key), str):
                self.text.setdefault(key, []).append(delta[key])
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict):
                self._tool_call(call).add(call)
        legacy = delta.get("function_call")
        if isinstance(legacy, dict):
            self.function_call = self.function_call or _ToolCallDelta()
            self.function_call.add_function(legacy)

    def _tool_call(self, delta: dict[str, Any]) -> _ToolCallDelta:
        index = delta.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            # No index (some compatible servers): a known id continues its call, else a new one.
            index = next(
                (i for i, c in self.tool_calls.items() if c.id and c.id == delta.get("id")),
                len(self.tool_calls),
            )
        return self.tool_calls.setdefault(index, _ToolCallDelta())

    def message(self) -> dict[str, Any]:
        """The plain-response `message` object this stream amounts to."""
        out: dict[str, Any] = {"role": self.role}
        out.update({key: "".join(chunks) for key, chunks in self.text.items()})
        if self.tool_calls:
            out["tool_calls"] = [self.tool_calls[i].wire() for i in sorted(self.tool_calls)]
        if self.function_call is not None:
            out["function_call"] = self.function_call.function()
        return out


def _parse_stream(body: bytes, turn: Turn) -> None:
    choices: dict[int, _ChoiceState] = {}
    done = False
    for event, data in events(body):
        if data.strip() == "[DONE]":
            done = True
            break
        _apply_chunk(data, event, turn, choices)
    for index in sorted(choices):
        state = choices[index]
        turn.outputs.append(Message(role=state.role, parts=_assistant_parts(state.message())))
    if choices:
        turn.stop_reason = choices[min(choices)].finish_reason
    if not done:
        add_error(turn, "stream ended before [DONE]")


def _apply_chunk(
    data: str, event: str | None, turn: Turn, choices: dict[int, _ChoiceState]
) -> None:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        add_error(turn, f"malformed chunk: {data[:120]!r}")
        return
    if not isinstance(chunk, dict):
        add_error(turn, f"chunk is not a JSON object: {data[:120]!r}")
        return
    if chunk.get("error") or event == "error":
        add_error(turn, f"stream error: {error_message(data.encode()) or data[:500]}")
        return
    _take_ids(turn, chunk)
    usage = chunk.get("usage")
    if isinstance(usage, dict):  # null on every chunk but the last
        turn.usage = _usage(usage)
    raw_choices = chunk.get("choices")
    for raw in raw_choices if isinstance(raw_choices, list) else []:
        if not isinstance(raw, dict):
            continue
        state = choices.setdefault(_index(raw, 0), _ChoiceState())
        delta = raw.get("delta")
        if isinstance(delta, dict):
            state.add(delta)
        reason = raw.get("finish_reason")
        if isinstance(reason, str):
            state.finish_reason = reason
