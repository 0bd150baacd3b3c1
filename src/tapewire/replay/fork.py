"""Fork a recorded conversation at a turn: rebuild the request the conversation sent there, in
its provider's own wire format, change its last user message or tool result (or take a body a
person edited), and send it through a recording proxy, so that the answer lands as a new branch
of the same message DAG in a session of its own, linked to its parent (docs/replay.md, Fork).

The request at turn N is the recorded exchange of that turn: its body, decoded from its
content-encoding, is what the conversation sent at that point, byte for byte. Its nodes are the
parent's nodes, so the fork shares the parent's chain up to the edit (node ids are content
addresses)."""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tapewire.capture.headers import CREDENTIAL_HEADERS, HOP_BY_HOP
from tapewire.content_encoding import DecodeError, decode
from tapewire.providers import api_for
from tapewire.store import Store

__all__ = [
    "ForkError",
    "ForkPoint",
    "Sent",
    "check_body",
    "edit_message",
    "fork_context",
    "fork_name",
    "fork_point",
    "request_headers",
    "send",
]

# Not the fork's to resend: the connection's own headers, the body's framing (the fork sends
# the body decoded), tapewire's headers, and the harness's session and thread identity (the
# fork is a session of its own; these would file it under the parent's harness session).
_NOT_RESENT = HOP_BY_HOP | {
    "host",
    "content-length",
    "content-encoding",
    "x-claude-code-session-id",
    "x-claude-code-agent-id",
    "session_id",
    "session-id",
    "thread-id",
}
_OURS = "x-tapewire-"
_SESSION_PREFIX = re.compile(r"^/s/[^/?]*")
_CHAT_APIS = ("anthropic.messages", "openai.chat", "ollama.chat")


class ForkError(ValueError):
    """The fork cannot be made as asked; the message says why."""


@dataclass
class ForkPoint:
    """The request a recorded conversation sent at one of its turns."""

    parent: str  # the session's id
    turn: int  # 1-based among the session's turns, as `tapewire show` numbers them
    exchange_id: str
    node: str | None  # the turn's request node: the last message it sent
    api: str | None  # the wire format (anthropic.messages, openai.chat, …)
    method: str
    path: str  # path and query as the agent sent them, less any /s/<session> prefix
    headers: list[tuple[str, str]]  # as recorded, less what `_NOT_RESENT` names and credentials
    body: bytes  # decoded from its content-encoding
    redactions: int = 0  # secrets the record replaced in the body
    notes: list[str] = field(default_factory=list)


def fork_point(store: Store, parent: str, at: str) -> ForkPoint:
    """The request session `parent` sent at `at`: a turn number (1-based, as `tapewire show`
    numbers them), or a node id (or a unique prefix of one) that a turn sent or received."""
    turns = store.turn_rows(parent)  # in the order `session_detail` numbers them
    if not turns:
        raise ForkError(f"session {parent} has no turns")
    n = _turn_number(turns, parent, at.strip())
    turn = turns[n - 1]
    row = store.exchange(turn["exchange"])
    if row is None or row.request_body is None:
        raise ForkError(f"turn {n}: exchange {turn['exchange']} is not in the store")
    if row.request_truncated:
        raise ForkError(f"turn {n}: the request was recorded truncated; it cannot be resent")
    try:
        decoded = decode(row.request_body, row.request_encoding)
    except DecodeError as e:
        raise ForkError(f"turn {n}: the recorded request body cannot be decoded: {e}") from None
    if decoded.truncated:
        raise ForkError(f"turn {n}: the recorded request body was cut short")
    notes = []
    if row.redactions:
        notes.append(
            f"the recorded request had {row.redactions} secret(s) redacted: the fork sends the "
            "placeholders"
        )
    if turn["kind"] != "main":
        notes.append(f"turn {n} is a {turn['kind']} turn, not of the main thread")
    path = _SESSION_PREFIX.sub("", row.path) or "/"
    return ForkPoint(
        parent=parent,
        turn=n,
        exchange_id=row.id,
        node=turn["request_node"],
        api=turn["api"] or api_for(row.method, path),
        method=row.method,
        path=path,
        headers=[
            (k, v)
            for k, v in row.request_headers
            if k.lower() not in _NOT_RESENT | CREDENTIAL_HEADERS
            and not k.lower().startswith(_OURS)
            and v != ""  # a credential the record blanked (configured extra ones included)
        ],
        body=decoded.data,
        redactions=row.redactions,
        notes=notes,
    )


