"""The bundled Claude Code recording (data/demo/, see ORIGIN.md there), read into turns."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable

RECORDING_NAME = "claude-20260727-019fa57e"

# A zlib sync flush ends with an empty stored block: where the original server flushed.
_SYNC_FLUSH = b"\x00\x00\xff\xff"


@dataclass(frozen=True)
class RecordedTurn:
    """One recorded request and the response it got, as they crossed the wire."""

    name: str
    request_headers: list[tuple[str, str]]  # in wire order; credentials already <redacted:N>
    request_body: bytes
    status: int
    response_headers: list[tuple[str, str]]  # including content-encoding: gzip
    response_chunks: list[bytes]  # the recorded body, cut where the server flushed

    @property
    def request_sha256(self) -> str:
        return hashlib.sha256(self.request_body).hexdigest()


def recording_dir() -> Traversable:
    return resources.files("tapewire") / "data" / "demo" / RECORDING_NAME


def flush_chunks(body: bytes) -> list[bytes]:
    """Cut a compressed body after each sync-flush marker, so it streams in the pieces the
    provider sent. A marker that occurs by chance only adds a cut: the joined bytes are the
    body, always."""
    chunks: list[bytes] = []
    start = 0
    at = body.find(_SYNC_FLUSH)
    while at != -1:
        end = at + len(_SYNC_FLUSH)
        chunks.append(body[start:end])
        start = end
        at = body.find(_SYNC_FLUSH, end)
    if start < len(body):
        chunks.append(body[start:])
    return chunks


def load_turn(directory: Traversable) -> RecordedTurn:
    request = json.loads(directory.joinpath("request.json").read_text(encoding="utf-8"))
    meta = json.loads(directory.joinpath("meta.json").read_text(encoding="utf-8"))
    headers = [(str(k), str(v)) for k, v in meta["response_headers"]]
    # The body is stored as it crossed the wire (compressed); it must go out labelled so.
    encoding = str(meta.get("content_encoding") or "")
    if encoding and not any(k.lower() == "content-encoding" for k, _ in headers):
        headers.append(("content-encoding", encoding))
    return RecordedTurn(
        name=directory.name,
        request_headers=[(str(k), str(v)) for k, v in request["headers"]],
        request_body=base64.b64decode(request["body_b64"]),
        status=int(meta["status"]),
        response_headers=headers,
        response_chunks=flush_chunks(directory.joinpath("response.sse").read_bytes()),
    )


def load_recording() -> list[RecordedTurn]:
    """Every turn, in arrival order (the directories' names sort so)."""
    dirs = sorted((d for d in recording_dir().iterdir() if d.is_dir()), key=lambda d: d.name)
    return [load_turn(d) for d in dirs]
