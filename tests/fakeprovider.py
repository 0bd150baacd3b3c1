"""A fake LLM provider speaking the providers' exact wire formats, for tests and the benchmark.

`FakeProvider` runs an aiohttp server on 127.0.0.1 (OS-chosen port) in its own thread with
its own event loop, so synchronous SDK clients in the calling thread can talk to it:

    with FakeProvider() as fake:
        client = anthropic.Anthropic(base_url=fake.url, api_key="x")
        ...
        fake.received  # every request, in arrival order

Routes: ``POST /v1/messages`` (Anthropic Messages; replays a loaded recording when the body
matches a recorded turn byte for byte), ``POST /v1/chat/completions`` (OpenAI Chat
Completions), ``POST /v1/responses`` (OpenAI Responses), ``POST /api/chat`` and
``POST /api/generate`` (Ollama), ``POST /v1beta/models/<model>:generateContent`` and
``:streamGenerateContent`` (Gemini, see `fakegemini`), ``POST /backend-api/codex/responses``
(the ChatGPT backend's Responses API). Failure modes are chosen per request with the
``x-fake-scenario`` header (see `SCENARIOS`). Everything is deterministic.

Scripted answers: ``fake.script(name, [Reply(...), ...])`` loads a list of answers that the
requests carrying the header ``x-fake-script: <name>`` take one at a time, in order, on
``/v1/messages`` and ``/v1/chat/completions``, each in that route's wire format, streamed when
the request asks for it. A tapewire proxy strips its ``/s/<session>`` prefix before
forwarding, so the header, which it forwards as sent, is what names the script.

The model's answer: given tools, it calls the first one (``{"city": "Paris"}``), unless the
request ends with a tool's result, which it answers with text, as a real model would.

This module must not import tapewire: it stands in for the world outside the proxy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import random
import socket
import ssl
import threading
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

import fakegemini

__all__ = [
    "SCENARIOS",
    "FakeProvider",
    "Received",
    "RecordedTurn",
    "Reply",
    "fake_bytes",
    "load_recording",
    "split_gzip_events",
    "unreachable_port",
]

SCENARIOS = frozenset({"echo", "paced", "reset", "hang", "status", "gzip", "repeat-headers", "big"})

TEXT = "Hello from the fake provider."
TEXT_PIECES = ["Hello", " from the", " fake", " provider."]
TOOL_ARGS = '{"city":"Paris"}'
TOOL_ARG_PIECES = ['{"city"', ':"Par', 'is"}']
INPUT_TOKENS = 12
OUTPUT_TOKENS = 7
CREATED = 1767225600  # 2026-01-01T00:00:00Z, fixed so answers are deterministic
OLLAMA_CREATED_AT = "2026-01-01T00:00:00.000000000Z"
SSE_TYPE = "text/event-stream; charset=utf-8"
JSON_TYPE = "application/json"
BIG_DEFAULT = 50 * 1024 * 1024
BIG_CHUNK = 64 * 1024

# Recorded response headers that describe the original connection, not the message.
_HOP_HEADERS = frozenset({"transfer-encoding", "content-length", "date"})


@dataclass
class Received:
    """One request as the fake provider saw it."""

    method: str
    raw_path: str  # path + query exactly as received
    headers: list[tuple[str, str]]  # as received, in order, repeats kept
    body: bytes


@dataclass
class RecordedTurn:
    """One turn of a wire recording (tests/fixtures/recordings/<set>/turn-*/)."""

    name: str
    request_headers: list[tuple[str, str]]
    request_body: bytes
    status: int
    response_headers: list[tuple[str, str]]
    response_body: bytes  # verbatim wire bytes (compressed per content_encoding)
    content_encoding: str
    chunks: list[bytes] = field(default_factory=list)  # response_body as event-sized writes


@dataclass(frozen=True)
class Reply:
    """One scripted answer of the model (see `FakeProvider.script`).

    `input_tokens` counts every prompt token, the cached ones (`cache_read_tokens`) included,
    as OpenAI's ``prompt_tokens`` does; Anthropic's wire reports the uncached rest as its
    ``input_tokens`` beside ``cache_read_input_tokens``. A `status` other than 200 answers with
    the provider's error body for it (and ``retry-after: 0``, ``retry-after-ms: 1``, so SDK
    retries come at once); text, tool calls and usage are then unused. `stop` overrides the
    stop reason, as the provider spells it ("max_tokens", "length"); by default it is
    tool_use/tool_calls when there are tool calls, else end_turn/stop. `delay`: seconds to
    wait before answering.
    """

    text: str | None = None
    tool_calls: Sequence[tuple[str, dict[str, Any]]] = ()  # (tool name, arguments)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    status: int = 200
    stop: str | None = None
    delay: float = 0.0


@dataclass
class _Script:
    replies: deque[Reply]
    answered: int = 0  # replies taken so far
    calls: int = 0  # tool call ids handed out so far


@dataclass
class _Reply:
    status: int
    headers: list[tuple[str, str]]
    pieces: list[bytes]
    streaming: bool  # chunked, one write per piece; otherwise Content-Length


# --------------------------------------------------------------------------- recordings


def split_gzip_events(data: bytes) -> list[bytes]:
    """Cut a gzip-compressed SSE body into event-sized writes.

    The compressed bytes are fed to a gzip decompressor one byte at a time; a cut is made
    right after the byte whose decompressed output passes the end of an SSE event
    (``\\n\\n``). When a sync-flush marker (an empty stored block, ``00 00 ff ff``) follows
    within a few bytes and produces no further output, the cut moves past it, so a chunk
    ends where the original server flushed. Bytes after the last event (the final block
    and gzip trailer) join the last chunk. ``b"".join(result) == data`` always holds.
    """
    decoded = zlib.decompress(data, wbits=31)
    ends: list[int] = []
    pos = decoded.find(b"\n\n")
    while pos != -1:
        ends.append(pos + 2)
        pos = decoded.find(b"\n\n", pos + 2)
    if not ends:
        return [data] if data else []

    chunks: list[bytes] = []
    dec = zlib.decompressobj(wbits=31)
    produced = 0
    start = 0
    next_end = 0
    i = 0
    while i < len(data) and next_end < len(ends):
        produced += len(dec.decompress(data[i : i + 1]))
        i += 1
        if produced < ends[next_end]:
            continue
        while next_end < len(ends) and ends[next_end] <= produced:
            next_end += 1
        marker = data.find(b"\x00\x00\xff\xff", i, i + 8)
        if marker != -1:
            probe = dec.copy()
            if not probe.decompress(data[i : marker + 4]):
                dec = probe
                i = marker + 4
        chunks.append(data[start:i])
        start = i
    if start < len(data):
        if chunks:
            chunks[-1] += data[start:]
        else:
            chunks.append(data[start:])
    return chunks


def load_recording(directory: Path | str) -> list[RecordedTurn]:
    """Load every ``turn-*`` bundle of a recording set, sorted by directory name."""
    turns: list[RecordedTurn] = []
    for turn_dir in sorted(p for p in Path(directory).iterdir() if p.is_dir()):
        request = json.loads((turn_dir / "request.json").read_text(encoding="utf-8"))
        meta = json.loads((turn_dir / "meta.json").read_text(encoding="utf-8"))
        body = (turn_dir / "response.sse").read_bytes()
        encoding = str(meta.get("content_encoding") or "")
        if encoding.strip().lower() in ("gzip", "x-gzip"):
            chunks = split_gzip_events(body)
        else:
            chunks = [body] if body else []
        turns.append(
            RecordedTurn(
                name=turn_dir.name,
                request_headers=[(str(k), str(v)) for k, v in request["headers"]],
                request_body=base64.b64decode(request["body_b64"]),
                status=int(meta["status"]),
                response_headers=[(str(k), str(v)) for k, v in meta["response_headers"]],
                response_body=body,
                content_encoding=encoding,
                chunks=chunks,
            )
        )
    return turns


# --------------------------------------------------------------------------- helpers


def unreachable_port() -> int:
    """A 127.0.0.1 port with nothing listening on it (bound, read, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def fake_bytes(total: int, chunk_size: int = BIG_CHUNK) -> Iterator[bytes]:
    """Deterministic pseudo-random bytes, as the ``big`` scenario sends them."""
    rng = random.Random(0x7A9E)
    left = total
    while left > 0:
        n = min(chunk_size, left)
        yield rng.randbytes(n)
        left -= n


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _json_reply(status: int, obj: object, extra: list[tuple[str, str]] | None = None) -> _Reply:
    headers = [("Content-Type", JSON_TYPE), *(extra or [])]
    return _Reply(status, headers, [_dumps(obj).encode()], streaming=False)


def _header_int(request: web.Request, name: str, default: int) -> int:
    value = request.headers.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        return default


def _parse_json(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _first_tool_name(tools: object) -> str | None:
    if not isinstance(tools, list) or not tools:
        return None
    tool = tools[0]
    if not isinstance(tool, dict):
        return "tool"
    function = tool.get("function")
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return str(function["name"])  # OpenAI / Ollama shape
    name = tool.get("name")
    return name if isinstance(name, str) else "tool"  # Anthropic / Responses shape


def _ends_with_tool_result(messages: object) -> bool:
    """Whether a messages list ends with a tool's result: a role "tool" message (OpenAI Chat,
    Ollama) or a user message holding tool_result blocks (Anthropic)."""
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return False
    last = messages[-1]
    if last.get("role") == "tool":
        return True
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content
    )


def _tool_to_call(req: dict[str, Any]) -> str | None:
    """The tool the model calls in answer to this request, or None for a text answer."""
    if _ends_with_tool_result(req.get("messages")):
        return None
    return _first_tool_name(req.get("tools"))


# --------------------------------------------------------------------------- the model's answers

# The default answer's text and arguments reach a stream in these pieces (tests count them).
_KNOWN_PIECES = {TEXT: TEXT_PIECES, TOOL_ARGS: TOOL_ARG_PIECES}


def _pieces(text: str, parts: int = 3, most: int = 4096) -> list[str]:
    """`text` cut into about `parts` pieces (more when long), as a stream delivers it; the
    default answer's text and arguments into TEXT_PIECES and TOOL_ARG_PIECES."""
    known = _KNOWN_PIECES.get(text)
    if known is not None:
        return list(known)
    if not text:
        return []
    size = min(most, max(1, -(-len(text) // parts)))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _default_reply(req: dict[str, Any]) -> Reply:
    """The model's answer when no script speaks (see the module's docstring)."""
    tool = _tool_to_call(req)
    return Reply(
        text=None if tool else TEXT,
        tool_calls=[(tool, json.loads(TOOL_ARGS))] if tool else (),
        input_tokens=INPUT_TOKENS,
        output_tokens=OUTPUT_TOKENS,
    )


# --------------------------------------------------------------------------- Anthropic


def _anthropic_error(status: int, kind: str, message: str) -> _Reply:
    return _json_reply(
        status,
        {"type": "error", "error": {"type": kind, "message": message}},
        [("request-id", "req_fake01")],
    )


def _sse_event(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {_dumps(data)}\n\n".encode()


def _anthropic_answer(
    req: dict[str, Any],
    reply: Reply,
    *,
    message_id: str = "msg_fake01",
    call_ids: Sequence[str] | None = None,
    request_id: str = "req_fake01",
    cache_usage: bool = False,
) -> _Reply:
    """`reply` as a Messages answer, streamed when `req` asks for it. `call_ids` name its
    tool calls; `cache_usage` adds the cache token counts to the usage. The ids default to
    the default answer's (its one tool call is ``toolu_fake1``)."""
    if call_ids is None:
        call_ids = ["toolu_fake1"] * len(reply.tool_calls)
    stop = reply.stop or ("tool_use" if reply.tool_calls else "end_turn")
    blocks: list[dict[str, Any]] = []
    if reply.text is not None:
        blocks.append({"type": "text", "text": reply.text})
    for call_id, (name, args) in zip(call_ids, reply.tool_calls, strict=True):
        blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": args})
    usage = {"input_tokens": reply.input_tokens - reply.cache_read_tokens}
    if cache_usage:
        usage["cache_creation_input_tokens"] = 0
        usage["cache_read_input_tokens"] = reply.cache_read_tokens
    usage["output_tokens"] = reply.output_tokens
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": req.get("model", "claude-fake"),
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    extra = [("request-id", request_id), ("anthropic-organization-id", "fake-org")]
    if not req.get("stream"):
        return _json_reply(200, message, extra)

    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [_sse_event("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            first: dict[str, Any] = {"type": "text", "text": ""}
            deltas: list[dict[str, Any]] = [
                {"type": "text_delta", "text": p} for p in _pieces(block["text"])
            ]
        else:
            first = {**block, "input": {}}
            partial = ["", *_pieces(_dumps(block["input"]))]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in partial]
        events.append(
            _sse_event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": first},
            )
        )
        if index == 0:
            events.append(_sse_event("ping", {"type": "ping"}))
        events.extend(
            _sse_event(
                "content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}
            )
            for d in deltas
        )
        events.append(
            _sse_event("content_block_stop", {"type": "content_block_stop", "index": index})
        )
    events.append(
        _sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": reply.output_tokens},
            },
        )
    )
    events.append(_sse_event("message_stop", {"type": "message_stop"}))
    headers = [("Content-Type", SSE_TYPE), ("Cache-Control", "no-cache"), *extra]
    return _Reply(200, headers, events, streaming=True)


# --------------------------------------------------------------------------- OpenAI


def _openai_error(status: int, message: str, kind: str = "server_error") -> _Reply:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return _json_reply(status, body, [("x-request-id", "req_fake01")])


def _chat_answer(
    req: dict[str, Any],
    reply: Reply,
    *,
    completion_id: str = "chatcmpl-fake01",
    call_ids: Sequence[str] | None = None,
    request_id: str = "req_fake01",
    usage_details: bool = False,
) -> _Reply:
    """`reply` as a Chat Completions answer, streamed when `req` asks for it. `call_ids` name
    its tool calls; `usage_details` adds the prompt and completion token details. The ids
    default to the default answer's (its one tool call is ``call_fake1``)."""
    if call_ids is None:
        call_ids = ["call_fake1"] * len(reply.tool_calls)
    finish = reply.stop or ("tool_calls" if reply.tool_calls else "stop")
    calls: list[dict[str, Any]] = [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": _dumps(args)}}
        for call_id, (name, args) in zip(call_ids, reply.tool_calls, strict=True)
    ]
    usage: dict[str, Any] = {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }
    if usage_details:
        usage["prompt_tokens_details"] = {
            "cached_tokens": reply.cache_read_tokens,
            "audio_tokens": 0,
        }
        usage["completion_tokens_details"] = {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    extra = [("x-request-id", request_id), ("openai-processing-ms", "1")]
    base = {"id": completion_id, "created": CREATED, "model": req.get("model", "gpt-fake")}
    if not req.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        completion = {
            **base,
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            ],
            "usage": usage,
            "system_fingerprint": "fp_fake",
        }
        return _json_reply(200, completion, extra)

    options = req.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        obj: dict[str, Any] = {
            **base,
            "object": "chat.completion.chunk",
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if include_usage:
            obj["usage"] = None
        return f"data: {_dumps(obj)}\n\n".encode()

    heads = [
        {"index": i, **call, "function": {**call["function"], "arguments": ""}}
        for i, call in enumerate(calls)
    ]
    # As the API does, an answer without text opens with its first tool call.
    merged = reply.text is None and bool(calls)
    opening: dict[str, Any] = {"role": "assistant", "content": None if reply.text is None else ""}
    if merged:
        opening["tool_calls"] = heads[:1]
    else:
        opening["refusal"] = None
    events = [chunk(opening)]
    events.extend(chunk({"content": p}) for p in _pieces(reply.text or ""))
    for index, (call, head) in enumerate(zip(calls, heads, strict=True)):
        if index or not merged:
            events.append(chunk({"tool_calls": [head]}))
        events.extend(
            chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]})
            for p in _pieces(call["function"]["arguments"])
        )
    events.append(chunk({}, finish))
    if include_usage:
        tail = {
            **base,
            "object": "chat.completion.chunk",
            "system_fingerprint": "fp_fake",
            "choices": [],
            "usage": usage,
        }
        events.append(f"data: {_dumps(tail)}\n\n".encode())
    events.append(b"data: [DONE]\n\n")
    headers = [("Content-Type", SSE_TYPE), ("Cache-Control", "no-cache"), *extra]
    return _Reply(200, headers, events, streaming=True)


# --------------------------------------------------------------------------- scripted answers

_ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your rate limit."),
    529: ("overloaded_error", "Overloaded"),
}
_OPENAI_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
}
# Retry at once: the SDKs back off exponentially on ``retry-after: 0`` (they only honour a
# positive delay) but take ``retry-after-ms`` first.
_RETRY_NOW = [("retry-after", "0"), ("retry-after-ms", "1")]


