"""What every codec builds a Turn with: error notes, parsed arguments, digests of inline data,
and the plain JSON body read without raising."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from tapewire.model import Turn


def add_error(turn: Turn, message: str) -> None:
    """Note trouble on the turn, keeping what was noted before."""
    turn.error = f"{turn.error}; {message}" if turn.error else message


def json_or_text(text: str) -> Any:
    """Tool arguments: parsed where they parse (so whitespace never changes a node's id), else
    the string as sent."""
    try:
        return orjson.loads(text) if text.strip() else {}
    except orjson.JSONDecodeError:
        return text


def digest(value: str) -> str:
    """`sha256:<hex>` of inline data's bytes (a data: URL or bare base64): images and files
    are identified by their bytes and never copied into the derived layer. Data that does not
    decode is hashed as sent, so it is still identified."""
    payload, is_base64 = value, True
    if value.startswith("data:"):
        header, _, payload = value.partition(",")
        is_base64 = header.endswith(";base64")
    try:
        raw = base64.b64decode(payload) if is_base64 else unquote_to_bytes(payload)
    except (binascii.Error, ValueError):
        raw = value.encode("utf-8", "replace")
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def json_object(body: bytes, turn: Turn) -> dict[str, Any] | None:
    """A plain response body as a JSON object, or None with the reason noted on the turn."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        add_error(turn, f"response body is not JSON: {e}")
        return None
    if not isinstance(data, dict):
        add_error(turn, "response body is not a JSON object")
        return None
    return data
