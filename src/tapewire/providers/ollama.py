"""Ollama's native API: /api/chat (turn.api "ollama.chat") and /api/generate ("ollama.generate").

Wire facts this codec relies on (Ollama docs/api.md and api/types.go):
- `stream` defaults to true when the request leaves it out; a streamed response is NDJSON, one
  JSON object per line, each with `done: false` until a last object with `done: true` that
  carries `done_reason` and the counters (`prompt_eval_count`, `eval_count`, durations).
  A plain response is that last object alone, holding the whole message or response text.
- Chat chunks carry `message` {role, content, thinking, tool_calls, images}; generate chunks
  carry `response` and `thinking` text. A failure after the headers went out is a line
  `{"error": "..."}`.
- Tool calls are whole objects {function: {name, arguments (an object)}}, never argument
  deltas; older servers give them no id, so ids are made up by position (see `_call_id`), the
  same way on both sides of the wire, so a call and its result can still be linked.
- Images are a list of base64 strings beside the text, not content blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tapewire.model import Message, Part, Turn, Usage
from tapewire.providers.parts import add_error, digest, json_or_text

# Request fields that have a place of their own in a Turn; all others go to turn.params.
# /api/generate's `context` (the previous answer's token ids, thousands of integers) is
# conversation state, not a parameter: it stays in the raw body only.
_CHAT_FIELDS = frozenset({"model", "messages", "tools", "stream"})
_GENERATE_FIELDS = frozenset({"model", "prompt", "system", "images", "stream", "context"})


def _call_id(k: int) -> str:
    """The id of the k-th tool call of an assistant message (and of the k-th tool result after
    it) when the wire gives none: positional, so a response and its echo agree."""
    return f"call_{k}"


# ---- request -------------------------------------------------------------------------------


def parse_request(body: dict[str, Any], turn: Turn) -> None:
    model = body.get("model")
    turn.model = model if isinstance(model, str) else None
    stream = body.get("stream")
    turn.stream = stream if isinstance(stream, bool) else True  # Ollama streams unless told not to
    if turn.api == "ollama.generate":
        _parse_generate_request(body, turn)
    else:
        _parse_chat_request(body, turn)


def _parse_chat_request(body: dict[str, Any], turn: Turn) -> None:
    turn.params = {k: v for k, v in body.items() if k not in _CHAT_FIELDS}
    tools = body.get("tools")
    if isinstance(tools, list):
        turn.tools = tools
    messages = body.get("messages")
    if messages is None:
        return
    if not isinstance(messages, list):
        add_error(turn, "request messages is not a list")
        return
    results_since_assistant = 0
    for raw in messages:
        if not isinstance(raw, dict):
            add_error(turn, "request message is not a JSON object")
            continue
        role = raw.get("role")
        if role == "assistant":
            results_since_assistant = 0
        if role == "tool":
            turn.messages.append(_tool_message(raw, results_since_assistant))
            results_since_assistant += 1
        else:
            turn.messages.append(_message(raw))


def _message(raw: dict[str, Any]) -> Message:
    """A system, user or assistant message: thinking, text, images, then tool calls (the order
    a streamed response is assembled in, whatever order the fields came in)."""
    role = raw.get("role")
    parts: list[Part] = []
    thinking = raw.get("thinking")
    if isinstance(thinking, str) and thinking:
        parts.append(Part(type="thinking", text=thinking))
    parts.extend(_content_parts(raw.get("content")))
    parts.extend(_image_parts(raw.get("images")))
    parts.extend(_tool_calls(raw.get("tool_calls")))
    return Message(role=role if isinstance(role, str) else "user", parts=parts)


def _tool_message(raw: dict[str, Any], position: int) -> Message:
    """A role "tool" message is one tool result. Without the wire's `tool_call_id` it answers
    the call at the same position in the assistant message before it."""
    call_id = raw.get("tool_call_id")
    content = raw.get("content")
    if content is None or isinstance(content, str):
        result_content = [Part(type="text", text=content or "")]
    else:
        result_content = _content_parts(content)
    result_content.extend(_image_parts(raw.get("images")))
    tool_name = raw.get("tool_name")
    result = Part(
        type="tool_result",
        id=call_id if isinstance(call_id, str) and call_id else _call_id(position),
        name=tool_name if isinstance(tool_name, str) and tool_name else None,
        content=result_content,
    )
    return Message(role="tool", parts=[result])


def _parse_generate_request(body: dict[str, Any], turn: Turn) -> None:
    turn.params = {k: v for k, v in body.items() if k not in _GENERATE_FIELDS}
    system = body.get("system")
    if isinstance(system, str) and system:
        turn.system = [Part(type="text", text=system)]
    parts = _content_parts(body.get("prompt"))
    parts.extend(_image_parts(body.get("images")))
    if parts:
        turn.messages = [Message(role="user", parts=parts)]


def _content_parts(content: Any) -> list[Part]:
    """Ollama content is a string; an empty one is no part at all (the wire cannot tell "" from
    absent, since the server omits empty fields). Anything else is kept, not guessed at."""
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [Part(type="text", text=content)]
    return [Part(type="other", name="content", data=content)]


def _image_parts(images: Any) -> list[Part]:
    if not isinstance(images, list):
        return []
    return [_image(image) for image in images]


def _image(image: Any) -> Part:
    if not isinstance(image, str):
        return Part(type="other", name="image", data=image)
    return Part(type="image", data=digest(image))


def _tool_calls(calls: Any) -> list[Part]:
    if not isinstance(calls, list):
        return []
    return [_tool_call(call, k) for k, call in enumerate(calls)]


def _tool_call(call: Any, k: int) -> Part:
    if not isinstance(call, dict):
        return Part(type="other", name="tool_call", data=call)
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    call_id, name, arguments = call.get("id"), function.get("name"), function.get("arguments")
    if isinstance(arguments, str):
        arguments = json_or_text(arguments)  # some clients echo arguments as a JSON string
    elif arguments is None:
        arguments = {}
    # function.index and type are transport: dropped, like OpenAI's index.
    return Part(
        type="tool_call",
        id=call_id if isinstance(call_id, str) and call_id else _call_id(k),
        name=name if isinstance(name, str) else None,
        arguments=arguments,
    )


# ---- response ------------------------------------------------------------------------------


@dataclass
class _Assembly:
    """What the chunks of one response add up to."""

    role: str = "assistant"
    thinking: str = ""
    text: str = ""
    images: list[Any] = field(default_factory=list)
    tool_calls: list[Any] = field(default_factory=list)
    seen: bool = False  # a chunk that was part of the answer arrived
    done: bool = False
    failed: bool = False  # the server sent an {"error": ...} line

    def message(self) -> Message:
        raw: dict[str, Any] = {
            "role": self.role,
            "thinking": self.thinking,
            "content": self.text,
            "images": self.images,
            "tool_calls": self.tool_calls,
        }
        return _message(raw)


def parse_response(body: bytes, turn: Turn, streamed: bool) -> None:
    chunks = _chunks(body, turn, streamed)
    acc = _Assembly()
    for chunk in chunks:
        _apply(chunk, acc, turn)
    if acc.seen:
        turn.outputs = [acc.message()]
    if not acc.done and not acc.failed:  # an error line already says why it ended
        add_error(turn, "stream ended before done:true" if streamed else "response lacks done:true")


def _chunks(body: bytes, turn: Turn, streamed: bool) -> list[dict[str, Any]]:
    """The JSON objects of a body. A plain body is one object, but a streamed one recorded
    without its content-type looks plain, so anything that is not one object is read as NDJSON."""
    if not streamed:
        try:
            whole = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            if isinstance(whole, dict):
                return [whole]
            add_error(turn, "response body is not a JSON object")
            return []
    chunks: list[dict[str, Any]] = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            chunk = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            add_error(turn, f"response line {number} is not JSON: {e}")
            continue
        if isinstance(chunk, dict):
            chunks.append(chunk)
        else:
            add_error(turn, f"response line {number} is not a JSON object")
    if not chunks and not turn.error:
        add_error(turn, "response body is empty")
    return chunks


def _apply(chunk: dict[str, Any], acc: _Assembly, turn: Turn) -> None:
    error = chunk.get("error")
    if error is not None:
        acc.failed = True
        add_error(turn, error if isinstance(error, str) else orjson.dumps(error).decode())
        return
    acc.seen = True
    model = chunk.get("model")
    if isinstance(model, str) and model and turn.response_model is None:
        turn.response_model = model
    if turn.api == "ollama.generate":
        acc.text += _text(chunk.get("response"))
        acc.thinking += _text(chunk.get("thinking"))
    else:
        _apply_message(chunk.get("message"), acc)
    if chunk.get("done") is True:
        acc.done = True
        _finish(chunk, turn)


def _apply_message(message: Any, acc: _Assembly) -> None:
    if not isinstance(message, dict):
        return
    role = message.get("role")
    if isinstance(role, str) and role:
        acc.role = role
    acc.text += _text(message.get("content"))
    acc.thinking += _text(message.get("thinking"))
    for key, into in (("images", acc.images), ("tool_calls", acc.tool_calls)):
        value = message.get(key)
        if isinstance(value, list):
            into.extend(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _finish(chunk: dict[str, Any], turn: Turn) -> None:
    """The done:true object: why generation stopped and the token counters. Ollama reports no
    cache or reasoning split, so those stay None."""
    reason = chunk.get("done_reason")
    if isinstance(reason, str) and reason:
        turn.stop_reason = reason
    turn.usage = Usage(
        input_tokens=_count(chunk.get("prompt_eval_count")),
        output_tokens=_count(chunk.get("eval_count")),
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