def _scripted_error(anthropic: bool, status: int, message: str | None = None) -> _Reply:
    if anthropic:
        kind, default = _ANTHROPIC_ERRORS.get(
            status, ("api_error" if status >= 500 else "invalid_request_error", "Internal error")
        )
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": kind, "message": message or default},
        }
        headers = [("request-id", f"req_fake{status}")]
    else:
        kind, code, default = _OPENAI_ERRORS.get(
            status,
            ("server_error", None, "The server had an error while processing your request.")
            if status >= 500
            else ("invalid_request_error", None, "Invalid request."),
        )
        body = {"error": {"message": message or default, "type": kind, "param": None,
                          "code": code}}  # fmt: skip
        headers = [("x-request-id", f"req_fake{status}")]
    return _json_reply(status, body, headers + _RETRY_NOW)


# --------------------------------------------------------------------------- OpenAI Responses


def _responses_tool_to_call(req: dict[str, Any]) -> str | None:
    """A Responses request ends with a tool's result when its last input item is one."""
    items = req.get("input")
    if isinstance(items, list) and items and isinstance(items[-1], dict):
        kind = items[-1].get("type")
        if isinstance(kind, str) and kind.endswith("_call_output"):
            return None
    return _first_tool_name(req.get("tools"))


def _responses_usage() -> dict[str, Any]:
    return {
        "input_tokens": INPUT_TOKENS,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
    }


