"""The web UI's pages: server-rendered (Jinja2) from the same queries the API answers with.
Every page has a JSON twin at the same address plus `.json` that returns exactly the data the
page was rendered from (datasette's pattern), so the page, the API and the CLI's `--json`
cannot disagree. Fragments (`?fragment=…`) are the same templates' parts, for the little
JavaScript that updates a page in place."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, RedirectResponse, Response

from tapewire import query
from tapewire.store import Store
from tapewire.web import render
from tapewire.web.api import raw_data, search_page, sessions_page
from tapewire.web.charts import session_charts
from tapewire.web.findings import findings_of
from tapewire.web.params import (
    JSON,
    MAX_OFFSET,
    MAX_PAGE,
    MAX_PATH,
    MAX_QUERY,
    MAX_TEXT,
    ExchangeId,
    ReadersDep,
    SessionId,
    Since,
)

# The `.json` twin of a page with a path parameter is registered first (decorators apply
# bottom-up): `/sessions/{id}` would otherwise take `abc.json` as the id `abc.json`.
router = APIRouter(include_in_schema=False)
env = render.environment()

SESSIONS_PER_PAGE = 100
HITS_PER_PAGE = 50

Text = Annotated[str | None, Query(max_length=MAX_TEXT)]
Fragment = Annotated[str | None, Query(max_length=20)]


async def respond(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    extra: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    """The page, or its JSON twin when the address ends in `.json`. `extra` is what only the
    page needs (its charts, its form's values); rendering runs off the event loop."""
    if request.url.path.endswith(".json"):
        return JSON(context, status_code=status)
    page = env.get_template(template)
    values = {**context, **(extra or {}), "request_path": request.url.path}
    html = await asyncio.to_thread(page.render, values)
    return HTMLResponse(html, status_code=status)


def error_page(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    html = env.get_template("error.html").render(status=status, message=message)
    return HTMLResponse(html, status_code=status, headers=headers)


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/sessions", status_code=303)


# ---- sessions -------------------------------------------------------------------------------


@router.get("/sessions.json")
@router.get("/sessions")
async def sessions(
    request: Request,
    readers: ReadersDep,
    since: Since = None,
    harness: Text = None,
    model: Text = None,
    cwd: Annotated[str | None, Query(max_length=MAX_PATH)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = SESSIONS_PER_PAGE,
    cursor: Annotated[str | None, Query(min_length=1, max_length=MAX_TEXT)] = None,
    fragment: Fragment = None,
) -> Response:
    """Sessions newest first; `fragment=rows` is the table's body alone (for live updates)."""
    since, harness, model, cwd, cursor = (v or None for v in (since, harness, model, cwd, cursor))
    context = await sessions_page(readers, since, harness, model, cwd, limit, cursor)
    filters = {"since": since, "harness": harness, "model": model, "cwd": cwd}
    template = "_rows.html" if fragment == "rows" else "sessions.html"
    return await respond(request, template, context, extra={"filters": filters})


# ---- one session ----------------------------------------------------------------------------


def _timeline(store: Store, ref: str) -> dict[str, Any]:
    detail = query.session_detail(store, query.resolve_session(store, ref))
    # A tool result in a later turn's input names its tool, as the call that asked did.
    names = {c["id"]: c["name"] for t in detail["turns"] for c in t["tool_calls"] if c["name"]}
    sid = detail["session"]["id"]
    return {
        "session": detail["session"],
        "threads": detail["threads"],
        "lanes": query.lanes(detail),
        "tool_names": names,
        "findings": findings_of(store, [sid])[sid],
    }


@router.get("/sessions/{id}")
@router.get("/sessions/{id}.json")
async def session(
    request: Request, id: SessionId, readers: ReadersDep, fragment: Fragment = None
) -> Response:
    """A session's timeline (turns in reading order, subagents nested), with its charts;
    `fragment=timeline` is the timeline alone (for live updates)."""
    context = await readers.run(lambda store: _timeline(store, id))
    if fragment == "timeline":
        return await respond(request, "_timeline.html", context)
    turns = [t for run in context["lanes"] for t in run["turns"]]
    turns.sort(key=lambda t: t["index"])
    extra = {"charts": session_charts(turns)}
    return await respond(request, "session.html", context, extra=extra)


@router.get("/sessions/{id}/turns/{n}")
@router.get("/sessions/{id}/turns/{n}.json")
async def turn(
    request: Request,
    id: SessionId,
    n: int,
    readers: ReadersDep,
    fragment: Fragment = None,
) -> Response:
    """One turn with nothing cut short ("show all")."""

    def read(store: Store) -> dict[str, Any]:
        context = _timeline(store, id)
        for run in context["lanes"]:
            for t in run["turns"]:
                if t["index"] == n:
                    return {
                        "session": context["session"],
                        "lane": run["lane"],
                        "turn": t,
                        "tool_names": context["tool_names"],
                        "findings": context["findings"],
                    }
        raise HTTPException(404, f"the session has no turn {n}")

    context = await readers.run(read)
    template = "_turn_full.html" if fragment else "turn.html"
    return await respond(request, template, context)


# ---- one exchange ---------------------------------------------------------------------------


@router.get("/exchanges/{id}")
@router.get("/exchanges/{id}.json")
async def exchange(
    request: Request, id: ExchangeId, readers: ReadersDep, full: bool = False
) -> Response:
    """An exchange as it crossed the wire: headers, decoded bodies, timings."""
    context = await raw_data(readers, id)
    limit = None if full else render.BODY_LIMIT
    return await respond(request, "exchange.html", context, extra={"limit": limit})


# ---- search ---------------------------------------------------------------------------------


@router.get("/search.json")
@router.get("/search")
async def search(
    request: Request,
    readers: ReadersDep,
    q: Annotated[str | None, Query(max_length=MAX_QUERY)] = None,
    session: Text = None,
    model: Text = None,
    tool: Text = None,
    role: Text = None,
    since: Since = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    rank: bool = False,
) -> Response:
    """Full-text search; each hit links to its turn."""
    session, model, tool, role, since = (v or None for v in (session, model, tool, role, since))
    form = {"q": q or "", "session": session, "model": model, "tool": tool, "role": role,
            "since": since, "rank": rank}  # fmt: skip
    if not q or not q.strip():
        context: dict[str, Any] = {"hits": [], "next_offset": None}
    else:
        context = await search_page(
            readers, q, session, model, tool, role, since, HITS_PER_PAGE, offset, rank
        )
    return await respond(request, "search.html", context, extra={"form": form, "offset": offset})


# ---- diff -----------------------------------------------------------------------------------


@router.get("/diff.json")
@router.get("/diff")
async def diff(
    request: Request,
    readers: ReadersDep,
    a: Text = None,
    b: Text = None,
    s: Annotated[list[str] | None, Query(max_length=2)] = None,
) -> Response:
    """Two runs side by side: `a` and `b`, or two `s` (the sessions list's checkboxes)."""
    if (a is None or b is None) and s is not None and len(s) == 2:
        a, b = s
    if not a or not b:
        raise HTTPException(400, "pick two sessions to compare (a and b)")
    ref_a, ref_b = a, b

    def read(store: Store) -> dict[str, Any]:
        da = query.session_detail(store, query.resolve_session(store, ref_a))
        db = query.session_detail(store, query.resolve_session(store, ref_b))
        result = query.compare(da, db)
        return {"diff": result, "rows": side_by_side(result, da, db)}

    return await respond(request, "diff.html", await readers.run(read))


def side_by_side(
    result: dict[str, Any], da: dict[str, Any], db: dict[str, Any]
) -> list[dict[str, Any]]:
    """The two runs' main-thread turns paired by position (as the diff pairs them), each side
    with its text and tool calls, the first divergence and the differing calls marked."""
    marked: dict[str, set[tuple[int, str]]] = {"a": set(), "b": set()}
    for kind, pairs in result["tool_calls"].items():
        for entry in pairs:
            for side in ("a", "b"):
                call = (
                    entry.get(side)
                    if kind in ("arguments_differ", "results_differ")
                    else (entry if (kind == "removed") == (side == "a") else None)
                )
                if call:
                    marked[side].add((call["turn"], call["id"]))
    first = (result["first_divergence"] or {}).get("turn")
    # A fork and its parent are paired from the fork point, as the diff pairs them.
    start = result.get("aligned_from") or {"a": 1, "b": 1}
    mains = [
        [t for t in d["turns"] if t["kind"] == "main" and t["index"] >= start[side]]
        for side, d in (("a", da), ("b", db))
    ]
    rows = []
    for i in range(max(len(mains[0]), len(mains[1]))):
        row: dict[str, Any] = {"turn": i + 1, "first_divergence": i + 1 == first}
        for side, turns in zip(("a", "b"), mains, strict=True):
            t = turns[i] if i < len(turns) else None
            row[side] = None if t is None else {
                "index": t["index"],
                "exchange_id": t["exchange_id"],
                "text": " ".join(
                    p.get("text") or "" for p in t["output"] if p.get("type") == "text"
                ).strip(),
                "error": t["error"],
                "tool_calls": [
                    {"name": c["name"], "arguments": c["arguments"], "is_error": c["is_error"],
                     "differs": (t["index"], c["id"]) in marked[side]}
                    for c in t["tool_calls"]
                ],
            }  # fmt: skip
        rows.append(row)
    return rows
