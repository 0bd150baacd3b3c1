"""The demo's stand-in for the providers: an aiohttp server on 127.0.0.1 (a free port), on a
thread with its own event loop, speaking the exact wire formats.

- `POST /v1/messages`: the bundled Claude Code recording. A request is answered with the
  recorded turn whose request body has the same bytes (else the next turn in order), with the
  recorded status, headers and gzip body, streamed in the pieces the provider flushed.
- `POST /v1/chat/completions`: the scripted conversation (`script.py`), streamed as OpenAI
  streams it: `data: {chunk}` events, tool calls as deltas by index, a usage chunk when
  `stream_options.include_usage`, then `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from typing import Any

from aiohttp import web

from tapewire.demo.recording import RecordedTurn
from tapewire.demo.script import SERVED_MODEL, Reply, reply_for
from tapewire.loopserver import LoopServer

# Headers about the recorded connection, not the message: aiohttp frames the replay itself.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
     "upgrade", "content-length"}
)  # fmt: skip
_FINGERPRINT = "fp_0ba0d124f1"
_SSE_TYPE = "text/event-stream; charset=utf-8"


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _pieces(text: str, pattern: str) -> list[str]:
    """Token-sized pieces of `text`, as a model streams it; they join back to `text`."""
    return re.findall(pattern, text)


def chat_stream(
    reply: Reply, *, completion_id: str, created: int, include_usage: bool
) -> list[bytes]:
    """A reply as OpenAI streams a chat completion: one `data:` event per chunk."""
    base: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": SERVED_MODEL,
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    }

    def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk: dict[str, Any] = {**base, "choices": [choice]}
        if include_usage:
            chunk["usage"] = None  # OpenAI sends the key on every chunk, filled on the last
        return f"data: {_dumps(chunk)}\n\n".encode()

    call = reply.tool_call
    if call is not None:
        first = {
            "index": 0,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        events = [event({"role": "assistant", "content": None, "tool_calls": [first]})]
        events += [
            event({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for piece in _pieces(call.arguments, r"[A-Za-z]+|[^A-Za-z]+")
        ]
        events.append(event({}, "tool_calls"))
    else:
        events = [event({"role": "assistant", "content": "", "refusal": None})]
        events += [event({"content": piece}) for piece in _pieces(reply.text or "", r"\s*\S+|\s+")]
        events.append(event({}, "stop"))
    if include_usage:
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        events.append(f"data: {_dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
    events.append(b"data: [DONE]\n\n")
    return events


async def _stream(
    request: web.Request, status: int, headers: list[tuple[str, str]], chunks: list[bytes]
) -> web.StreamResponse:
    """Send a body in the given pieces, chunked, yielding between writes so each leaves alone."""
    resp = web.StreamResponse(status=status)
    for name, value in headers:
        resp.headers.add(name, value)  # add, not set: a repeated header stays repeated
    await resp.prepare(request)
    for chunk in chunks:
        await resp.write(chunk)
        await asyncio.sleep(0)
    await resp.write_eof()
    return resp


def _openai_error(status: int, message: str) -> web.Response:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return web.json_response({"error": error}, status=status)


class FakeProvider(LoopServer):
    """`with FakeProvider(turns) as provider:` serves on `provider.url` until the block ends."""

    name = "tapewire-demo-provider"

    def __init__(self, turns: list[RecordedTurn]) -> None:
        super().__init__()
        self._turns = turns
        self._by_sha256 = {turn.request_sha256: turn for turn in turns}
        self._unmatched = 0  # requests answered in order, for want of a byte-exact match

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/chat/completions", self._chat_completions)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        turn = self._by_sha256.get(hashlib.sha256(body).hexdigest())
        if turn is None:
            turn = self._turns[self._unmatched % len(self._turns)]
            self._unmatched += 1
        headers = [(k, v) for k, v in turn.response_headers if k.lower() not in _HOP_BY_HOP]
        return await _stream(request, turn.status, headers, turn.response_chunks)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            req = json.loads(body)
        except ValueError:
            return _openai_error(400, "The request body is not valid JSON.")
        if not isinstance(req, dict) or req.get("stream") is not True:
            return _openai_error(400, "The demo provider only answers streamed requests.")
        options = req.get("stream_options")
        digest = hashlib.sha256(body).hexdigest()
        events = chat_stream(
            reply_for(req),
            completion_id=f"chatcmpl-{digest[:29]}",
            created=int(time.time()),
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )
        headers = [
            ("Content-Type", _SSE_TYPE),
            ("access-control-expose-headers", "X-Request-ID"),
            ("openai-organization", "user-tapewire-demo"),
            ("openai-processing-ms", "212"),
            ("openai-version", "2020-10-01"),
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("x-request-id", f"req_{digest[29:61]}"),
        ]
        return await _stream(request, 200, headers, events)
