"""What the API and the pages share: JSON responses and errors, the request parameters with
their limits and descriptions, cursors, and the readers each request runs its queries on."""

from __future__ import annotations

import base64
import json
import math
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi import Path as PathParam
from starlette.exceptions import HTTPException
from starlette.responses import Response, StreamingResponse

from tapewire import query
from tapewire.store import Store
from tapewire.web.readers import Readers, dumps

MAX_PAGE = 500
MAX_HITS = 200
MAX_OFFSET = 100_000
MAX_TEXT = 1000  # a reference, a name: SQLite refuses LIKE patterns past 50,000 bytes
MAX_QUERY = 2000
MAX_PATH = 4096


# ---- responses, parameters, errors ----------------------------------------------------------


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


class NDJSON(StreamingResponse):
    media_type = "application/x-ndjson"


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSON:
    return JSON({"error": message}, status_code=status, headers=headers)


def parse_since(value: str | None) -> float | None:
    """An ISO 8601 date or date-time as Unix time; without an offset it is local time."""
    if value is None:
        return None
    try:
        return query.parse_time(value)
    except ValueError as e:
        raise HTTPException(400, f"since: {e}") from None


def encode_cursor(row: dict[str, Any]) -> str:
    raw = json.dumps([row["started_at"], row["id"]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(value: str) -> tuple[float, str]:
    try:
        started, sid = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        if (
            isinstance(started, int | float)
            and not isinstance(started, bool)
            and math.isfinite(started)
            and isinstance(sid, str)
        ):
            return float(started), sid
    except (ValueError, TypeError, OverflowError):
        pass
    raise HTTPException(400, "cursor: not a cursor this API gave out (use next_cursor as it is)")


def get_readers(request: Request) -> Readers:
    readers: Readers = request.app.state.readers
    return readers


ReadersDep = Annotated[Readers, Depends(get_readers)]
SessionRef = Annotated[
    str,
    Query(
        min_length=1,
        max_length=MAX_TEXT,
        description="A session: its id, a unique prefix of it, its /s/ name or the harness's "
        "session id.",
    ),
]
OptionalSessionRef = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_TEXT,
        description="Only this session: its id, a unique prefix of it, its /s/ name or the "
        "harness's session id.",
    ),
]
SessionId = Annotated[
    str,
    PathParam(
        max_length=MAX_TEXT,
        description="A session: its id, a unique prefix of it, its /s/ name or the harness's "
        "session id.",
    ),
]
ExchangeId = Annotated[str, PathParam(max_length=MAX_TEXT, description="The exchange's id.")]
Since = Annotated[
    str | None,
    Query(
        max_length=MAX_TEXT,
        description="ISO 8601 date or date-time (`2026-07-27`, `2026-07-27T09:30:00+02:00`); "
        "without an offset it is local time.",
    ),
]


SearchQuery = Annotated[
    str,
    Query(
        min_length=1,
        max_length=MAX_QUERY,
        description='An FTS5 query: words, "a phrase", prefix*, AND, OR, NOT, NEAR(…).',
    ),
]


def resolve(store: Store, ref: str | None) -> str | None:
    return query.resolve_session(store, ref) if ref else None
