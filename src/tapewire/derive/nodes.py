"""Content addressing: a message node's id is the SHA-256 of the RFC 8785 canonical JSON of
{parent, role, content} (DESIGN invariant 4), over `Part.canonical()`: content only."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import rfc8785

from tapewire.model import Message, Part


def canonical_content(parts: Sequence[Part]) -> list[dict[str, Any]]:
    return [p.canonical() for p in parts]


def _json_safe(value: Any) -> Any:
    """RFC 8785 reads every number as an IEEE double and refuses integers past 2**53: such an
    integer is addressed as the double it is to JSON (as JCS would), so hashing never fails
    and a number never collides with a string of its digits."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and abs(value) > 2**53 - 1:
        try:
            return float(value)
        except OverflowError:  # past 1e308: no double holds it
            return repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def canonical_bytes(parent: str | None, role: str, content: list[dict[str, Any]]) -> bytes:
    doc = {"parent": parent, "role": role, "content": content}
    try:
        return rfc8785.dumps(doc)
    except rfc8785.CanonicalizationError:
        return rfc8785.dumps(_json_safe(doc))


def node_id(parent: str | None, role: str, content: list[dict[str, Any]]) -> str:
    return hashlib.sha256(canonical_bytes(parent, role, content)).hexdigest()


class ChainHasher:
    """Ids for a request's message chain, hashing only what is new.

    Agents resend the whole conversation every turn, and canonicalising a 150 KB context costs
    over a millisecond; comparing it with the previous turn's parsed content costs a tenth of
    that. So the last chain seen per conversation is kept, and only the messages past the
    shared prefix are canonicalised and hashed.
    """

    def __init__(self, keep: int = 256) -> None:
        self._keep = keep
        self._last: dict[str, list[tuple[str, list[dict[str, Any]], str]]] = {}

    def chain(
        self, key: str, messages: Sequence[Message]
    ) -> list[tuple[str, list[dict[str, Any]], str]]:
        """[(role, canonical content, node id)] for every message, root first."""
        previous = self._last.get(key, [])
        out: list[tuple[str, list[dict[str, Any]], str]] = []
        parent: str | None = None
        same = True
        for i, message in enumerate(messages):
            content = canonical_content(message.parts)
            if same and i < len(previous):
                role, prev_content, prev_id = previous[i]
                if role == message.role and prev_content == content:
                    out.append(previous[i])
                    parent = prev_id
                    continue
            same = False
            nid = node_id(parent, message.role, content)
            out.append((message.role, content, nid))
            parent = nid
        self._last.pop(key, None)
        self._last[key] = out
        while len(self._last) > self._keep:
            del self._last[next(iter(self._last))]
        return out