def _turn_number(rows: list[dict[str, Any]], parent: str, at: str) -> int:
    if at.isdigit():
        n = int(at)
        if not 1 <= n <= len(rows):
            raise ForkError(f"the session has turns 1 to {len(rows)}")
        return n
    if len(at) < 6:
        raise ForkError(
            f"--at wants a turn number or a node id (6 characters at least), not {at!r}"
        )
    found: list[int] = []
    matched: set[str] = set()
    for how in ("exact", "prefix"):
        for n, t in enumerate(rows, 1):
            ids = [t["request_node"], *t["response_nodes"], *t["input_nodes"]]
            hits = {i for i in ids if i and (i == at if how == "exact" else i.startswith(at))}
            if hits:
                found.append(n)
                matched |= hits
        if found:
            break
    if not found:
        raise ForkError(f"no turn of session {parent} sent or received node {at!r}")
    if len(matched) > 1:
        raise ForkError(f"{at!r} is the start of {len(matched)} nodes of the session: say more")
    # A node resent by later turns belongs to the first turn that sent or received it.
    return found[0]


# ---- editing ---------------------------------------------------------------------------------


def edit_message(api: str | None, body: bytes, text: str) -> tuple[bytes, str]:
    """The request `body` with its last user message's text (or, where the request ends with a
    tool's result, that result) replaced by `text`, and what was replaced, in words. The rest
    of the body keeps its key order and, where the recorded JSON was written in one of the
    usual ways (compact or with spaces, escaped or not), its bytes."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ForkError("the recorded request body is not JSON") from None
    if not isinstance(doc, dict):
        raise ForkError("the recorded request body is not a JSON object")
    if api in _CHAT_APIS:
        what = _edit_messages(api, doc, text)
    elif api == "openai.responses":
        what = _edit_responses(doc, text)
    elif api == "ollama.generate":
        if not isinstance(doc.get("prompt"), str):
            raise ForkError("the request has no prompt to replace")
        doc["prompt"] = text
        what = "the prompt"
    else:
        raise ForkError(f"cannot edit a message of a {api or 'non-LLM'} request; use --edit")
    return _dump_like(doc, body), what


def _edit_messages(api: str, doc: dict[str, Any], text: str) -> str:
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ForkError("the request has no messages")
    last = messages[-1]
    if isinstance(last, dict):
        if last.get("role") == "tool":  # OpenAI Chat, Ollama: one message per result
            last["content"] = text
            call = last.get("tool_call_id") or last.get("tool_name") or last.get("name")
            return f"the tool result{f' for {call}' if call else ''} (message {len(messages)})"
        blocks = last.get("content")
        if api == "anthropic.messages" and last.get("role") == "user" and isinstance(blocks, list):
            results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
            if results:
                results[-1]["content"] = text
                call = results[-1].get("tool_use_id")
                return f"the tool result{f' for {call}' if call else ''} (message {len(messages)})"
    for k in range(len(messages) - 1, -1, -1):
        message = messages[k]
        if isinstance(message, dict) and message.get("role") == "user":
            _set_text(message, text, "text")
            return f"user message {k + 1} of {len(messages)}"
    raise ForkError("the request has no user message to replace")


def _edit_responses(doc: dict[str, Any], text: str) -> str:
    items = doc.get("input")
    if isinstance(items, str):
        doc["input"] = text
        return "the input"
    if not isinstance(items, list) or not items:
        raise ForkError("the request has no input")
    last = items[-1]
    kind = last.get("type") if isinstance(last, dict) else None
    if isinstance(last, dict) and isinstance(kind, str) and kind.endswith("_call_output"):
        last["output"] = text
        call = last.get("call_id")
        return f"the tool result{f' for {call}' if call else ''} (input item {len(items)})"
    for k in range(len(items) - 1, -1, -1):
        item = items[k]
        if isinstance(item, dict) and item.get("role") == "user":
            _set_text(item, text, "input_text")
            return f"user message {k + 1} of {len(items)} input items"
    raise ForkError("the request has no user message to replace")


def _set_text(message: dict[str, Any], text: str, kind: str) -> None:
    """A message's text: its string content, or its last text part (other parts kept)."""
    content = message.get("content")
    if isinstance(content, list):
        for part in reversed(content):
            if isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                part["text"] = text
                return
        content.append({"type": kind, "text": text})
        return
    message["content"] = text


