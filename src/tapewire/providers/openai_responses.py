"""OpenAI's Responses API: POST /responses (turn.api "openai.responses"), what Codex CLI speaks.

Wire facts this codec relies on (openai-python `types/responses/`: response.py,
response_input_item_param.py, response_output_item.py, response_stream_event.py and the event
types it lists; Codex's codex-rs/protocol/src/models.rs for what the agent resends):
- A request has `instructions` (a string), `input` (a string, or a list of items),
  `previous_response_id` when the server keeps the earlier turns, `tools`, `stream`.
- Items are flat, not messages: {type: "message", role, content}, and, one item each, what a
  model turn produced: `reasoning` {summary: [{type: summary_text, text}], encrypted_content,
  content}, an assistant `message` {content: [output_text | refusal]}, `function_call`
  {call_id, name, arguments (a JSON string)}, `custom_tool_call` {call_id, name, input (free
  text)}, and other `*_call` items; then the agent's answers `function_call_output` /
  `custom_tool_call_output` {call_id, output: a string or a list of input_text / input_image /
  input_file parts}. An agent keeping the history itself resends the output items in the next
  `input`, without their server ids (Codex never serialises `id`, nor a reasoning item's raw
  `reasoning_text` content), so neither ids, `status`, nor raw reasoning content are identity.
- A plain response is the Response object {id, model, status, output, usage, error,
  incomplete_details}; status is completed | incomplete | failed (| in_progress | cancelled |
  queued for background responses).
- A streamed response is SSE whose data objects carry `type` (= the `event:` name):
  response.created / response.in_progress / response.queued carry the Response so far;
  response.output_item.added / .done carry an item by `output_index` (the .done item is
  complete: prefer it; an .added reasoning item's encrypted_content may be cut);
  response.content_part.added / .done, response.output_text.delta / .done,
  response.refusal.delta / .done, response.function_call_arguments.delta / .done,
  response.custom_tool_call_input.delta / .done, response.reasoning_summary_part.added / .done,
  response.reasoning_summary_text.delta / .done fill an item in between; the stream ends with
  response.completed, response.failed or response.incomplete carrying the final Response.
  An `error` event {code, message, param} reports a failure mid-stream.
- Usage: input_tokens (cached included), input_tokens_details.cached_tokens (and, newer,
  cache_write_tokens), output_tokens, output_tokens_details.reasoning_tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tapewire.model import Message, Part, Turn, Usage
from tapewire.providers.parts import add_error, digest, json_object, json_or_text
from tapewire.providers.sse import events

# Request fields that have a place of their own in a Turn; all others go to turn.params.
_OWN_FIELDS = frozenset(
    {"model", "input", "instructions", "tools", "stream", "previous_response_id"}
)
# Items answering a tool call; each becomes a tool_result part.
_TOOL_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output"})
# Items only a client sends, never echoes of a model's output: each stands alone as a message.
_CLIENT_ITEMS = frozenset({"item_reference", "mcp_approval_response", "compaction_trigger"})
_TERMINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete"})


# ---- content parts ------------------------------------------------------------------------


def _image_part(url: str) -> Part:
    """An image by URL; a data: URL becomes its media type and the digest of its bytes."""
    if not url.startswith("data:"):
        return Part(type="image", data=url)
    media_type = url[5:].partition(",")[0].split(";")[0]
    return Part(type="image", media_type=media_type or None, data=digest(url))


def _content_part(part: Any) -> Part:
    """One entry of a message's or a tool output's content list."""
    if not isinstance(part, dict):
        return Part(type="other", name=type(part).__name__, data=part)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
        # annotations and logprobs ride along with output_text; the agent resends neither
        return Part(type="text", text=part["text"])
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return Part(type="refusal", text=part["refusal"])
    if kind == "input_image":
        url, file_id = part.get("image_url"), part.get("file_id")
        if isinstance(url, str):
            return _image_part(url)
        if isinstance(file_id, str):
            return Part(type="image", data=file_id)
    data = dict(part)
    file_data = data.get("file_data")
    if isinstance(file_data, str):  # input_file inline (a data: URL or bare base64): digest only
        data["file_data"] = (
            _image_part(file_data).data if file_data.startswith("data:") else digest(file_data)
        )
    return Part(type="other", name=str(kind), data=data)


def _content(content: Any) -> list[Part]:
    if isinstance(content, str):
        return [Part(type="text", text=content)]
    if isinstance(content, list):
        return [_content_part(p) for p in content]
    if content is None:
        return []
    return [_content_part(content)]


# ---- items ---------------------------------------------------------------------------------


def _without(item: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in keys}


def _reasoning_part(item: dict[str, Any]) -> Part:
    """Only the summary is identity: encrypted_content is an opaque token (kept as the
    signature) and the raw reasoning_text content is never resent by Codex."""
    summary = item.get("summary")
    texts = [
        s["text"]
        for s in (summary if isinstance(summary, list) else [])
        if isinstance(s, dict) and isinstance(s.get("text"), str)
    ]
    signature = item.get("encrypted_content")
    return Part(
        type="thinking",
        text="\n".join(texts),
        signature=signature if isinstance(signature, str) else None,
    )


def _output_item_parts(item: dict[str, Any]) -> list[Part]:
    """The parts one model-side item contributes to its assistant message."""
    kind = item.get("type")
    if kind == "reasoning":
        return [_reasoning_part(item)]
    if kind in ("message", None) and "content" in item:
        return _content(item.get("content"))
    if kind == "function_call":
        args = item.get("arguments")
        return [
            Part(
                type="tool_call",
                id=item.get("call_id"),
                name=item.get("name"),
                arguments=json_or_text(args) if isinstance(args, str) else args,
            )
        ]
    if kind == "custom_tool_call":
        return [
            Part(
                type="tool_call",
                id=item.get("call_id"),
                name=item.get("name"),
                arguments=item.get("input"),
            )
        ]
    # local_shell_call, web_search_call, compaction, ...: the server's id and the status are
    # not content, and an agent resending the item leaves them out.
    return [Part(type="other", name=str(kind), data=_without(item, "id", "status"))]


def _tool_output_part(item: dict[str, Any]) -> Part:
    if item.get("type") in _TOOL_OUTPUTS:
        return Part(
            type="tool_result", id=item.get("call_id"), content=_content(item.get("output"))
        )
    return Part(type="other", name=str(item.get("type")), data=_without(item, "status"))


def _side(item: dict[str, Any]) -> str:
    """Which message an input item belongs to: 'own' (a message of its own), 'tool' (grouped
    with neighbouring tool outputs) or 'assistant' (grouped with the model turn around it)."""
    kind = item.get("type")
    if kind in ("message", None):
        return "assistant" if item.get("role") == "assistant" else "own"
    if kind in _CLIENT_ITEMS:
        return "own"
    if isinstance(kind, str) and kind.endswith("_output"):
        return "tool"
    # reasoning, function_call, custom_tool_call, *_call and unknown items: echoes of output
    return "assistant"


def _input_messages(items: list[Any]) -> list[Message]:
    """Flat items to messages, grouping a model turn's items into one assistant message and a
    run of tool outputs into one tool message, the way `_output_message` groups a response."""
    messages: list[Message] = []
    last_side: str | None = None
    for item in items:
        if not isinstance(item, dict):
            messages.append(Message(role="user", parts=_content(item)))
            last_side = None
            continue
        side = _side(item)
        if side == "own":
            role = item.get("role")
            if item.get("type") in _CLIENT_ITEMS:
                parts = [Part(type="other", name=str(item["type"]), data=_without(item, "status"))]
            else:
                parts = _content(item.get("content"))
            messages.append(Message(role=role if isinstance(role, str) else "user", parts=parts))
        elif side == "tool":
            if last_side != "tool":
                messages.append(Message(role="tool"))
            messages[-1].parts.append(_tool_output_part(item))
        else:
            if last_side != "assistant":
                messages.append(Message(role="assistant"))
            messages[-1].parts.extend(_output_item_parts(item))
        last_side = side
    return messages


def _output_message(items: Iterable[Any]) -> Message | None:
    """A response's output items as the one assistant message they make."""
    parts: list[Part] = []
    for item in items:
        if isinstance(item, dict):
            parts.extend(_output_item_parts(item))
    return Message(role="assistant", parts=parts) if parts else None


