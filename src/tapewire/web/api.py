"""The read side's HTTP JSON API under /api: FastAPI over the one query layer
(`tapewire.query`), so a response here says exactly what the CLI's `--json` says (the query
layer's dicts go out as they are; the Pydantic models in `models.py` describe them for the
OpenAPI document, at /api/openapi.json)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.exceptions import HTTPException
from starlette.responses import Response

from tapewire import query
from tapewire.analysis import rank
from tapewire.store import Store
from tapewire.web.findings import findings_of
from tapewire.web.models import (
    ERRORS,
    FindingsPage,
    RawExchange,
    SearchPage,
    SessionDetail,
    SessionFindings,
    SessionPage,
    Timeline,
    Tools,
)
from tapewire.web.params import (
    JSON,
    MAX_HITS,
    MAX_OFFSET,
    MAX_PAGE,
    MAX_PATH,
    MAX_TEXT,
    NDJSON,
    ExchangeId,
    OptionalSessionRef,
    ReadersDep,
    SearchQuery,
    SessionId,
    SessionRef,
    Since,
    decode_cursor,
    encode_cursor,
    get_readers,
    parse_since,
    resolve,
)
from tapewire.web.readers import ExportStream

router = APIRouter(prefix="/api", responses=ERRORS)


@router.get("/sessions", response_model=SessionPage, tags=["sessions"])
async def list_sessions(
    readers: ReadersDep,
    since: Since = None,
    harness: Annotated[
        str | None, Query(max_length=MAX_TEXT, description="claude-code, codex, aider or unknown")
    ] = None,
    model: Annotated[
        str | None, Query(max_length=MAX_TEXT, description="Only sessions that used this model.")
    ] = None,
    cwd: Annotated[
        str | None,
        Query(
            max_length=MAX_PATH,
            description="Only runs `tapewire run` started in this directory or below it.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Sessions per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(description="The previous page's `next_cursor`.", min_length=1, max_length=MAX_TEXT),
    ] = None,
) -> Response:
    """Sessions newest first, with their totals, a page at a time (`tapewire sessions`)."""
    return JSON(await sessions_page(readers, since, harness, model, cwd, limit, cursor))


async def sessions_page(
    readers: ReadersDep,
    since: str | None,
    harness: str | None,
    model: str | None,
    cwd: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """A page of sessions and the cursor of the next: for the API and the sessions page."""
    moment = parse_since(since)
    before = decode_cursor(cursor) if cursor is not None else None
    rows = await readers.run(
        lambda store: query.sessions(
            store, since=moment, harness=harness, model=model, cwd=cwd, before=before,
            limit=limit + 1,
        )
    )  # fmt: skip
    page = rows[:limit]
    return {"sessions": page, "next_cursor": encode_cursor(page[-1]) if len(rows) > limit else None}


@router.get("/sessions/{id}", response_model=SessionDetail, tags=["sessions"])
async def session(id: SessionId, readers: ReadersDep) -> Response:
    """A session's summary and its threads. `id` is any reference `tapewire show` takes: the id,
    a unique prefix of it, the /s/ name or the harness's session id."""

    def read(store: Store) -> dict[str, Any]:
        return query.session_summary(store, query.resolve_session(store, id))

    return JSON(await readers.run(read))


@router.get("/sessions/{id}/timeline", response_model=Timeline, tags=["sessions"])
async def timeline(id: SessionId, readers: ReadersDep) -> Response:
    """A session's turns in time order: what the model was sent, what it answered, the tool
    calls it made and what they returned."""

    def read(store: Store) -> dict[str, Any]:
        sid = query.resolve_session(store, id)
        return {"session": sid, "turns": query.session_detail(store, sid)["turns"]}

    return JSON(await readers.run(read))


@router.get("/sessions/{id}/findings", response_model=SessionFindings, tags=["analysis"])
async def session_findings(id: SessionId, readers: ReadersDep) -> Response:
    """What the detectors find in a session: loops, stalls, error bursts, anomalies, each with
    its severity, explanation, evidence and turns (`tapewire analyze SESSION --json`)."""

    def read(store: Store) -> dict[str, Any]:
        sid = query.resolve_session(store, id)
        return {"session": sid, "findings": findings_of(store, [sid])[sid]}

    return JSON(await readers.run(read))