_STYLES: tuple[tuple[tuple[str, str], bool], ...] = (
    ((",", ":"), False),
    ((",", ":"), True),
    ((", ", ": "), False),
    ((", ", ": "), True),
)


def _dump_like(doc: Any, original: bytes) -> bytes:
    """`doc` as JSON written the way `original` was, where one of the usual ways gives
    `original` back from its own parse; compact otherwise."""
    try:
        parsed = json.loads(original)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    style = _STYLES[0]
    for separators, ascii_only in _STYLES:
        if _dumps(parsed, separators, ascii_only) == original:
            style = (separators, ascii_only)
            break
    out = _dumps(doc, *style)
    return out if out is not None else _dumps(doc, style[0], True) or b""


def _dumps(doc: Any, separators: tuple[str, str], ascii_only: bool) -> bytes | None:
    try:
        return json.dumps(doc, separators=separators, ensure_ascii=ascii_only).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only the escaped form can carry it
        return None


def check_body(body: bytes) -> None:
    """A body a person edited must still be a JSON object."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ForkError(f"the edited body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ForkError("the edited body is not a JSON object")


# ---- naming and linking ----------------------------------------------------------------------


def fork_name(store: Store, parent: str, turn: int) -> str:
    """`fork-<parent id[:8]>-t<N>`, with `-2`, `-3`, … when that name is taken."""
    base = f"fork-{parent[:8]}-t{turn}"
    name, k = base, 1
    while store.run_context(name) is not None or store.find_sessions(name):
        k += 1
        name = f"{base}-{k}"
    return name


def fork_context(point: ForkPoint, edited: str | None) -> dict[str, Any]:
    """The run context recorded for the fork's session: how it links to its parent."""
    return {
        "forked_from": point.parent,
        "fork_turn": point.turn,
        "fork_node": point.node,
        "fork_exchange": point.exchange_id,
        "edited": edited,
        "command": "tapewire fork",
        "started_at": time.time(),
    }


# ---- sending ---------------------------------------------------------------------------------


def request_headers(
    point: ForkPoint, given: list[tuple[str, str]], env: Mapping[str, str]
) -> list[tuple[str, str]]:
    """The recorded headers, then credentials: `given` ones (NAME: value) replace recorded
    headers of their name; else the provider's key from the environment (ANTHROPIC_API_KEY as
    x-api-key, OPENAI_API_KEY as a bearer authorization), when set."""
    names = {k.lower() for k, _ in given}
    extra = list(given)
    has_key = names & {"authorization", "x-api-key", "api-key"}
    if not has_key and point.api == "anthropic.messages" and env.get("ANTHROPIC_API_KEY"):
        extra.append(("x-api-key", env["ANTHROPIC_API_KEY"]))
    elif not has_key and (point.api or "").startswith("openai.") and env.get("OPENAI_API_KEY"):
        extra.append(("Authorization", f"Bearer {env['OPENAI_API_KEY']}"))
    replaced = {k.lower() for k, _ in extra}
    return [(k, v) for k, v in point.headers if k.lower() not in replaced] + extra


def _header_bytes(value: str) -> bytes:
    """A recorded header's text as bytes again: the proxy read it as UTF-8 (capture/proxy.py)."""
    return value.encode("utf-8", "surrogateescape")


@dataclass
class Sent:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def send(
    url: str,
    method: str,
    headers: list[tuple[str, str]],
    body: bytes,
    timeout: float = 600.0,
    progress: Callable[[int], None] | None = None,
) -> Sent:
    """One HTTP request to `url` (the proxy), headers in order and repeats kept; the whole
    answer read, as it came (still in its content-encoding)."""
    parts = urlsplit(url)
    conn_type = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = conn_type(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, _header_bytes(v))
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        chunks = []
        while chunk := resp.read1(65536):
            chunks.append(chunk)
            if progress is not None:
                progress(len(chunk))
        return Sent(resp.status, list(resp.getheaders()), b"".join(chunks))
    except (OSError, http.client.HTTPException) as e:
        raise ForkError(f"sending the fork to {parts.netloc} failed: {e}") from None
    finally:
        conn.close()
