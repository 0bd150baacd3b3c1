"""Google Gemini (`POST …/models/<model>:generateContent` and `:streamGenerateContent`).

The model and whether the call streams are in the path, not the body (`parse_path`). A streamed
response is a sequence of whole `GenerateContentResponse` objects, framed as SSE `data:` events
with `?alt=sse`, or as one JSON array without it; each holds the next pieces of every candidate
(text in pieces, function calls whole), and the last one the usage and finish reason. The
pieces are put back into one response object, which is then read by the same function as a
plain response, so that both forms give the same parts by construction.

The REST API accepts lowerCamelCase and snake_case field names alike (Google's JSON mapping of
protobuf; the REST examples write `system_instruction`, the SDKs `systemInstruction`): both are
read.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from tapewire.model import Message, Part, Turn, Usage
from tapewire.providers.parts import add_error, digest, json_object
from tapewire.providers.sse import events

_MODEL_METHOD = re.compile(r"/(?:models|tunedModels)/([^/:]+):(\w+)$")
_ROLES = {"model": "assistant", "function": "tool"}  # Gemini's roles; user stays user
_OWN_FIELDS = frozenset({"contents", "systemInstruction", "system_instruction", "tools", "model"})
_TEXT_KEYS = frozenset({"text", "thought", "thoughtSignature", "thought_signature"})


def _get(obj: dict[str, Any], camel: str) -> Any:
    """A field by its camelCase name or its snake_case twin."""
    if camel in obj:
        return obj[camel]
    return obj.get(re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower())


# ---- request -------------------------------------------------------------------------------


def parse_path(path: str, turn: Turn) -> None:
    """The model and the method from `…/models/<model>:<method>` (query and prefixes aside)."""
    found = _MODEL_METHOD.search(path.partition("?")[0])
    if found is None:
        return
    turn.model = found.group(1)
    turn.stream = found.group(2) == "streamGenerateContent"


def parse_request(body: dict[str, Any], turn: Turn) -> None:
    turn.params = {k: v for k, v in body.items() if k not in _OWN_FIELDS}
    system = _get(body, "systemInstruction")
    if isinstance(system, dict):
        turn.system = _parts(system.get("parts"))
    elif isinstance(system, str):  # the API takes a bare string here as well
        turn.system = [Part(type="text", text=system)] if system else []
    tools = body.get("tools")
    if isinstance(tools, list):
        turn.tools = list(tools)
    elif tools is not None:
        turn.params["tools"] = tools
    contents = body.get("contents")
    if not isinstance(contents, list):
        add_error(turn, "request has no contents list")
        return
    for i, content in enumerate(contents):
        if isinstance(content, dict):
            turn.messages.append(_message(content, "user"))
        else:
            add_error(turn, f"contents[{i}] is not an object")


def _message(content: dict[str, Any], default_role: str) -> Message:
    role = content.get("role")
    role = role if isinstance(role, str) and role else default_role
    return Message(role=_ROLES.get(role, role), parts=_numbered(_parts(content.get("parts"))))


def _numbered(parts: list[Part]) -> list[Part]:
    """Function calls and responses without an `id` (the API's default: ids are optional, and
    the k-th response of a name answers the k-th call of it) get `name#k`: the same id for a
    call, for the call as the next request resends it, and for its response, so that a tool
    call is linked to its result as on the other APIs. A part's id comes from its content only,
    so node ids stay content-addressed."""
    seen: dict[tuple[str, str | None], int] = {}
    for part in parts:
        if part.type in ("tool_call", "tool_result") and part.id is None:
            key = (part.type, part.name)
            k = seen.get(key, 0)
            seen[key] = k + 1
            part.id = f"{part.name or ''}#{k}"
    return parts


# ---- parts ---------------------------------------------------------------------------------


def _parts(raw: Any) -> list[Part]:
    if not isinstance(raw, list):
        return []
    return [part for block in _merged(raw) if (part := _part(block)) is not None]


def _merged(blocks: list[Any]) -> list[Any]:
    """Adjacent text parts of one kind (thought or not) as one: a stream sends text in pieces,
    each its own part, where a plain response sends it whole. A thought signature (an opaque
    token a stream may put on the last, empty piece) stays with its text."""
    out: list[Any] = []
    for block in blocks:
        if _is_text(block) and out and _is_text(out[-1]):
            prev = out[-1]
            if bool(prev.get("thought")) == bool(block.get("thought")):
                joined = {**prev, "text": (prev.get("text") or "") + (block.get("text") or "")}
                signature = _get(block, "thoughtSignature")
                if signature:
                    joined["thoughtSignature"] = signature
                out[-1] = joined
                continue
        out.append(block)
    return out


def _is_text(block: Any) -> bool:
    return (
        isinstance(block, dict) and isinstance(block.get("text"), str) and set(block) <= _TEXT_KEYS
    )


def _part(block: Any) -> Part | None:
    if not isinstance(block, dict):
        return Part(type="other", name=type(block).__name__, data=block)
    text = block.get("text")
    if isinstance(text, str):
        if block.get("thought") is True:
            signature = _get(block, "thoughtSignature")
            return Part(
                type="thinking",
                text=text,
                signature=signature if isinstance(signature, str) else None,
            )
        # A function call's thought signature is a transport token too: not content.
        return Part(type="text", text=text) if text else None
    call = _get(block, "functionCall")
    if isinstance(call, dict):
        return _call_part(call)
    response = _get(block, "functionResponse")
    if isinstance(response, dict):
        return _result_part(response)
    inline = _get(block, "inlineData")
    if isinstance(inline, dict):
        return _media_part(block, inline, "data", inline=True)
    file = _get(block, "fileData")
    if isinstance(file, dict):
        return _media_part(block, file, "fileUri", inline=False)
    if block.get("thought") is True and _get(block, "thoughtSignature"):
        return None  # a bare signature, with no text to carry
    kind = next((k for k in block if k not in ("thoughtSignature", "thought_signature")), None)
    return Part(type="other", name=kind, data=block)


def _call_part(call: dict[str, Any]) -> Part:
    call_id, name = call.get("id"), call.get("name")
    return Part(
        type="tool_call",
        id=call_id if isinstance(call_id, str) and call_id else None,
        name=name if isinstance(name, str) else None,
        arguments=call.get("args", {}),
    )


def _result_part(response: dict[str, Any]) -> Part:
    """The API's convention: the `output` key holds what the function returned, `error` its
    error; without either, the whole `response` object is the output."""
    call_id, name = response.get("id"), response.get("name")
    body = response.get("response")
    is_error = None
    value: Any = body
    if isinstance(body, dict) and "error" in body:
        value, is_error = body["error"], True
    elif isinstance(body, dict) and "output" in body:
        value = body["output"]
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    content = [Part(type="text", text=text)]
    content.extend(_parts(response.get("parts")))  # media a function returned
    return Part(
        type="tool_result",
        id=call_id if isinstance(call_id, str) and call_id else None,
        name=name if isinstance(name, str) else None,
        content=content,
        is_error=is_error,
    )


def _media_part(block: dict[str, Any], media: dict[str, Any], key: str, inline: bool) -> Part:
    mime = _get(media, "mimeType")
    value = _get(media, key)
    if not isinstance(value, str):
        return Part(type="other", name="inlineData" if inline else "fileData", data=block)
    data = digest(value) if inline else value  # inline bytes are identified, never copied
    if isinstance(mime, str) and mime.startswith("image/"):
        return Part(type="image", media_type=mime, data=data)
    name = "inlineData" if inline else "fileData"
    return Part(type="other", name=name, data={name: {**media, key: data}})


# ---- response ------------------------------------------------------------------------------


def parse_response(body: bytes, turn: Turn, streamed: bool) -> None:
    head = body.lstrip()[:1]
    if head == b"[":  # the JSON-array stream (streamGenerateContent without alt=sse)
        chunks = _array_chunks(body, turn)
    elif streamed:
        chunks = _sse_chunks(body, turn)
    else:
        data = json_object(body, turn)
        if data is not None:
            _read(data, turn, streamed=False)
        return
    _read(_joined(chunks, turn), turn, streamed=True)


def _sse_chunks(body: bytes, turn: Turn) -> list[dict[str, Any]]:
    chunks = []
    for _, data in events(body):
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            add_error(turn, f"malformed chunk: {data[:120]!r}")
            continue
        if isinstance(chunk, dict):
            chunks.append(chunk)
        else:
            add_error(turn, f"chunk is not a JSON object: {data[:120]!r}")
    return chunks


def _array_chunks(body: bytes, turn: Turn) -> list[dict[str, Any]]:
    """The array's objects one by one, so that a stream cut short keeps what did arrive."""
    text = body.decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    at, end, chunks, closed = text.index("[") + 1, len(text), [], False
    while at < end:
        while at < end and text[at] in " \t\r\n,":
            at += 1
        if at >= end:
            break
        if text[at] == "]":
            closed = True
            break
        try:
            chunk, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            add_error(turn, "stream cut short inside an object")
            break
        if isinstance(chunk, dict):
            chunks.append(chunk)
    if not closed:
        add_error(turn, "stream ended before the array closed")
    return chunks


