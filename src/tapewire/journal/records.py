"""What the proxy journals about an exchange: its begin (the request) and its end (the response).

Two records, so that an exchange cut off by a kill is still known, with its request, and is
stored as interrupted; the request body is written once, never again with the response.
"""

from __future__ import annotations

from typing import Any

from tapewire.journal.format import Record
from tapewire.model import (
    ChunkMap,
    Evidence,
    Exchange,
    ExchangeEnd,
    Frame,
    Outcome,
    RunContext,
)


def begin_record(ex: Exchange) -> tuple[dict[str, Any], list[bytes]]:
    meta = {
        "kind": "begin",
        "id": ex.id,
        "run": ex.run_id,
        "started_at": ex.started_at,
        "method": ex.method,
        "path": ex.path,
        "upstream": ex.upstream,
        "upstream_url": ex.upstream_url,
        "provider": ex.provider,
        "headers": ex.request_headers,
        "evidence": ex.evidence.as_dict(),
        "size": ex.request_size,
        "truncated": ex.request_truncated,
        "request_end_at": ex.request_end_at,
    }
    return meta, [ex.request_body]


def end_record(ex: Exchange) -> tuple[dict[str, Any], list[bytes]]:
    meta: dict[str, Any] = {
        "kind": "end",
        "id": ex.id,
        "status": ex.status,
        "headers": ex.response_headers,
        "size": ex.response_size,
        "truncated": ex.response_truncated,
        "upstream_headers_at": ex.upstream_headers_at,
        "first_byte_at": ex.first_byte_at,
        "last_byte_at": ex.last_byte_at,
        "outcome": str(ex.outcome),
        "error": ex.error,
    }
    if ex.response_chunks is not None:
        # Two flat lists, not pairs: two bytes an entry less. Records written before this field
        # existed have neither key, and read back with no map.
        meta["chunk_sizes"] = ex.response_chunks.sizes
        meta["chunk_ms"] = ex.response_chunks.ms
    if ex.frames is not None:
        meta["frames"] = [f.as_json() for f in ex.frames]
    return meta, [ex.response_body]


def _frames(value: Any) -> list[Frame] | None:
    return [Frame.from_json(e) for e in value] if isinstance(value, list) else None


def context_record(ctx: RunContext) -> tuple[dict[str, Any], list[bytes]]:
    return {
        "kind": "context",
        "session": ctx.session,
        "at": ctx.recorded_at,
        "context": ctx.context,
    }, []


def drops_record(drops: dict[str, int]) -> tuple[dict[str, Any], list[bytes]]:
    return {"kind": "drops", "drops": drops}, []


def _headers(raw: list[list[str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in raw]


def to_begin(rec: Record) -> Exchange:
    m = rec.meta
    return Exchange(
        id=m["id"],
        run_id=m["run"],
        started_at=m["started_at"],
        method=m["method"],
        path=m["path"],
        upstream=m["upstream"],
        upstream_url=m["upstream_url"],
        provider=m["provider"],
        request_headers=_headers(m["headers"]),
        request_body=rec.sections[0] if rec.sections else b"",
        request_truncated=m["truncated"],
        request_size=m["size"],
        evidence=Evidence(**m["evidence"]),
        request_end_at=m["request_end_at"],
    )


def to_end(rec: Record) -> ExchangeEnd:
    m = rec.meta
    return ExchangeEnd(
        id=m["id"],
        status=m["status"],
        response_headers=_headers(m["headers"]),
        response_body=rec.sections[0] if rec.sections else b"",
        response_truncated=m["truncated"],
        response_size=m["size"],
        upstream_headers_at=m["upstream_headers_at"],
        first_byte_at=m["first_byte_at"],
        last_byte_at=m["last_byte_at"],
        outcome=Outcome(m["outcome"]),
        error=m["error"],
        response_chunks=_chunks(m),
        frames=_frames(m.get("frames")),
    )


def _chunks(m: dict[str, Any]) -> ChunkMap | None:
    sizes, ms = m.get("chunk_sizes"), m.get("chunk_ms")
    if not isinstance(sizes, list) or not isinstance(ms, list) or len(sizes) != len(ms):
        return None
    return ChunkMap(sizes, ms)


def to_context(rec: Record) -> RunContext:
    return RunContext(rec.meta["session"], rec.meta["at"], rec.meta["context"])
