"""Anthropic Messages API (POST /v1/messages): requests, plain JSON responses and SSE streams.

A streamed response is folded back into the Message object the plain form would have carried
(same content blocks, same usage fields), and both forms then go through the same block and
usage readers, so the two give the same Turn by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tapewire.model import Message, Part, Turn, Usage
from tapewire.providers.parts import add_error, digest, json_object
from tapewire.providers.sse import events

# Request fields the Turn keeps in their own slots; every other top-level field is a param.
_OWN_FIELDS = frozenset({"model", "messages", "system", "tools", "stream"})

# Left out of blocks kept whole: prompt-cache markers and the tool_use `caller` are transport
# hints, not content; citations are not kept either, because a stream sends them as
# citations_delta events this codec does not assemble, and the plain form must give the same Turn.
_TRANSPORT_FIELDS = frozenset({"cache_control", "caller", "citations"})


# ---- requests ------------------------------------------------------------------------------


def parse_request(body: dict[str, Any], turn: Turn) -> None:
    model = body.get("model")
    turn.model = model if isinstance(model, str) else None
    turn.stream = body.get("stream") is True
    tools = body.get("tools")
    turn.tools = list(tools) if isinstance(tools, list) else []
    defaults = _tool_defaults(turn.tools)
    turn.system = _content(body.get("system"), turn, defaults)
    turn.messages = _messages(body.get("messages"), turn, defaults)
    turn.params = {k: v for k, v in body.items() if k not in _OWN_FIELDS}


def _messages(value: Any, turn: Turn, defaults: _Defaults) -> list[Message]:
    if value is None:
        return []
    if not isinstance(value, list):
        add_error(turn, "request messages is not a list")
        return []
    out: list[Message] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            add_error(turn, f"request message {i} is not an object")
            continue
        role = item.get("role")
        out.append(
            Message(
                role=role if isinstance(role, str) else "",
                parts=_content(item.get("content"), turn, defaults),
            )
        )
    return out


def _content(value: Any, turn: Turn, defaults: _Defaults) -> list[Part]:
    """A message's (or the system prompt's) content: a string is one text block."""
    if value is None:
        return []
    if isinstance(value, str):
        return [Part(type="text", text=value)]
    if isinstance(value, list):
        return [_part(block, defaults) for block in value]
    add_error(turn, f"content of type {type(value).__name__} not understood")
    return [Part(type="other", data=value)]


# ---- content blocks (shared by requests, plain responses and assembled streams) -------------

# Tool name -> {argument: the default its input_schema declares}.
_Defaults = dict[str | None, dict[str, Any]]


def _tool_defaults(tools: list[Any]) -> _Defaults:
    out: _Defaults = {}
    for tool in tools:
        schema = tool.get("input_schema") if isinstance(tool, dict) else None
        props = schema.get("properties") if isinstance(schema, dict) else None
        if not isinstance(props, dict):
            continue
        found = {
            k: p["default"] for k, p in props.items() if isinstance(p, dict) and "default" in p
        }
        if found:
            out[_str(tool.get("name"))] = found
    return out


def _drop_defaults(arguments: Any, defaults: dict[str, Any] | None) -> Any:
    """Tool arguments less the top-level ones that equal their schema default.

    Claude Code validates a tool call's input against the tool's schema and resends the
    validated input, defaults filled in: the model's Edit {file_path, old_string, new_string}
    comes back in the next request as {replace_all: false, file_path, ...}. An argument equal to
    its declared default means the same as its absence, so both forms get the same id.
    Compared as JSON, so false never matches a default of 0.
    """
    if not defaults or not isinstance(arguments, dict):
        return arguments
    return {
        k: v for k, v in arguments.items() if k not in defaults or _json(v) != _json(defaults[k])
    }


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _part(block: Any, defaults: _Defaults) -> Part:
    if not isinstance(block, dict):
        return Part(type="other", data=block)
    kind = block.get("type")
    if kind == "text":
        return Part(type="text", text=_str(block.get("text")) or "")
    if kind == "thinking":
        # A stream opens a thinking block with signature "": the same as no signature yet.
        return Part(
            type="thinking",
            text=_str(block.get("thinking")) or "",
            signature=_str(block.get("signature")) or None,
        )
    if kind == "redacted_thinking":
        return Part(type="redacted_thinking", data=block.get("data"))
    if kind == "tool_use":
        return Part(
            type="tool_call",
            id=_str(block.get("id")),
            name=_str(block.get("name")),
            arguments=_drop_defaults(block.get("input", {}), defaults.get(_str(block.get("name")))),
        )
    if kind == "tool_result":
        return _tool_result(block, defaults)
    if kind == "image":
        return _image(block)
    if kind == "server_tool_use":
        data = {k: block.get(k) for k in ("id", "name", "input")}
        return Part(type="other", name="server_tool_use", data=data)
    # document, web_search_tool_result, container_upload, and whatever comes next.
    return Part(type="other", name=_str(kind), data=_other_data(block))


def _tool_result(block: dict[str, Any], defaults: _Defaults) -> Part:
    content = block.get("content")
    if content is None:
        parts: list[Part] = []
    elif isinstance(content, str):
        parts = [Part(type="text", text=content)]
    elif isinstance(content, list):
        parts = [_part(item, defaults) for item in content]
    else:
        parts = [Part(type="other", data=content)]
    is_error = block.get("is_error")
    return Part(
        type="tool_result",
        id=_str(block.get("tool_use_id")),
        content=parts,
        is_error=is_error if isinstance(is_error, bool) else None,
    )


def _image(block: dict[str, Any]) -> Part:
    source = block.get("source")
    if not isinstance(source, dict):
        return Part(type="other", name="image", data=_other_data(block))
    kind = source.get("type")
    if kind == "base64":
        return Part(
            type="image",
            media_type=_str(source.get("media_type")),
            data=_digest(source.get("data")),
        )
    if kind == "url":
        return Part(type="image", data=_str(source.get("url")))
    if kind == "file":
        return Part(type="image", data=_str(source.get("file_id")))
    return Part(type="other", name="image", data=_other_data(block))


def _other_data(block: dict[str, Any]) -> dict[str, Any]:
    """A block kept whole, less transport hints; inline base64 (a PDF document) becomes its
    digest, as for images, so a stored node never carries the file itself."""
    data = {k: v for k, v in block.items() if k not in _TRANSPORT_FIELDS}
    source = data.get("source")
    if isinstance(source, dict) and source.get("type") == "base64" and "data" in source:
        data["source"] = {**source, "data": _digest(source["data"])}
    return data


def _digest(value: Any) -> str | None:
    return digest(value) if isinstance(value, str) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# ---- responses -----------------------------------------------------------------------------


def parse_response(body: bytes, turn: Turn, streamed: bool) -> None:
    if not body.strip():
        add_error(turn, "response body is empty")
        return
    if streamed:
        _parse_stream(body, turn)
        return
    message = json_object(body, turn)
    if message is None:
        return
    if message.get("type") == "error":
        add_error(turn, _error_text(message.get("error")))
    else:
        _apply_message(message, turn)


def _apply_message(message: dict[str, Any], turn: Turn) -> None:
    """Fill the turn from a complete Message object (plain, or rebuilt from a stream)."""
    turn.response_id = _str(message.get("id"))
    turn.response_model = _str(message.get("model"))
    turn.stop_reason = _str(message.get("stop_reason"))
    content = message.get("content")
    blocks = content if isinstance(content, list) else []
    role = _str(message.get("role")) or "assistant"
    defaults = _tool_defaults(turn.tools)  # parse_request has run: the tools are the request's
    turn.outputs = [Message(role=role, parts=[_part(b, defaults) for b in blocks])]
    usage = message.get("usage")
    turn.usage = _usage(usage if isinstance(usage, dict) else {})


def _usage(raw: dict[str, Any]) -> Usage:
    """Anthropic's input_tokens counts only the uncached prompt tokens; the cache reads and
    writes are reported beside it, and the total prompt is the sum of the three."""
    uncached = _int(raw.get("input_tokens"))
    cache_read = _int(raw.get("cache_read_input_tokens"))
    cache_write = _int(raw.get("cache_creation_input_tokens"))
    total = None
    if uncached is not None:
        total = uncached + (cache_read or 0) + (cache_write or 0)
    return Usage(
        input_tokens=total,
        output_tokens=_int(raw.get("output_tokens")),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=_int(_field(raw, "cache_creation", "ephemeral_1h_input_tokens")),
        reasoning_tokens=_int(_field(raw, "output_tokens_details", "thinking_tokens")),
    )


def _field(raw: dict[str, Any], outer: str, inner: str) -> Any:
    nested = raw.get(outer)
    return nested.get(inner) if isinstance(nested, dict) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        kind, message = _str(error.get("type")), _str(error.get("message"))
        if kind and message:
            return f"{kind}: {message}"
        return message or kind or "error event without a message"
    return f"error: {error}"


# ---- streams -------------------------------------------------------------------------------


@dataclass
class _Block:
    """One content block being assembled from its start event and its deltas."""

    start: dict[str, Any]
    text: list[str] = field(default_factory=list)  # text_delta / thinking_delta pieces
    partial_json: list[str] = field(default_factory=list)
    signature: str | None = None
    final: dict[str, Any] | None = None  # set at content_block_stop

    def finish(self, turn: Turn) -> dict[str, Any]:
        """The block as a plain response would carry it; tool input is parsed here, once."""
        if self.final is not None:
            return self.final
        block = dict(self.start)
        kind = block.get("type")
        if kind == "text":
            block["text"] = (_str(block.get("text")) or "") + "".join(self.text)
        elif kind == "thinking":
            block["thinking"] = (_str(block.get("thinking")) or "") + "".join(self.text)
            if self.signature is not None:
                block["signature"] = self.signature
        if self.partial_json:
            block["input"] = _parse_input("".join(self.partial_json), block, turn)
        self.final = block
        return block


def _parse_input(text: str, block: dict[str, Any], turn: Turn) -> Any:
    if not text.strip():
        return {}
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        add_error(turn, f"{block.get('type')} {block.get('id')}: input is not valid JSON")
        return text


@dataclass
class _Stream:
    message: dict[str, Any] = field(default_factory=dict)  # from message_start
    usage: dict[str, Any] = field(default_factory=dict)  # each field as last reported
    blocks: dict[int, _Block] = field(default_factory=dict)
    stop_reason: str | None = None
    started: bool = False
    stopped: bool = False


def _parse_stream(body: bytes, turn: Turn) -> None:
    state = _Stream()
    for name, data in events(body):
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            add_error(turn, f"malformed SSE data in {name or 'unnamed'} event: {data[:80]!r}")
            continue
        if isinstance(event, dict):
            _apply_event(event, name, state, turn)
    if not state.started and not state.blocks:
        if not state.stopped:
            add_error(turn, "stream ended before message_start")
        return
    message = dict(state.message)
    message["content"] = [state.blocks[i].finish(turn) for i in sorted(state.blocks)]
    if state.stop_reason is not None:
        message["stop_reason"] = state.stop_reason
    message["usage"] = state.usage
    _apply_message(message, turn)
    if not state.stopped:
        add_error(turn, "stream ended before message_stop")


def _apply_event(event: dict[str, Any], name: str | None, state: _Stream, turn: Turn) -> None:
    kind = event.get("type") or name
    if kind == "message_start":
        message = event.get("message")
        if isinstance(message, dict):
            state.started = True
            state.message = message
            _merge_usage(state, message.get("usage"))
    elif kind == "content_block_start":
        index, block = _int(event.get("index")), event.get("content_block")
        if index is not None and isinstance(block, dict):
            state.blocks[index] = _Block(start=block)
    elif kind == "content_block_delta":
        _apply_delta(event, state, turn)
    elif kind == "content_block_stop":
        index = _int(event.get("index"))
        if index is not None and index in state.blocks:
            state.blocks[index].finish(turn)
    elif kind == "message_delta":
        delta = event.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
            state.stop_reason = delta["stop_reason"]
        _merge_usage(state, event.get("usage"))
    elif kind == "message_stop":
        state.stopped = True
    elif kind == "error":
        add_error(turn, _error_text(event.get("error")))
    # ping and event types added later carry nothing a Turn holds.


def _apply_delta(event: dict[str, Any], state: _Stream, turn: Turn) -> None:
    index, delta = _int(event.get("index")), event.get("delta")
    if not isinstance(delta, dict):
        return
    block = state.blocks.get(index) if index is not None else None
    if block is None:
        add_error(turn, f"content_block_delta for block {index} that never started")
        return
    kind = delta.get("type")
    if kind == "text_delta":
        block.text.append(_str(delta.get("text")) or "")
    elif kind == "thinking_delta":
        block.text.append(_str(delta.get("thinking")) or "")
    elif kind == "signature_delta":
        # The signature arrives whole, in one delta; a later one replaces it, as the SDK does.
        block.signature = _str(delta.get("signature"))
    elif kind == "input_json_delta":
        block.partial_json.append(_str(delta.get("partial_json")) or "")
    # citations_delta: citations are not kept (see _TRANSPORT_FIELDS); others are unknown.


def _merge_usage(state: _Stream, usage: Any) -> None:
    """message_delta repeats the counts message_start gave, with the final output count: each
    field is taken from the last event that reports it, never added up."""
    if isinstance(usage, dict):
        state.usage.update({k: v for k, v in usage.items() if v is not None})