def _joined(chunks: list[dict[str, Any]], turn: Turn) -> dict[str, Any]:
    """The one response object a stream's chunks amount to: each candidate's parts in order,
    the latest of everything else (usage, finish reason, model version)."""
    out: dict[str, Any] = {}
    candidates: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        if chunk.get("error") is not None:
            add_error(turn, f"stream error: {error_text(chunk['error'])}")
            continue
        for key, value in chunk.items():
            if key != "candidates":
                out[key] = value
        raw = chunk.get("candidates")
        for n, candidate in enumerate(raw if isinstance(raw, list) else []):
            if not isinstance(candidate, dict):
                continue
            index = candidate.get("index")
            index = index if isinstance(index, int) and not isinstance(index, bool) else n
            into = candidates.setdefault(index, {"index": index, "content": {"parts": []}})
            for key, value in candidate.items():
                if key != "content":
                    into[key] = value
            content = candidate.get("content")
            if isinstance(content, dict):
                if isinstance(content.get("role"), str):
                    into["content"]["role"] = content["role"]
                parts = content.get("parts")
                into["content"]["parts"].extend(parts if isinstance(parts, list) else [])
    if candidates:
        out["candidates"] = [candidates[i] for i in sorted(candidates)]
    return out


def _read(data: dict[str, Any], turn: Turn, streamed: bool) -> None:
    if data.get("error") is not None:
        add_error(turn, error_text(data["error"]))
        return
    response_id, model = _get(data, "responseId"), _get(data, "modelVersion")
    turn.response_id = response_id if isinstance(response_id, str) and response_id else None
    turn.response_model = model if isinstance(model, str) and model else None
    usage = _get(data, "usageMetadata")
    if isinstance(usage, dict):
        turn.usage = _usage(usage)
    candidates = data.get("candidates")
    candidates = (
        [c for c in candidates if isinstance(c, dict)] if isinstance(candidates, list) else []
    )
    for candidate in candidates:
        content = candidate.get("content")
        turn.outputs.append(_message(content if isinstance(content, dict) else {}, "model"))
    reasons = [_get(c, "finishReason") for c in candidates]
    if reasons and isinstance(reasons[0], str):
        turn.stop_reason = reasons[0]
    feedback = _get(data, "promptFeedback")
    block = _get(feedback, "blockReason") if isinstance(feedback, dict) else None
    if not candidates and isinstance(block, str):
        turn.stop_reason = block  # the prompt was refused before any candidate
    elif streamed and not any(isinstance(r, str) for r in reasons):
        add_error(turn, "stream ended before a finishReason")


def _usage(raw: dict[str, Any]) -> Usage:
    """promptTokenCount counts the cached part too, as Usage.input_tokens wants; thinking tokens
    are reported apart from the candidates' and billed as output, so output adds them."""
    prompt = _count(_get(raw, "promptTokenCount"))
    tool_prompt = _count(_get(raw, "toolUsePromptTokenCount"))
    candidates = _count(_get(raw, "candidatesTokenCount"))
    thoughts = _count(_get(raw, "thoughtsTokenCount"))
    return Usage(
        input_tokens=None if prompt is None else prompt + (tool_prompt or 0),
        output_tokens=None
        if candidates is None and thoughts is None
        else (candidates or 0) + (thoughts or 0),
        cache_read_tokens=_count(_get(raw, "cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def error_text(error: Any) -> str:
    """Google's error object: {code, message, status}."""
    if not isinstance(error, dict):
        return str(error)
    status, message = error.get("status") or error.get("code"), error.get("message")
    return f"{status}: {message}" if status and message else str(message or status or error)
