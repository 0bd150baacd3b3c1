"""Provider codecs: pure functions from an exchange's bytes to a `Turn`.

One module per wire format. Each exposes
  parse_request(body: dict, turn: Turn) -> None   fills model, system, messages, tools, params
  parse_response(body: bytes, turn: Turn, streamed: bool) -> None
                                                   fills outputs, usage, stop reason, ids
and may expose
  parse_path(path: str, turn: Turn) -> None        what the path says (Gemini: model, stream)
and raises nothing it can help: trouble goes into `turn.error` and the turn stays partial.
This module does what every codec shares: undo the content-encoding, parse the request JSON,
tell a streamed body from a plain one, and read a provider's error body.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import orjson

from tapewire.content_encoding import DecodeError, decode
from tapewire.model import WEBSOCKET, Turn
from tapewire.providers.parts import add_error, json_or_text

__all__ = ["api_for", "json_or_text", "parse_exchange"]

# Path endings, as the agent sent them (prefixes like /s/<session>/ or /anthropic/ included).
_APIS: tuple[tuple[str, str], ...] = (
    ("/v1/messages", "anthropic.messages"),
    ("/chat/completions", "openai.chat"),
    ("/responses", "openai.responses"),
    ("/api/chat", "ollama.chat"),
    ("/api/generate", "ollama.generate"),
    (":generateContent", "gemini.generate"),
    (":streamGenerateContent", "gemini.generate"),
)


def api_for(method: str, path: str) -> str | None:
    """Which wire format an exchange speaks, or None when it is not an LLM call we read
    (method WS: a message over a WebSocket, capture/websocket.py)."""
    if method.upper() not in ("POST", WEBSOCKET):
        return None
    path = path.partition("?")[0].rstrip("/")
    for suffix, api in _APIS:
        if path.endswith(suffix):
            return api
    return None


def _codec(api: str) -> ModuleType:
    from tapewire.providers import anthropic, gemini, ollama, openai_chat, openai_responses

    return {
        "anthropic.messages": anthropic,
        "gemini.generate": gemini,
        "openai.chat": openai_chat,
        "openai.responses": openai_responses,
        "ollama.chat": ollama,
        "ollama.generate": ollama,
    }[api]


def decode_body(body: bytes, encoding: str | None, turn: Turn, what: str) -> bytes | None:
    try:
        result = decode(body, encoding)
    except DecodeError as e:
        add_error(turn, f"{what} body: {e}")
        return None
    if result.truncated:
        add_error(turn, f"{what} body: {encoding} stream cut short; read what arrived")
    return result.data


def is_streamed(body: bytes, content_type: str | None) -> bool:
    ctype = (content_type or "").lower()
    if "event-stream" in ctype or "ndjson" in ctype:
        return True
    if "json" in ctype:
        return False
    head = body.lstrip()[:6]
    return head.startswith((b"event:", b"data:", b":"))


def error_message(body: bytes) -> str | None:
    """The message of a provider's error body (Anthropic, OpenAI, Ollama and Google shapes)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or None
    if isinstance(data, list) and data:  # Gemini's JSON-array stream, failed: [{"error": …}]
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            # Google's errors: {code: 404, status: "NOT_FOUND", message}
            kind = err.get("type") or err.get("status") or err.get("code")
            message = err.get("message")
            return f"{kind}: {message}" if kind and message else str(message or kind or err)
        if isinstance(err, str):
            return err
    return None


def parse_exchange(
    api: str,
    request_body: bytes,
    request_encoding: str | None,
    response_body: bytes | None,
    response_encoding: str | None,
    response_content_type: str | None,
    status: int | None,
    messages: list[bytes] | None = None,
    path: str = "",
) -> Turn:
    """Everything a codec can read from one exchange; never raises on bad input. `messages`:
    the upstream's data messages when the exchange went over a WebSocket (the request body is
    then the agent's one message). `path`: the request's, as recorded (the codecs that read
    it: model and streaming for Gemini)."""
    turn = Turn(api=api)
    codec = _codec(api)
    if messages is not None and not hasattr(codec, "parse_messages"):
        add_error(turn, f"{api} is not read over a WebSocket")
        return turn
    if path and hasattr(codec, "parse_path"):
        _guard(turn, lambda: codec.parse_path(path, turn), "path")
    raw = decode_body(request_body, request_encoding, turn, "request") if request_body else b""
    if raw is None:
        pass
    elif not raw:
        add_error(turn, "request body is empty")
    else:
        body = request_json(raw, turn)
        if isinstance(body, dict):
            parse = codec.parse_request if messages is None else codec.parse_ws_request
            _guard(turn, lambda: parse(body, turn), "request")
        elif body is not None:
            add_error(turn, "request body is not a JSON object")
    if messages is not None:
        _guard(turn, lambda: codec.parse_messages(messages, turn), "response")
        return turn
    if response_body is None:
        return turn
    data = decode_body(response_body, response_encoding, turn, "response")
    if data is None:
        return turn
    if status is not None and status >= 400:
        add_error(turn, f"HTTP {status}: {error_message(data) or 'no error body'}")
        return turn
    streamed = is_streamed(data, response_content_type)
    _guard(turn, lambda: codec.parse_response(data, turn, streamed), "response")
    return turn


def request_json(raw: bytes, turn: Turn) -> Any:
    """The request as JSON. JavaScript agents (Claude Code) can send an escaped lone surrogate
    (a string cut inside an emoji), which orjson refuses as invalid UTF-8: rather than lose
    the whole conversation, such a body is read by the stdlib and each lone surrogate becomes
    U+FFFD (the raw body keeps the bytes as sent)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        try:
            loose = json.loads(raw)
        except ValueError:
            add_error(turn, f"request body is not JSON: {e}")
            return None
    add_error(turn, "request body holds lone surrogates; read with U+FFFD in their place")
    return _without_surrogates(loose)


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    return value


def _guard(turn: Turn, step: Callable[[], None], what: str) -> None:
    """A codec meeting a shape it does not know must not lose the exchange for it."""
    try:
        step()
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, json.JSONDecodeError) as e:
        add_error(turn, f"{what} not understood: {type(e).__name__}: {e}")