@router.get("/findings", response_model=FindingsPage, tags=["analysis"])
async def store_findings(
    readers: ReadersDep,
    since: Since = None,
    min_severity: Annotated[
        str, Query(pattern="^(info|warning|error)$", description="info, warning or error")
    ] = "info",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Sessions, newest first.")] = 50,
) -> Response:
    """Findings across the store: the sessions active since `since`, newest first, each with
    its findings at or above `min_severity` (`tapewire analyze --since`)."""
    moment = parse_since(since)
    floor = rank(min_severity)

    def read(store: Store) -> dict[str, Any]:
        ids = [r["id"] for r in store.session_rows(since=moment, limit=limit)]
        found = findings_of(store, ids)
        return {"sessions": [
            {"session": sid, "findings": [f for f in found[sid] if rank(f["severity"]) >= floor]}
            for sid in ids
        ]}  # fmt: skip

    return JSON(await readers.run(read))


@router.get("/exchanges/{id}/raw", response_model=RawExchange, tags=["exchanges"])
async def raw_exchange(id: ExchangeId, readers: ReadersDep) -> Response:
    """One exchange as it crossed the wire: headers (credentials never stored), bodies decoded
    from their content-encoding, timings and outcome."""
    return JSON(await raw_data(readers, id))


async def raw_data(readers: ReadersDep, id: str) -> dict[str, Any]:
    def read(store: Store) -> dict[str, Any]:
        try:
            return query.raw_exchange(store, id)
        except LookupError as e:
            if type(e) is not LookupError:  # a KeyError is a bug, not a 404
                raise
            raise HTTPException(404, str(e)) from None

    return await readers.run(read)


@router.get("/search", response_model=SearchPage, tags=["search"])
async def search(
    readers: ReadersDep,
    q: SearchQuery,
    session: OptionalSessionRef = None,
    model: Annotated[
        str | None, Query(max_length=MAX_TEXT, description="Only turns of this model.")
    ] = None,
    tool: Annotated[
        str | None,
        Query(
            max_length=MAX_TEXT, description="Only the arguments and results of this tool's calls."
        ),
    ] = None,
    role: Annotated[
        str | None,
        Query(max_length=MAX_TEXT, description="Only messages of this role (user, assistant, …)."),
    ] = None,
    since: Since = None,
    limit: Annotated[int, Query(ge=1, le=MAX_HITS)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    rank: Annotated[
        bool, Query(description="Most relevant first (bm25) rather than newest first.")
    ] = False,
) -> Response:
    """Full-text search across every recorded message, newest first (or most relevant first),
    each hit with its session, turn, where it was found and a snippet with the matched spans."""
    return JSON(
        await search_page(readers, q, session, model, tool, role, since, limit, offset, rank)
    )


async def search_page(
    readers: ReadersDep,
    q: str,
    session: str | None,
    model: str | None,
    tool: str | None,
    role: str | None,
    since: str | None,
    limit: int,
    offset: int,
    rank: bool,
) -> dict[str, Any]:
    """A page of search hits and the offset of the next: for the API and the search page."""
    moment = parse_since(since)

    def read(store: Store) -> list[dict[str, Any]]:
        return query.search(
            store, q, session=resolve(store, session), model=model, tool=tool, role=role,
            since=moment, limit=limit + 1, offset=offset, rank=rank,
        )  # fmt: skip

    hits = await readers.run(read)
    return {"hits": hits[:limit], "next_offset": offset + limit if len(hits) > limit else None}


@router.get("/diff", response_model=dict[str, Any], tags=["analysis"])
async def diff(a: SessionRef, b: SessionRef, readers: ReadersDep) -> Response:
    """Two runs aligned turn by turn and by their tool calls: where they first diverge and
    how their totals differ."""
    return JSON(
        await readers.run(
            lambda store: query.diff(
                store, query.resolve_session(store, a), query.resolve_session(store, b)
            )
        )
    )


@router.get("/tools", response_model=Tools, tags=["analysis"])
async def tools(readers: ReadersDep, session: OptionalSessionRef = None) -> Response:
    """Per tool: calls, errors, error rate, median and 95th percentile latency."""
    return JSON(
        {"tools": await readers.run(lambda store: query.tool_stats(store, resolve(store, session)))}
    )


@router.get(
    "/export",
    response_class=NDJSON,
    responses={
        200: {
            "description": "One JSON record a line: per session, oldest first, a `session` "
            "record and then its `turn` records; each carries `schema_version`.",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
    tags=["export"],
)
async def export(
    request: Request,
    session: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]] | None,
        Query(description="Only these sessions (any reference, repeatable). Default: all."),
    ] = None,
) -> NDJSON:
    """The JSONL export, streamed (`tapewire export`)."""
    readers = get_readers(request)
    refs = session or []
    # Before the response starts, so that an unknown session (or no database) is still an error
    # said in JSON, not a stream cut short.
    ids = await readers.run(lambda store: [query.resolve_session(store, r) for r in refs])
    return NDJSON(ExportStream(readers.db, ids or None).chunks())
