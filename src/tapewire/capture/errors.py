"""Error bodies that tapewire itself answers with, in the shape the agent's SDK expects, so the
agent shows a clear message naming tapewire and the upstream instead of a parse failure."""

from __future__ import annotations

import json


def error_body(provider: str | None, status: int, message: str) -> bytes:
    message = f"tapewire: {message}"
    if provider == "anthropic":
        kind = "timeout_error" if status == 504 else "api_error"
        doc: object = {"type": "error", "error": {"type": kind, "message": message}}
    elif provider == "ollama":
        doc = {"error": message}
    elif provider == "gemini":  # Google's error object; the SDKs show its message
        kind = "DEADLINE_EXCEEDED" if status == 504 else "UNAVAILABLE"
        doc = {"error": {"code": status, "message": message, "status": kind}}
    else:  # OpenAI's shape, which most OpenAI-compatible clients parse
        code = "upstream_timeout" if status == 504 else "upstream_unreachable"
        doc = {"error": {"message": message, "type": "tapewire_error", "param": None, "code": code}}
    return json.dumps(doc).encode()