def _response_object(
    req: dict[str, Any],
    response_id: str,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """A Response object (openai-python types/responses/response.py), as the API returns it."""
    tools = req.get("tools")
    return {
        "id": response_id,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": req.get("model", "gpt-fake"),
        "output": output,
        "parallel_tool_calls": req.get("parallel_tool_calls", True),
        "previous_response_id": req.get("previous_response_id"),
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": req.get("store", True),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": req.get("tool_choice", "auto"),
        "tools": tools if isinstance(tools, list) else [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _responses_reply(req: dict[str, Any], serial: str) -> _Reply:
    """``POST /v1/responses``. `serial` (hex) makes the response's and its items' ids unique;
    the function call's call_id stays fixed, so a streamed and a plain answer are the same."""
    response_id, tool = f"resp_{serial}", _responses_tool_to_call(req)
    extra = [("x-request-id", "req_fake01"), ("openai-processing-ms", "1")]
    if tool:
        done_item: dict[str, Any] = {
            "id": f"fc_{serial}",
            "type": "function_call",
            "status": "completed",
            "arguments": TOOL_ARGS,
            "call_id": "call_fake1",
            "name": tool,
        }
    else:
        text_part = {"type": "output_text", "annotations": [], "logprobs": [], "text": TEXT}
        done_item = {
            "id": f"msg_{serial}",
            "type": "message",
            "status": "completed",
            "content": [text_part],
            "role": "assistant",
        }
    final = _response_object(req, response_id, "completed", [done_item], _responses_usage())
    if not req.get("stream"):
        return _json_reply(200, final, extra)

    events: list[bytes] = []

    def emit(kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": len(events), **fields}
        events.append(_sse_event(kind, data))

    started = _response_object(req, response_id, "in_progress", [], None)
    emit("response.created", response=started)
    emit("response.in_progress", response=started)
    item_id = done_item["id"]
    at: dict[str, Any] = {"item_id": item_id, "output_index": 0}
    if tool:
        emit(
            "response.output_item.added",
            output_index=0,
            item={**done_item, "status": "in_progress", "arguments": ""},
        )
        for piece in TOOL_ARG_PIECES:
            emit("response.function_call_arguments.delta", **at, delta=piece)
        emit("response.function_call_arguments.done", **at, arguments=TOOL_ARGS)
    else:
        emit(
            "response.output_item.added",
            output_index=0,
            item={**done_item, "status": "in_progress", "content": []},
        )
        empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        emit("response.content_part.added", **at, content_index=0, part=empty)
        for piece in TEXT_PIECES:
            emit("response.output_text.delta", **at, content_index=0, delta=piece, logprobs=[])
        emit("response.output_text.done", **at, content_index=0, text=TEXT, logprobs=[])
        emit("response.content_part.done", **at, content_index=0, part=text_part)
    emit("response.output_item.done", output_index=0, item=done_item)
    emit("response.completed", response=final)
    headers = [("Content-Type", SSE_TYPE), ("Cache-Control", "no-cache"), *extra]
    return _Reply(200, headers, events, streaming=True)


# --------------------------------------------------------------------------- Ollama


# What the last object of an Ollama answer carries beside the message or text.
_OLLAMA_STATS: dict[str, Any] = {
    "done_reason": "stop",
    "total_duration": 123456789,
    "load_duration": 1234567,
    "prompt_eval_count": INPUT_TOKENS,
    "prompt_eval_duration": 2345678,
    "eval_count": OUTPUT_TOKENS,
    "eval_duration": 3456789,
}
# /api/generate's (deprecated, still sent) encoding of the conversation, for the next request.
_OLLAMA_CONTEXT = [128006, 882, 128007, 271, 9906, 128009]


def _ollama_reply(req: dict[str, Any]) -> _Reply:
    """``POST /api/chat``."""
    model = req.get("model", "llama-fake")
    tool = _tool_to_call(req)

    def line(message: dict[str, Any], *, done: bool) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "model": model,
            "created_at": OLLAMA_CREATED_AT,
            "message": message,
            "done": done,
        }
        if done:
            obj.update(_OLLAMA_STATS)
        return obj

    tool_message: dict[str, Any] = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": tool, "arguments": {"city": "Paris"}}}],
    }
    if not req.get("stream", True):  # Ollama streams unless told otherwise
        message = tool_message if tool else {"role": "assistant", "content": TEXT}
        return _json_reply(200, line(message, done=True))
    if tool:
        lines = [line(tool_message, done=False)]
    else:
        lines = [line({"role": "assistant", "content": p}, done=False) for p in TEXT_PIECES]
    lines.append(line({"role": "assistant", "content": ""}, done=True))
    pieces = [(_dumps(obj) + "\n").encode() for obj in lines]
    return _Reply(200, [("Content-Type", "application/x-ndjson")], pieces, streaming=True)


def _ollama_generate_reply(req: dict[str, Any]) -> _Reply:
    """``POST /api/generate``: text in ``response`` pieces; the last object adds ``context``."""
    model = req.get("model", "llama-fake")

    def line(response: str, *, done: bool) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "model": model,
            "created_at": OLLAMA_CREATED_AT,
            "response": response,
            "done": done,
        }
        if done:
            obj.update(_OLLAMA_STATS)
            obj["context"] = _OLLAMA_CONTEXT
        return obj

    if not req.get("stream", True):
        return _json_reply(200, line(TEXT, done=True))
    lines = [line(p, done=False) for p in TEXT_PIECES]
    lines.append(line("", done=True))
    pieces = [(_dumps(obj) + "\n").encode() for obj in lines]
    return _Reply(200, [("Content-Type", "application/x-ndjson")], pieces, streaming=True)


# --------------------------------------------------------------------------- server

_ROUTES = frozenset(
    {"/v1/messages", "/v1/chat/completions", "/v1/responses", "/api/chat", "/api/generate"}
)


class FakeProvider:
    """An LLM provider on 127.0.0.1, served from its own thread and event loop."""

    def __init__(
        self, recording_dir: Path | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.ssl_context = ssl_context  # served over TLS (https://) when given
        self.turns: list[RecordedTurn] = (
            load_recording(recording_dir) if recording_dir is not None else []
        )
        self._by_body: dict[bytes, RecordedTurn] = {}
        for turn in self.turns:
            self._by_body.setdefault(turn.request_body, turn)
        self.received: list[Received] = []
        self.responses_created = 0  # Responses API answers so far: each gets ids of its own
        self._stored_responses: set[str] = set()  # ids a previous_response_id may name
        self._scripts: dict[str, _Script] = {}  # by x-fake-script name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self.port = 0

    # ---- lifecycle

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> FakeProvider:
        if self._thread is not None:
            raise RuntimeError("FakeProvider already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="fakeprovider", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._astart(), loop).result(timeout=30)
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            self._loop = None
            self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def answer_as(self, body: bytes, turn: RecordedTurn) -> None:
        """Answer a request body (an edited recording) with a recorded turn's response."""
        self._by_body.setdefault(body, turn)

    def script(self, name: str, replies: Sequence[Reply]) -> None:
        """Load (or replace) the script `name`: requests with ``x-fake-script: <name>`` take
        its replies in order. Tool call ids are ``toolu_<name>_<n>`` (Anthropic) or
        ``call_<name>_<n>`` (OpenAI), n counting the script's tool calls from 1."""
        with self._lock:
            self._scripts[name] = _Script(deque(replies))

    def remaining(self, name: str) -> int:
        """How many replies of the script `name` are still to be taken."""
        with self._lock:
            return len(self._scripts[name].replies)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _astart(self) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(middlewares=[self._record], client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # Handlers end promptly on stop (they watch _stopping); the timeout is a backstop.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, auto_decompress=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self._runner = runner
        for address in runner.addresses:
            self.port = int(address[1])
            break

    async def _astop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _pause(self, seconds: float) -> bool:
        """Sleep, returning early (False) when the server is stopping."""
        assert self._stopping is not None
        if seconds <= 0:
            await asyncio.sleep(0)
            return not self._stopping.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
            return False
        return True

    # ---- request handling

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        received = Received(
            method=request.method,
            raw_path=request.raw_path,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
            body=body,
        )
        with self._lock:
            self.received.append(received)
        try:
            return await handler(request)
        except ConnectionError:
            # The client went away mid-answer (a proxy timing out, a cancelled stream). aiohttp
            # quietly drops a response it cannot send; don't log a traceback for it.
            return web.Response(status=499)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()  # cached by aiohttp after the middleware's read
        script = request.headers.get("x-fake-script")
        if script is not None:
            return await self._scripted(request, body, script)
        scenario = request.headers.get("x-fake-scenario")
        if scenario is None:
            return await self._send(request, self._route(request, body))
        if scenario not in SCENARIOS:
            reply = _json_reply(400, {"error": f"unknown x-fake-scenario {scenario!r}"})
            return await self._send(request, reply)
        if scenario == "echo":
            headers = [("Content-Type", "application/octet-stream")]
            return await self._send(request, _Reply(200, headers, [body], streaming=False))
        if scenario == "paced":
            return await self._paced(request)
        if scenario == "reset":
            return await self._reset(request)
        if scenario == "hang":
            if not await self._pause(_header_int(request, "x-fake-delay-ms", 60000) / 1000):
                return await self._send(request, _json_reply(503, {"error": "stopping"}))
            return await self._send(request, self._route(request, body))
        if scenario == "status":
            status = _header_int(request, "x-fake-status", 500)
            if request.path == "/v1/messages":
                reply = _anthropic_error(status, "overloaded_error", "Overloaded")
            else:
                reply = _openai_error(status, "The server had an error processing your request.")
            return await self._send(request, reply)
        if scenario == "gzip":
            return await self._send(request, self._route(request, body), gzip=True)
        if scenario == "repeat-headers":
            reply = _json_reply(
                200,
                {},
                [
                    ("Set-Cookie", "a=1; Path=/"),
                    ("Set-Cookie", "b=2; Path=/"),
                    ("x-repeat", "a"),
                    ("x-repeat", "b"),
                ],
            )
            return await self._send(request, reply)
        return await self._big(request)  # "big"

    def _route(self, request: web.Request, body: bytes) -> _Reply:
        path = request.path
        if fakegemini.handles(path) and request.method == "POST":
            status, headers, pieces, chunked = fakegemini.answer(
                path, request.query, request.headers, body
            )
            return _Reply(status, headers, pieces, streaming=chunked)
        if path == "/backend-api/codex/responses":  # the ChatGPT backend Codex signs in to
            path = "/v1/responses"
        if path not in _ROUTES:
            return _json_reply(404, {"error": "not found"})
        if request.method != "POST":
            return _json_reply(405, {"error": "method not allowed"})
        if path == "/v1/messages":
            turn = self._by_body.get(body)
            if turn is not None:
                headers = [
                    (k, v) for k, v in turn.response_headers if k.lower() not in _HOP_HEADERS
                ]
                return _Reply(turn.status, headers, turn.chunks, streaming=True)
        req = _parse_json(body)
        if path == "/v1/messages":
            if req is None:
                return _anthropic_error(400, "invalid_request_error", "body is not a JSON object")
            return _anthropic_answer(req, _default_reply(req))
        if path == "/v1/chat/completions":
            if req is None:
                return _openai_error(400, "body is not a JSON object", "invalid_request_error")
            return _chat_answer(req, _default_reply(req))
        if path == "/v1/responses":
            if req is None:
                return _openai_error(400, "body is not a JSON object", "invalid_request_error")
            return self._responses(req)
        if req is None:
            return _json_reply(400, {"error": "body is not a JSON object"})
        if path == "/api/generate":
            return _ollama_generate_reply(req)
        return _ollama_reply(req)

    async def _scripted(self, request: web.Request, body: bytes, name: str) -> web.StreamResponse:
        """The next reply of the script `name`, in the wire format of the request's route."""
        if request.path not in ("/v1/messages", "/v1/chat/completions"):
            reply = _json_reply(404, {"error": f"no scripted answers on {request.path}"})
            return await self._send(request, reply)
        anthropic = request.path == "/v1/messages"
        with self._lock:
            script = self._scripts.get(name)
            scripted = script.replies.popleft() if script and script.replies else None
            if script is not None and scripted is not None:
                script.answered += 1
                answered = script.answered
                ok = scripted.status == 200
                first = script.calls + 1
                script.calls += len(scripted.tool_calls) if ok else 0
        if script is None or scripted is None:
            why = (
                f"fake provider: no script named {name!r} is loaded"
                if script is None
                else f"fake provider: script {name!r} is exhausted "
                f"(all {script.answered} replies taken)"
            )
            reply = _scripted_error(anthropic, 500, why)
            reply.headers.append(("x-should-retry", "false"))  # a test bug: don't retry it
            return await self._send_scripted(request, reply)
        if scripted.delay and not await self._pause(scripted.delay):
            return await self._send(request, _json_reply(503, {"error": "stopping"}))
        if scripted.status != 200:
            return await self._send_scripted(request, _scripted_error(anthropic, scripted.status))
        req = _parse_json(body)
        if req is None:
            reply = _scripted_error(anthropic, 400, "body is not a JSON object")
            return await self._send_scripted(request, reply)
        prefix = "toolu" if anthropic else "call"
        ids = [f"{prefix}_{name}_{first + i}" for i in range(len(scripted.tool_calls))]
        if anthropic:
            message_id = f"msg_{name}_{answered}"
            reply = _anthropic_answer(
                req,
                scripted,
                message_id=message_id,
                call_ids=ids,
                request_id=f"req_{message_id}",
                cache_usage=True,
            )
        else:
            completion_id = f"chatcmpl-{name}-{answered}"
            reply = _chat_answer(
                req,
                scripted,
                completion_id=completion_id,
                call_ids=ids,
                request_id=f"req_{completion_id}",
                usage_details=True,
            )
        return await self._send_scripted(request, reply)

    async def _send_scripted(self, request: web.Request, reply: _Reply) -> web.StreamResponse:
        """A scripted answer, sent so that what a proxy in between records of it does not
        depend on timing. SDKs hang up early: on a streamed request's error they close the
        response unread to retry it, and the OpenAI SDK closes a stream at ``data: [DONE]``.
        So a plain answer goes in one write, headers and body together (as a server sends a
        small JSON body), and a stream's last event goes with the chunked terminator."""
        if not reply.streaming:
            resp = web.Response(status=reply.status, body=b"".join(reply.pieces))
            for name, value in reply.headers:
                resp.headers.add(name, value)
            await resp.prepare(request)
            await resp.write_eof()
            return resp
        stream = web.StreamResponse(status=reply.status)
        for name, value in reply.headers:
            stream.headers.add(name, value)
        await stream.prepare(request)
        *pieces, last = reply.pieces
        for piece in pieces:
            await stream.write(piece)
            await asyncio.sleep(0)
        await stream.write_eof(last)
        return stream

    def _responses(self, req: dict[str, Any]) -> _Reply:
        """A Responses answer; like the API, a previous_response_id must name a stored one."""
        previous = req.get("previous_response_id")
        if previous is not None and previous not in self._stored_responses:
            body = {
                "error": {
                    "message": f"Previous response with id '{previous}' not found.",
                    "type": "invalid_request_error",
                    "param": "previous_response_id",
                    "code": "previous_response_not_found",
                }
            }
            return _json_reply(400, body, [("x-request-id", "req_fake01")])
        self.responses_created += 1
        seed = f"fake-response-{self.responses_created}".encode()
        serial = hashlib.sha256(seed).hexdigest()[:48]  # ids as long as the API's
        if req.get("store", True) is not False:
            self._stored_responses.add(f"resp_{serial}")
        return _responses_reply(req, serial)

    async def _send(
        self, request: web.Request, reply: _Reply, *, gzip: bool = False
    ) -> web.StreamResponse:
        pieces = reply.pieces
        headers = list(reply.headers)
        if gzip:
            comp = zlib.compressobj(6, zlib.DEFLATED, 31)
            blocks = [comp.compress(p) + comp.flush(zlib.Z_SYNC_FLUSH) for p in pieces]
            blocks.append(comp.flush())
            if len(blocks) < 4:  # still "several writes" for a one-piece body
                whole = b"".join(blocks)
                step = -(-len(whole) // 4)
                blocks = [whole[i : i + step] for i in range(0, len(whole), step)]
            pieces = [b for b in blocks if b]
            headers.append(("Content-Encoding", "gzip"))
        resp = web.StreamResponse(status=reply.status)
        for name, value in headers:
            resp.headers.add(name, value)
        if not reply.streaming:
            resp.content_length = sum(len(p) for p in pieces)
        await resp.prepare(request)
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(0)
            await resp.write(piece)
        await resp.write_eof()
        return resp

    async def _paced(self, request: web.Request) -> web.StreamResponse:
        count = _header_int(request, "x-fake-events", 50)
        delay = _header_int(request, "x-fake-delay-ms", 20) / 1000
        resp = web.StreamResponse(status=200)
        resp.headers["Content-Type"] = SSE_TYPE
        resp.headers["Cache-Control"] = "no-cache"
        await resp.prepare(request)
        for k in range(count):
            if k and not await self._pause(delay):
                break
            await resp.write(f"data: {json.dumps({'i': k})}\n\n".encode())
        if request.headers.get("x-fake-done") == "1":
            await resp.write(b"data: [DONE]\n\n")  # OpenAI's last event ...
        # ... and the end of body some time after it (x-fake-hold-ms), as a slow network has it
        await self._pause(_header_int(request, "x-fake-hold-ms", 0) / 1000)
        await resp.write_eof()
        return resp

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        resp.headers["Content-Type"] = SSE_TYPE
        await resp.prepare(request)
        for k in range(3):
            await resp.write(f"data: {json.dumps({'i': k})}\n\n".encode())
            await asyncio.sleep(0)
        transport = request.transport
        if transport is not None:
            for _ in range(2000):  # let asyncio hand the bytes to the kernel first
                if transport.is_closing() or transport.get_write_buffer_size() == 0:
                    break
                await asyncio.sleep(0.001)
            transport.abort()  # no terminating chunk: the client sees a truncated body
        return resp

    async def _big(self, request: web.Request) -> web.StreamResponse:
        total = _header_int(request, "x-fake-bytes", BIG_DEFAULT)
        resp = web.StreamResponse(status=200)
        resp.headers["Content-Type"] = "application/octet-stream"
        resp.content_length = total
        await resp.prepare(request)
        assert self._stopping is not None
        for chunk in fake_bytes(total):
            if self._stopping.is_set():
                if request.transport is not None:
                    request.transport.abort()
                return resp
            await resp.write(chunk)
        await resp.write_eof()
        return resp