# ---- request -------------------------------------------------------------------------------


def parse_request(body: dict[str, Any], turn: Turn) -> None:
    model = body.get("model")
    turn.model = model if isinstance(model, str) else None
    turn.stream = body.get("stream") is True
    previous = body.get("previous_response_id")
    turn.previous_response_id = previous if isinstance(previous, str) else None
    tools = body.get("tools")
    turn.tools = list(tools) if isinstance(tools, list) else []
    turn.params = {k: v for k, v in body.items() if k not in _OWN_FIELDS}

    instructions = body.get("instructions")
    if isinstance(instructions, str):
        turn.system = [Part(type="text", text=instructions)]
    elif isinstance(instructions, list):  # a Response echoes instructions as input items
        turn.system = [p for m in _input_messages(instructions) for p in m.parts]

    items = body.get("input")
    if isinstance(items, str):
        turn.messages = [Message(role="user", parts=[Part(type="text", text=items)])]
    elif isinstance(items, list):
        turn.messages = _input_messages(items)
    elif items is not None:
        add_error(turn, f"request input is a {type(items).__name__}, not a string or a list")


def parse_ws_request(body: dict[str, Any], turn: Turn) -> None:
    """The agent's message over a WebSocket: a `response.create` event holds the same fields as
    the POST body (its `type` aside), and the reply always streams."""
    kind = body.get("type")
    parse_request({k: v for k, v in body.items() if k != "type"}, turn)
    turn.stream = True
    if kind != "response.create":
        add_error(turn, f"agent message of type {kind!r}, not response.create")


