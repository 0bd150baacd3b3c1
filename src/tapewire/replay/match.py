"""Which recorded exchange answers a request: requests are compared by their content, less what
changes between two runs of the same harness (docs/replay.md lists it):

- `cache_control` markers, anywhere: harnesses move them as the conversation grows;
- `metadata` (Anthropic's `user_id` names the run), `user`, `prompt_cache_key` and
  `safety_identifier` (OpenAI): ids of the caller, not of the conversation;
- dates and times inside system prompts and instructions: Claude Code writes today's date there.

What is left is canonical JSON; its digest keys the recording. Requests sent more than once in
the recording (retries) are answered in the order they were recorded."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

VOLATILE_KEYS = frozenset({"cache_control", "metadata", "user", "prompt_cache_key",
                           "safety_identifier"})  # fmt: skip
_MOMENT = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\b\d{1,2}:\d{2}(?::\d{2})?\b"
)
_SYSTEM_ROLES = {"system", "developer"}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _undate(value: Any) -> Any:
    if isinstance(value, str):
        return _MOMENT.sub("<moment>", value)
    if isinstance(value, dict):
        return {k: _undate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_undate(v) for v in value]
    return value


def normalize(body: Any) -> Any:
    """A request body with what varies between runs taken out."""
    if not isinstance(body, dict):
        return body
    out = _strip(body)
    for key in ("system", "instructions"):  # Anthropic, OpenAI Responses
        if key in out:
            out[key] = _undate(out[key])
    for key in ("messages", "input"):  # OpenAI Chat, Ollama; Responses
        items = out.get(key)
        if isinstance(items, list):
            out[key] = [
                _undate(m) if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES else m
                for m in items
            ]
    return out


SESSION_PREFIX = re.compile(r"^/s/[^/?]+(?=/)")


def route_of(path: str) -> str:
    """The provider path a request was for: less the proxy's `/s/<name>` prefix (kept with a
    recorded exchange) and the query string."""
    return SESSION_PREFIX.sub("", path, count=1).partition("?")[0].rstrip("/")


def request_key(path: str, body: bytes) -> str:
    """The digest a request is matched by: its path and its normalised JSON (or its bytes,
    when it is not JSON)."""
    try:
        canonical = orjson.dumps(normalize(json.loads(body)), option=orjson.OPT_SORT_KEYS)
    except ValueError:
        canonical = body
    return hashlib.sha256(route_of(path).encode() + b"\0" + canonical).hexdigest()


@dataclass
class Recorded:
    """One recorded exchange, as the replay serves it."""

    exchange: str
    turn: int  # its place in the session's timeline, 1-based
    path: str
    request: bytes  # the request body, decoded from any content-encoding
    status: int
    headers: list[tuple[str, str]]
    body: bytes  # the response body as it crossed the wire (still encoded)
    chunks: list[tuple[int, float]] | None  # (size, ms after the first byte)
    ttfb_ms: float | None  # from the request's end to the first byte
    served: int = 0
    # Over a WebSocket: the upstream's data messages, each (payload, opcode, ms after the
    # agent's message arrived); `body` holds them back to back.
    messages: list[tuple[bytes, int, float]] | None = None


@dataclass
class Miss:
    """A request the recording does not hold, and where it leaves the recorded run."""

    path: str
    nearest: Recorded | None
    diff: list[str] = field(default_factory=list)

    def explain(self) -> str:
        if self.nearest is None:
            return f"tapewire replay: the recording holds no request like this {self.path}"
        return (
            f"tapewire replay: the recording holds no such request; the nearest is turn "
            f"{self.nearest.turn} (exchange {self.nearest.exchange}), which differs:\n"
            + "\n".join(self.diff)
        )


class Recording:
    """The recorded exchanges of a session, indexed by their requests' keys."""

    def __init__(self, exchanges: Iterable[Recorded]) -> None:
        self.exchanges = list(exchanges)
        self._by_key: dict[str, deque[Recorded]] = {}
        for r in self.exchanges:
            self._by_key.setdefault(request_key(r.path, r.request), deque()).append(r)

    def answer(self, path: str, body: bytes) -> Recorded | Miss:
        queue = self._by_key.get(request_key(path, body))
        if queue:
            # Repeats are answered in recorded order; past the last, the last again.
            hit = queue.popleft() if len(queue) > 1 else queue[0]
            hit.served += 1
            return hit
        return self._miss(path, body)

    def _miss(self, path: str, body: bytes) -> Miss:
        asked = _pretty(body)
        route = route_of(path)
        same_route = [r for r in self.exchanges if route_of(r.path) == route]
        if not same_route:
            return Miss(path, None)

        # The nearest: the recorded request sharing the longest start with this one.
        def shared(r: Recorded) -> int:
            return _common_prefix(_pretty(r.request), asked)

        nearest = max(same_route, key=lambda r: (shared(r), -r.turn))
        diff = list(difflib.unified_diff(
            _pretty(nearest.request), asked, f"recorded turn {nearest.turn}", "this request",
            n=2, lineterm="",
        ))  # fmt: skip
        return Miss(path, nearest, diff[:60] + (["…"] if len(diff) > 60 else []))

    def unserved(self) -> list[Recorded]:
        return [r for r in self.exchanges if not r.served]


def _pretty(body: bytes) -> list[str]:
    try:
        return json.dumps(normalize(json.loads(body)), indent=1, ensure_ascii=False).splitlines()
    except ValueError:
        return body.decode("utf-8", "replace").splitlines()


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
