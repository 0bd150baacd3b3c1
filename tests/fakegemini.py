"""The fake provider's Gemini: `POST /v1beta/models/<model>:generateContent` and
`:streamGenerateContent`, framed as Google frames them: SSE with `?alt=sse` (`data: ` lines,
events separated by CRLF CRLF), else one JSON array written an object at a time.

The model's answer, as the fake's other wire formats give it: given function declarations, it
calls the first one (`{"city": "Paris"}`, call id `call_fake1`), unless the last content holds
a function's response, which it answers with text. Asked for thoughts
(`generationConfig.thinkingConfig.includeThoughts`), it thinks first, with a thought signature.
The API key must come as `x-goog-api-key` or `?key=` (else 403, as Google answers).

Must not import tapewire: it stands in for the world outside the proxy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

TEXT_PIECES = ["Hello", " from the", " fake", " provider."]
THOUGHT_PIECES = ["Thinking", " it over."]
THOUGHT_SIGNATURE = "ZmFrZS1zaWduYXR1cmU="
CALL_ID = "call_fake1"
MODEL_VERSION = "gemini-fake-001"
RESPONSE_ID = "fake-gemini-response"
PROMPT_TOKENS, CANDIDATE_TOKENS, THOUGHT_TOKENS = 12, 7, 3
JSON_TYPE = "application/json; charset=UTF-8"
SSE_TYPE = "text/event-stream"

_METHOD = re.compile(
    r"^/v1(?:beta|alpha)?/models/([^/:]+):(generateContent|streamGenerateContent)$"
)

# (status, headers, body pieces, chunked): the fake provider sends it.
Answer = tuple[int, list[tuple[str, str]], list[bytes], bool]


def handles(path: str) -> bool:
    return _METHOD.match(path) is not None


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _error(status: int, kind: str, message: str) -> Answer:
    body = {"error": {"code": status, "message": message, "status": kind}}
    return status, [("Content-Type", JSON_TYPE)], [_dumps(body)], False


def _tool(req: dict[str, Any]) -> str | None:
    contents = req.get("contents")
    if isinstance(contents, list) and contents and isinstance(contents[-1], dict):
        parts = contents[-1].get("parts") or []
        if any(isinstance(p, dict) and "functionResponse" in p for p in parts):
            return None
    for tool in req.get("tools") or []:
        for declaration in tool.get("functionDeclarations") or []:
            return str(declaration.get("name", "tool"))
    return None


def _chunk(parts: list[dict[str, Any]], usage: dict[str, int] | None, finish: bool) -> Any:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = "STOP"
    chunk: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        chunk["usageMetadata"] = usage
    chunk.update(modelVersion=MODEL_VERSION, responseId=RESPONSE_ID)
    return chunk


def answer(path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes) -> Answer:
    found = _METHOD.match(path)
    assert found is not None
    if not (headers.get("x-goog-api-key") or query.get("key")):
        return _error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.")
    try:
        req = json.loads(body)
    except ValueError:
        req = None
    if not isinstance(req, dict) or not isinstance(req.get("contents"), list):
        return _error(400, "INVALID_ARGUMENT", "contents is not specified")
    # Google reads lowerCamelCase and snake_case alike (the SDK sends both, mixed).
    config = req.get("generationConfig") or req.get("generation_config") or {}
    thinking = config.get("thinkingConfig") or config.get("thinking_config") or {}
    thinks = bool(thinking.get("includeThoughts") or thinking.get("include_thoughts"))
    tool = _tool(req)
    usage = {"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": CANDIDATE_TOKENS,
             "totalTokenCount": PROMPT_TOKENS + CANDIDATE_TOKENS}  # fmt: skip
    if thinks:
        usage["thoughtsTokenCount"] = THOUGHT_TOKENS
        usage["totalTokenCount"] += THOUGHT_TOKENS
    call = {"functionCall": {"id": CALL_ID, "name": tool, "args": {"city": "Paris"}}}

    if found.group(2) == "generateContent":
        parts: list[dict[str, Any]] = []
        if thinks:
            parts.append({"text": "".join(THOUGHT_PIECES), "thought": True})
        parts.append(call if tool else {"text": "".join(TEXT_PIECES)})
        if thinks:
            parts[-1]["thoughtSignature"] = THOUGHT_SIGNATURE
        return 200, [("Content-Type", JSON_TYPE)], [_dumps(_chunk(parts, usage, True))], False

    chunks = []
    if thinks:
        chunks += [_chunk([{"text": t, "thought": True}], None, False) for t in THOUGHT_PIECES]
    if tool:
        last: list[dict[str, Any]] = [call]
    else:
        chunks += [_chunk([{"text": t}], None, False) for t in TEXT_PIECES[:-1]]
        last = [{"text": TEXT_PIECES[-1]}]
    if thinks:
        last[-1] = {**last[-1], "thoughtSignature": THOUGHT_SIGNATURE}
    chunks.append(_chunk(last, usage, True))
    if query.get("alt") == "sse":
        pieces = [b"data: " + _dumps(c) + b"\r\n\r\n" for c in chunks]
        return 200, [("Content-Type", SSE_TYPE)], pieces, True
    # Google writes the array's objects indented, each after a comma on a line of its own.
    texts = [json.dumps(c, indent=2, ensure_ascii=False).encode() for c in chunks]
    pieces = [b"[" + texts[0]] + [b"\r\n," + t for t in texts[1:]] + [b"]"]
    return 200, [("Content-Type", JSON_TYPE)], pieces, True
