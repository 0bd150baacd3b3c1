"""The read side as one ASGI application: the JSON API under /api, the web UI's pages beside
it, their static files, the errors said as each side says them (JSON for the API, a page for
the UI), and the guard around it all."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, Response

from tapewire import __version__, query
from tapewire.store import location
from tapewire.store.location import DbRef
from tapewire.web import api, pages
from tapewire.web.guard import CSP, DOCS_PATH, SECURITY_HEADERS, UI_CSP, Guard, docs_csp
from tapewire.web.params import error
from tapewire.web.readers import Readers

log = logging.getLogger("tapewire.web")

OPENAPI_PATH = "/api/openapi.json"
STATIC = Path(__file__).parent / "static"


def problem(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """An error as the side that was asked says it: JSON for the API, a page for the UI."""
    if request.url.path.startswith("/api/") or request.url.path.endswith(".json"):
        return error(status, message, headers)
    return pages.error_page(request, status, message, headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ())]
        where = ".".join(loc[1:]) or ".".join(loc) or "request"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(
    db: DbRef, *, token: str | None = None, hosts: Collection[str] | None = None
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
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    docs = get_swagger_ui_html(openapi_url=OPENAPI_PATH, title="tapewire read API")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return docs

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return problem(request, exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        return problem(request, 400, _validation_message(exc))

    @app.exception_handler(query.SearchSyntaxError)
    async def bad_search(request: Request, exc: query.SearchSyntaxError) -> Response:
        return problem(request, 400, f"q: {exc}")

    @app.exception_handler(query.SessionNotFound)
    async def no_session(request: Request, exc: query.SessionNotFound) -> Response:
        return problem(request, 404, str(exc))

    @app.exception_handler(FileNotFoundError)
    async def no_database(request: Request, exc: FileNotFoundError) -> Response:
        return problem(request, 503, f"no database at {location.display(db)} yet: nothing recorded")

    @app.exception_handler(sqlite3.Error)
    @app.exception_handler(psycopg.Error)
    @app.exception_handler(ConnectionError)  # PostgreSQL unreachable (store/postgres.py)
    async def unreadable(request: Request, exc: Exception) -> Response:
        log.warning("read API: %s", exc)
        return problem(request, 503, f"the database cannot be read: {exc}")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        # Outside the security headers' middleware: they are set here.
        log.exception("read API: %s %s", request.method, request.url.path)
        api_side = request.url.path.startswith("/api/")
        headers = {**SECURITY_HEADERS, "Content-Security-Policy": CSP if api_side else UI_CSP}
        return problem(request, 500, "internal error (see tapewire's log)", headers)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi(app, token is not None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(Guard, token=token, hosts=hosts, docs_csp=docs_csp(bytes(docs.body)))
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