# ---- response ------------------------------------------------------------------------------


def parse_response(body: bytes, turn: Turn, streamed: bool) -> None:
    if streamed:
        _parse_stream(body, turn)
        return
    data = json_object(body, turn)
    if data is None:
        return
    if "output" not in data and data.get("error"):  # an error body sent with a 2xx status
        add_error(turn, _error_text(data["error"]))
        return
    _apply_response(data, turn)
    output = data.get("output")
    message = _output_message(output if isinstance(output, list) else [])
    turn.outputs = [message] if message else []


def _apply_response(response: dict[str, Any], turn: Turn) -> None:
    """Ids, usage, status and error of a Response object (plain, or a stream's last event)."""
    _apply_ids(response, turn)
    usage = response.get("usage")
    if isinstance(usage, dict):
        turn.usage = _usage(usage)
    status = response.get("status")
    if isinstance(status, str):
        turn.stop_reason = _stop_reason(status, response.get("incomplete_details"))
    error = response.get("error")
    if error:
        add_error(turn, _error_text(error))


def _apply_ids(response: dict[str, Any], turn: Turn) -> None:
    rid, model = response.get("id"), response.get("model")
    if isinstance(rid, str):
        turn.response_id = rid
    if isinstance(model, str):
        turn.response_model = model


def _stop_reason(status: str, details: Any) -> str:
    if status == "incomplete":
        reason = details.get("reason") if isinstance(details, dict) else None
        return f"incomplete:{reason}" if reason else "incomplete"
    return status


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        code, message = error.get("code") or error.get("type"), error.get("message")
        if code and message:
            return f"{code}: {message}"
        return str(message or code or error)
    return str(error)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _usage(usage: dict[str, Any]) -> Usage:
    inputs = usage.get("input_tokens_details")
    outputs = usage.get("output_tokens_details")
    inputs = inputs if isinstance(inputs, dict) else {}
    outputs = outputs if isinstance(outputs, dict) else {}
    return Usage(
        input_tokens=_int(usage.get("input_tokens")),  # already counts the cached tokens
        output_tokens=_int(usage.get("output_tokens")),
        cache_read_tokens=_int(inputs.get("cached_tokens")),
        cache_write_tokens=_int(inputs.get("cache_write_tokens")),
        reasoning_tokens=_int(outputs.get("reasoning_tokens")),
    )


# ---- stream --------------------------------------------------------------------------------


@dataclass
class _Stream:
    """Output items as a stream has built them so far, by output_index."""

    items: dict[int, dict[str, Any]] = field(default_factory=dict)
    final: dict[str, Any] | None = None  # the Response of the terminal event
    terminal: str = ""  # that event's type
    malformed: int = 0

    def item(self, event: dict[str, Any]) -> dict[str, Any] | None:
        index = event.get("output_index")
        return self.items.get(index) if isinstance(index, int) else None

    def put(self, event: dict[str, Any]) -> None:
        index, item = event.get("output_index"), event.get("item")
        if isinstance(index, int) and isinstance(item, dict):
            self.items[index] = dict(item)

    def output(self) -> list[dict[str, Any]]:
        return [self.items[i] for i in sorted(self.items)]


def _slot(item: dict[str, Any], key: str, event: dict[str, Any], index_key: str) -> dict[str, Any]:
    """The content (or summary) part an event addresses, made when no .added event made it."""
    parts = item.get(key)
    if not isinstance(parts, list):
        parts = item[key] = []
    index = event.get(index_key)
    index = index if isinstance(index, int) and index >= 0 else 0
    while len(parts) <= index:
        parts.append({})
    if not isinstance(parts[index], dict):
        parts[index] = {}
    slot: dict[str, Any] = parts[index]
    return slot


def _append(target: dict[str, Any], key: str, delta: Any) -> None:
    if isinstance(delta, str):
        previous = target.get(key)
        target[key] = (previous if isinstance(previous, str) else "") + delta


