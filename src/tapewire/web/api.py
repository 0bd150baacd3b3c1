"""The read side's HTTP JSON API: FastAPI over the one query layer (`tapewire.query`), so a
response here says exactly what the CLI's `--json` says (the query layer's dicts go out as they
are; the Pydantic models below describe them for the OpenAPI document, at /api/openapi.json).

Recorded content is untrusted input (DESIGN.md, invariant 6): only JSON leaves here, with
`nosniff` and a Content-Security-Policy under which nothing runs. With a token, every request
must carry it as `Authorization: Bearer <token>`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import re
import sqlite3
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from pydantic import Field
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tapewire import __version__, query
from tapewire.store import Store
from tapewire.web.models import (
    ERRORS,
    RawExchange,
    SearchPage,
    SessionDetail,
    SessionPage,
    Timeline,
    Tools,
)
from tapewire.web.readers import ExportStream, Readers, dumps

log = logging.getLogger("tapewire.web")

T = TypeVar("T")

OPENAPI_PATH = "/api/openapi.json"
DOCS_PATH = "/api/docs"
MAX_PAGE = 500
MAX_HITS = 200
MAX_OFFSET = 100_000
MAX_TEXT = 1000  # a reference, a name: SQLite refuses LIKE patterns past 50,000 bytes
MAX_QUERY = 2000
MAX_PATH = 4096
READ_THREADS = 4
EXPORT_CHUNK = 64 * 1024

# Nothing of a response may run, load, frame or be framed: JSON is all there is.
CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


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


def _resolve(store: Store, ref: str | None) -> str | None:
    return query.resolve_session(store, ref) if ref else None


# ---- the endpoints --------------------------------------------------------------------------

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
    moment = parse_since(since)
    before = decode_cursor(cursor) if cursor is not None else None
    rows = await readers.run(
        lambda store: query.sessions(
            store, since=moment, harness=harness, model=model, cwd=cwd, before=before,
            limit=limit + 1,
        )
    )  # fmt: skip
    page = rows[:limit]
    return JSON(
        {"sessions": page, "next_cursor": encode_cursor(page[-1]) if len(rows) > limit else None}
    )


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


@router.get("/exchanges/{id}/raw", response_model=RawExchange, tags=["exchanges"])
async def raw_exchange(id: ExchangeId, readers: ReadersDep) -> Response:
    """One exchange as it crossed the wire: headers (credentials never stored), bodies decoded
    from their content-encoding, timings and outcome."""

    def read(store: Store) -> dict[str, Any]:
        try:
            return query.raw_exchange(store, id)
        except LookupError as e:
            if type(e) is not LookupError:  # a KeyError is a bug, not a 404
                raise
            raise HTTPException(404, str(e)) from None

    return JSON(await readers.run(read))


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
    moment = parse_since(since)

    def read(store: Store) -> list[dict[str, Any]]:
        return query.search(
            store, q, session=_resolve(store, session), model=model, tool=tool, role=role,
            since=moment, limit=limit + 1, offset=offset, rank=rank,
        )  # fmt: skip

    hits = await readers.run(read)
    return JSON(
        {"hits": hits[:limit], "next_offset": offset + limit if len(hits) > limit else None}
    )


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
        {
            "tools": await readers.run(
                lambda store: query.tool_stats(store, _resolve(store, session))
            )
        }
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


# ---- the application ------------------------------------------------------------------------


def _docs_csp(html: bytes) -> str:
    """Swagger UI's page: its script and styles from its CDN, its one inline script by hash."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s).digest()).decode() + "'"
        for s in re.findall(rb"<script>(.*?)</script>", html, re.DOTALL)
    )
    return (
        f"default-src 'none'; script-src https://cdn.jsdelivr.net {hashes}; "
        "style-src https://cdn.jsdelivr.net 'unsafe-inline'; img-src https://fastapi.tiangolo.com data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def _host_name(value: str) -> str:
    if value.startswith("["):
        return value[1 : value.find("]")].lower()
    return value.rpartition(":")[0].lower() if ":" in value else value.lower()


class Guard:
    """Around every request: the security headers on every response; with a token, no answer
    without it; with a list of host names (loopback without a token), no answer to a Host
    header outside it, so that a web page cannot reach the API by DNS rebinding."""

    def __init__(
        self, app: ASGIApp, token: str | None, hosts: Collection[str] | None, docs_csp: str
    ) -> None:
        self.app = app
        self.token = token.encode() if token is not None else None
        self.hosts = {h.lower().strip("[]") for h in hosts} if hosts is not None else None
        self.docs_csp = docs_csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = self.docs_csp if scope["path"] == DOCS_PATH else CSP

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                headers["Content-Security-Policy"] = csp
            await send(message)

        headers = Headers(scope=scope)
        if self.hosts is not None and _host_name(headers.get("host", "")) not in self.hosts:
            await error(400, "this API answers to its loopback address only (Host header)")(
                scope, receive, send_secured
            )
            return
        if self.token is not None:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("latin-1", "replace"), self.token
            ):
                await error(
                    401,
                    "missing or wrong token: send Authorization: Bearer <token>",
                    {"WWW-Authenticate": 'Bearer realm="tapewire"'},
                )(scope, receive, send_secured)
                return
        await self.app(scope, receive, send_secured)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ())]
        where = ".".join(loc[1:]) or ".".join(loc) or "request"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(
    db: Path, *, token: str | None = None, hosts: Collection[str] | None = None
) -> FastAPI:
    """The read API over the database at `db` (opened read-only, lazily: it may not exist
    yet). `token`: required of every request. `hosts`: the Host names it answers to (None:
    any)."""
    readers = Readers(db)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        readers.stop()

    app = FastAPI(
        title="tapewire read API",
        version=__version__,
        summary="What recorded agents saw, decided and did: sessions, timelines, raw "
        "exchanges, search, diff, tools and export.",
        openapi_url=OPENAPI_PATH,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        lifespan=lifespan,
    )
    app.state.readers = readers
    app.include_router(router)

    docs = get_swagger_ui_html(openapi_url=OPENAPI_PATH, title="tapewire read API")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return docs

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        return error(400, _validation_message(exc))

    @app.exception_handler(query.SearchSyntaxError)
    async def bad_search(request: Request, exc: query.SearchSyntaxError) -> Response:
        return error(400, f"q: {exc}")

    @app.exception_handler(query.SessionNotFound)
    async def no_session(request: Request, exc: query.SessionNotFound) -> Response:
        return error(404, str(exc))

    @app.exception_handler(FileNotFoundError)
    async def no_database(request: Request, exc: FileNotFoundError) -> Response:
        return error(503, f"no database at {db} yet: nothing recorded")

    @app.exception_handler(sqlite3.Error)
    async def unreadable(request: Request, exc: sqlite3.Error) -> Response:
        log.warning("read API: %s", exc)
        return error(503, f"the database cannot be read: {exc}")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        # Outside the security headers' middleware: they are set here.
        log.exception("read API: %s %s", request.method, request.url.path)
        return JSON(
            {"error": "internal error (see tapewire's log)"},
            status_code=500,
            headers={**SECURITY_HEADERS, "Content-Security-Policy": CSP},
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi(app, token is not None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(Guard, token=token, hosts=hosts, docs_csp=_docs_csp(bytes(docs.body)))
    return app


def _openapi(app: FastAPI, with_token: bool) -> dict[str, Any]:
    """FastAPI's document, with the errors as this API gives them: JSON always, 400 (not 422)
    for a bad parameter, and 401 and the bearer scheme where a token is required."""
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    error_ref = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    }
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if with_token:
                responses["401"] = {"description": "Missing or wrong token."}
            for status, response in responses.items():
                if status[0] in "45":  # JSON, whatever the operation's own media type
                    response.update(error_ref)
    components = schema.setdefault("components", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(name, None)
    if with_token:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        schema["security"] = [{"bearer": []}]
    return schema