def _set_part(item: dict[str, Any], key: str, event: dict[str, Any], index_key: str) -> None:
    part = event.get("part")
    if isinstance(part, dict):
        _slot(item, key, event, index_key).update(part)


# What each in-between event does to the item it addresses.
def _on_item_event(kind: str, item: dict[str, Any], event: dict[str, Any]) -> None:
    delta = event.get("delta")
    match kind:
        case "response.content_part.added" | "response.content_part.done":
            _set_part(item, "content", event, "content_index")
        case "response.output_text.delta":
            slot = _slot(item, "content", event, "content_index")
            slot.setdefault("type", "output_text")
            _append(slot, "text", delta)
        case "response.output_text.done" if isinstance(event.get("text"), str):
            _slot(item, "content", event, "content_index").update(
                type="output_text", text=event["text"]
            )
        case "response.refusal.delta":
            slot = _slot(item, "content", event, "content_index")
            slot.setdefault("type", "refusal")
            _append(slot, "refusal", delta)
        case "response.refusal.done" if isinstance(event.get("refusal"), str):
            _slot(item, "content", event, "content_index").update(
                type="refusal", refusal=event["refusal"]
            )
        case "response.function_call_arguments.delta":
            _append(item, "arguments", delta)
        case "response.function_call_arguments.done" if isinstance(event.get("arguments"), str):
            item["arguments"] = event["arguments"]
        case "response.custom_tool_call_input.delta":
            _append(item, "input", delta)
        case "response.custom_tool_call_input.done" if isinstance(event.get("input"), str):
            item["input"] = event["input"]
        case "response.reasoning_summary_part.added" | "response.reasoning_summary_part.done":
            _set_part(item, "summary", event, "summary_index")
        case "response.reasoning_summary_text.delta":
            _append(_slot(item, "summary", event, "summary_index"), "text", delta)
        case "response.reasoning_summary_text.done" if isinstance(event.get("text"), str):
            _slot(item, "summary", event, "summary_index")["text"] = event["text"]
        case _:
            pass  # reasoning_text, annotations, audio, tool progress: nothing we keep


def _on_event(kind: str, event: dict[str, Any], stream: _Stream, turn: Turn) -> None:
    response = event.get("response")
    if kind in _TERMINAL_EVENTS:
        stream.final = response if isinstance(response, dict) else {}
        stream.terminal = kind
    elif kind in ("response.created", "response.in_progress", "response.queued"):
        if isinstance(response, dict):
            _apply_ids(response, turn)
    elif kind in ("response.output_item.added", "response.output_item.done"):
        stream.put(event)
    elif kind == "error":
        # {type: error, code, message, param}; older servers nest them under `error`
        nested = event.get("error")
        add_error(turn, _error_text(nested if isinstance(nested, dict) else event))
    else:
        item = stream.item(event)
        if item is not None:
            _on_item_event(kind, item, event)


def _parse_stream(body: bytes, turn: Turn) -> None:
    _parse_events(events(body), turn, "SSE event")


def parse_messages(messages: list[bytes], turn: Turn) -> None:
    """The reply over a WebSocket: the same events as the SSE stream, one JSON text frame each."""
    _parse_events(((None, m) for m in messages), turn, "WebSocket message")


def _parse_events(pairs: Iterable[tuple[str | None, bytes | str]], turn: Turn, what: str) -> None:
    stream = _Stream()
    for name, data in pairs:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            stream.malformed += 1
            continue
        if not isinstance(event, dict):
            stream.malformed += 1
            continue
        kind = event.get("type")
        kind = kind if isinstance(kind, str) else name or ""
        _on_event(kind, event, stream, turn)
        if stream.final is not None:
            break
    if stream.malformed:
        add_error(turn, f"{stream.malformed} malformed {what}(s) skipped")
    _finish_stream(stream, turn)


def _finish_stream(stream: _Stream, turn: Turn) -> None:
    assembled = _output_message(stream.output())
    final = stream.final
    if final is None:
        turn.outputs = [assembled] if assembled else []
        add_error(turn, "stream ended before response.completed")
        return
    _apply_response(final, turn)
    if turn.stop_reason is None:  # a terminal event whose Response says nothing of its status
        turn.stop_reason = stream.terminal.removeprefix("response.")
    output = final.get("output")
    # The terminal Response holds the same items as the plain body would; a server may send it
    # with an empty output, leaving the assembled items.
    message = _output_message(output) if isinstance(output, list) and output else assembled
    if message and assembled and _canonical(message) != _canonical(assembled):
        add_error(turn, "streamed output items differ from the final response.output")
    turn.outputs = [message] if message else []


def _canonical(message: Message) -> list[dict[str, Any]]:
    return [p.canonical() for p in message.parts]
