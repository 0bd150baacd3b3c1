"""The one query layer over the store: the CLI's --json, the HTTP API and the web UI all read
through here, so they never disagree."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from tapewire.analysis import History, Thresholds, Totals, analyze, build
from tapewire.analysis.diff import diff_sessions
from tapewire.analysis.drift import drift as drift_runs
from tapewire.analysis.record import digest
from tapewire.content_encoding import DecodeError, decode
from tapewire.derive import result_text, search_rows
from tapewire.model import Part
from tapewire.store import SearchSyntaxError, Store

_USAGE = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
          "cache_write_1h_tokens", "reasoning_tokens")  # fmt: skip
_TITLE_CHARS = 80


__all__ = [
    "EXPORT_SCHEMA",
    "SearchSyntaxError",
    "SessionNotFound",
    "analysis_history",
    "analysis_input",
    "compare",
    "diff",
    "drift",
    "export_records",
    "findings",
    "fork_alignment",
    "forks",
    "lanes",
    "parse_time",
    "raw_exchange",
    "resolve_session",
    "search",
    "search_texts",
    "session_detail",
    "session_summary",
    "sessions",
    "snippet_of",
    "tool_stats",
]  # fmt: skip


class SessionNotFound(LookupError):
    pass


def parse_time(value: str) -> float:
    """An ISO date or date-time (naive: local time) as unix seconds; ValueError otherwise."""
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.astimezone()
        return moment.astimezone(UTC).timestamp()
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO date or date-time") from None
    except (OverflowError, OSError):  # ISO, but not a moment this machine's clock can place
        raise ValueError(f"{value!r} is out of range") from None


def resolve_session(store: Store, ref: str) -> str:
    """A session named by its id, a unique prefix of it, its /s/ name or the harness's id."""
    if not ref.strip():
        raise SessionNotFound("name a session: its id, a prefix of it, its /s/ name")
    # Past a few hundred characters nothing is a prefix of an id; SQLite refuses huge patterns.
    found = store.find_sessions(ref) if len(ref) <= 512 else []
    if not found:
        raise SessionNotFound(f"no session matches {ref!r}")
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (" …" if len(found) > 5 else "")
        raise SessionNotFound(f"{ref!r} matches {len(found)} sessions: {shown}")
    return found[0]


def sessions(
    store: Store,
    *,
    since: float | None = None,
    harness: str | None = None,
    model: str | None = None,
    cwd: str | None = None,
    before: tuple[float, str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Sessions newest first with their totals; `before` = (started_at, id) of the last one of
    the previous page."""
    rows = store.session_rows(
        since=since, harness=harness, model=model, cwd=cwd, before=before, limit=limit
    )
    for row in rows:
        _finish(store, row)
    _fork_links(store, rows)
    _sources(store, rows)
    return rows


def _sources(store: Store, rows: list[dict[str, Any]]) -> None:
    """`source` on each row: `wire` (captured), `transcript` (imported from an agent's
    transcript: no exact bytes, no timings) or `wire+transcript`."""
    found = store.session_sources([r["id"] for r in rows])
    for row in rows:
        row["source"] = found.get(row["id"], "wire")


def _finish(store: Store, row: dict[str, Any]) -> None:
    if not row["title"]:
        row["title"] = _first_prompt(store, row["id"])
    _finish_duration(row)


def _fork_links(store: Store, rows: list[dict[str, Any]]) -> None:
    """`forked_from` (the parent session's id), `fork_turn` (the parent's turn, 1-based as
    `session_detail` numbers them) and `fork_node` (that turn's request node) on each row: null
    unless `tapewire fork` made the session (its run context says so)."""
    links = store.fork_links(sorted({r["name"] for r in rows if r["name"]}))
    for row in rows:
        link = _fork_link(links.get(row["name"]) if row["name"] else None)
        row["forked_from"] = link["forked_from"] if link else None
        row["fork_turn"] = link["fork_turn"] if link else None
        row["fork_node"] = link["fork_node"] if link else None


def _fork_link(link: dict[str, Any] | None) -> dict[str, Any] | None:
    """A run context's fork link as its types say (anyone who reaches the proxy can post a
    run context: what is not a string or a number here is no link)."""
    if link is None or not isinstance(link.get("forked_from"), str):
        return None
    return {**link, **_fork_point(link)}


def _fork_point(link: dict[str, Any]) -> dict[str, Any]:
    turn, node = link.get("fork_turn"), link.get("fork_node")
    return {
        "fork_turn": turn if isinstance(turn, int) and not isinstance(turn, bool) else None,
        "fork_node": node if isinstance(node, str) else None,
    }


def _first_prompt(store: Store, session: str) -> str | None:
    """Where the harness made no title: the first thing the user asked, shortened."""
    for turn in store.turn_rows(session):
        if turn["kind"] != "main":
            continue
        nodes = store.node_rows(turn["input_nodes"])
        for nid in turn["input_nodes"]:
            node = nodes.get(nid)
            if node is None or node["role"] != "user":
                continue
            texts = [
                p["text"] for p in node["content"] if p.get("type") == "text" and p.get("text")
            ]
            # Harnesses prepend reminders to the first message; the prompt comes last.
            asked = [t for t in texts if not t.lstrip().startswith("<")] or texts
            if asked:
                text = " ".join(asked[-1].split())
                return text if len(text) <= _TITLE_CHARS else text[: _TITLE_CHARS - 1] + "…"
        return None
    return None


def _result(node: dict[str, Any] | None, call_id: str) -> str | None:
    """A tool's result as text, from the message node that carried it."""
    for part in node["content"] if node else []:
        if part.get("type") == "tool_result" and part.get("id") == call_id:
            return result_text(Part.from_json(part))
    return None


def session_summary(store: Store, session: str) -> dict[str, Any]:
    """The session's totals and threads, without reading its turns."""
    summary = store.session_rows(ids=[session])
    if not summary:
        raise SessionNotFound(f"no session {session!r}")
    _finish(store, summary[0])
    _fork_links(store, summary)
    _sources(store, summary)
    hsid = summary[0]["harness_session_id"]
    summary[0]["facts"] = store.transcript_facts(hsid) if hsid else None
    summary[0]["forks"] = forks(store, session)
    return {"session": summary[0], "threads": store.thread_rows(session)}


def forks(store: Store, session: str) -> list[dict[str, Any]]:
    """The sessions `tapewire fork` branched off `session`, oldest first: `id`, `name`,
    `fork_turn`, `fork_node`, `started_at`."""
    return [{**f, **_fork_point(f)} for f in store.forks_of(session)]


def session_detail(store: Store, session: str) -> dict[str, Any]:
    """The session's summary and its turns in time order."""
    head = session_summary(store, session)["session"]
    turns = store.turn_rows(session)
    calls = store.tool_call_rows(session)
    calls_by_exchange: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        calls_by_exchange.setdefault(call["call_exchange"], []).append(call)
    wanted = [n for t in turns for n in t["input_nodes"] + t["response_nodes"][:1]]
    wanted += [c["result_node"] for c in calls if c["result_node"]]
    nodes = store.node_rows(wanted)
    out = []
    for index, t in enumerate(turns, 1):
        response = nodes.get(t["response_nodes"][0]) if t["response_nodes"] else None
        out.append({
            "index": index,
            "exchange_id": t["exchange"],
            "thread": t["thread"],
            "kind": t["kind"],
            "api": t["api"],
            "model": t["response_model"] or t["model"],
            "started_at": t["started_at"],
            "duration_ms": t["duration_ms"],
            "ttfb_ms": t["ttfb_ms"],
            "status": t["status"],
            "outcome": t["outcome"],
            "stop_reason": t["stop_reason"],
            "error": t["error"],
            "input": [
                {"role": nodes[n]["role"], "node": n, "parts": nodes[n]["content"]}
                for n in t["input_nodes"] if n in nodes
            ],
            "output": response["content"] if response else [],
            "response_node": response["id"] if response else None,
            "tool_calls": [
                {
                    "id": c["id"],
                    "name": c["name"],
                    "arguments": c["arguments"],
                    "result": _result(nodes.get(c["result_node"]), c["id"]),
                    "is_error": c["is_error"],
                    "answered": c["result_exchange"] is not None,
                    "latency_ms": round((c["answered_at"] - c["asked_at"]) * 1000, 3)
                    if c["answered_at"] is not None and c["asked_at"] is not None else None,
                }
                for c in calls_by_exchange.get(t["exchange"], [])
            ],
            "usage": {k: t[k] for k in _USAGE},
            "cost_usd": t["cost_usd"],
        })  # fmt: skip
    return {"session": head, "threads": store.thread_rows(session), "turns": out}


def lanes(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """A `session_detail`'s turns in reading order, as runs of one lane each: the main thread,
    each subagent's thread right after the turn whose tool call spawned it (one level deeper),
    the subagents whose spawning call is not known, then the side calls (titles, probes), which
    are outside the conversation. Each run: `thread`, `lane` ("main", "agent N", "side"),
    `depth`, `note` (why it stands apart, or null) and its `turns`."""
    names: dict[str | None, str] = {None: "side"}
    agents = 0
    for t in detail["threads"]:
        if t["kind"] != "main":
            agents += 1
        names[t["id"]] = "main" if t["kind"] == "main" else f"agent {agents}"
    spawned = {t["spawned_by"]: t["id"] for t in detail["threads"] if t.get("spawned_by")}
    by_thread: dict[str | None, list[dict[str, Any]]] = {}
    for turn in detail["turns"]:
        by_thread.setdefault(turn["thread"], []).append(turn)
    runs: list[dict[str, Any]] = []
    shown: set[str | None] = set()

    def lane(thread: str | None, depth: int, note: str | None = None) -> None:
        shown.add(thread)
        run: dict[str, Any] | None = None
        for turn in by_thread.get(thread, []):
            if run is None:
                run = {"thread": thread, "lane": names.get(thread, "side"), "depth": depth,
                       "note": note, "turns": []}  # fmt: skip
                runs.append(run)
                note = None
            run["turns"].append(turn)
            for call in turn["tool_calls"]:
                child = spawned.get(call["id"])
                if child is not None and child not in shown:
                    lane(child, depth + 1)
                    run = None  # the parent's next turn starts a new run

    for t in detail["threads"]:
        if t["kind"] == "main":
            lane(t["id"], 0)
    for t in detail["threads"]:
        if t["id"] not in shown:
            lane(t["id"], 1, "its spawning tool call is not known")
    lane(None, 1, "titles, probes, summaries: outside the conversation")
    return runs


def analysis_input(
    store: Store, session: str, digests: dict[str, str] | None = None
) -> dict[str, Any]:
    """What the detectors read of a session (analysis/record.py): its turns and tool calls,
    each result as the digest of its text, without the messages' contents. `digests` caches
    result nodes' digests between calls (a node never changes: its id is its content's)."""
    rows = store.session_rows(ids=[session])
    if not rows:
        raise SessionNotFound(f"no session {session!r}")
    calls = store.tool_call_rows(session)
    digests = digests if digests is not None else {}
    unread = {c["result_node"] for c in calls
              if c["result_node"] and f"{c['result_node']}/{c['id']}" not in digests}  # fmt: skip
    nodes = store.node_rows(sorted(unread))
    for c in calls:
        node = c["result_node"]
        if node is None:
            c["result_digest"] = None
            continue
        key = f"{node}/{c['id']}"  # one message may answer several calls
        if key not in digests:
            digests[key] = digest(_result(nodes.get(node), c["id"]) or "")
        c["result_digest"] = digests[key]
    turns = store.turn_rows(session)
    return {"session": rows[0], "turns": turns, "calls": calls,
            "final_answer": _final_answer(store, turns)}  # fmt: skip


def _final_answer(store: Store, turns: list[dict[str, Any]]) -> str | None:
    """The text of the main thread's last answer (what drift compares between runs)."""
    last = next((t for t in reversed(turns) if t["kind"] == "main" and t["response_nodes"]), None)
    if last is None:
        return None
    node = store.node_rows(last["response_nodes"][:1]).get(last["response_nodes"][0])
    texts = [
        p.get("text") or "" for p in (node or {}).get("content", []) if p.get("type") == "text"
    ]
    return "\n".join(texts) or None


# ---- analysis -------------------------------------------------------------------------------


def analysis_history(store: Store) -> History:
    """What sessions are compared with: every tool's error rate over the store, and each
    (harness, main model)'s session totals."""
    rates = {t["name"]: (t["errors"], t["calls"]) for t in store.tool_stats(None)}
    models = store.main_models()
    peers: dict[tuple[str, str], list[Totals]] = {}
    for row in store.session_rows():
        _finish_duration(row)
        peers.setdefault((row["harness"], models.get(row["id"], "")), []).append(
            Totals(row["id"], row["turns"], row["tool_calls"], row["output_tokens"],
                   row["cost_usd"], row["duration_s"])
        )  # fmt: skip
    return History(rates, peers)


def _finish_duration(row: dict[str, Any]) -> None:
    row["duration_s"] = round(row["ended_at"] - row["started_at"], 3)


def findings(
    store: Store,
    sessions: list[str],
    limits: Thresholds | None = None,
    history: History | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Each session's findings, from its own record and (with the store at hand) against the
    rest of the store: what `tapewire analyze` prints and the API answers."""
    history = history if history is not None else analysis_history(store)
    return {
        sid: [f.as_json() for f in analyze(build(analysis_input(store, sid)), limits, history)]
        for sid in sessions
    }


def drift(store: Store, sessions: list[str], limits: Thresholds | None = None) -> dict[str, Any]:
    """How far runs of one task drifted apart (analysis/drift.py)."""
    return drift_runs([build(analysis_input(store, sid)) for sid in sessions], limits)


# ---- one exchange, as it crossed the wire -------------------------------------------------


def raw_exchange(store: Store, exchange_id: str) -> dict[str, Any]:
    """The exchange's headers (credentials were never stored), bodies decoded from their
    content-encoding (as text where they are UTF-8, else base64) and timings."""
    row = store.exchange(exchange_id)
    if row is None:
        raise LookupError(f"no exchange {exchange_id!r}")
    out = row.as_json()
    for what, body, encoding in (
        ("request", row.request_body or b"", row.request_encoding),
        ("response", row.response_body or b"", row.response_encoding),
    ):
        out[f"{what}_body"] = _body(body, encoding)
    return out


def _body(data: bytes, encoding: str | None) -> dict[str, Any]:
    note = None
    try:
        decoded = decode(data, encoding)
        data = decoded.data
        if decoded.truncated:
            note = f"the {encoding} stream was cut short: what arrived"
    except DecodeError as e:
        note = f"shown as stored: {e}"
    try:
        return {"text": data.decode("utf-8"), "base64": None, "size": len(data), "note": note}
    except UnicodeDecodeError:
        return {"text": None, "base64": base64.b64encode(data).decode(), "size": len(data),
                "note": note}  # fmt: skip


# ---- search ---------------------------------------------------------------------------------

_SNIPPET = 200


def search(
    store: Store,
    query: str,
    *,
    session: str | None = None,
    model: str | None = None,
    tool: str | None = None,
    role: str | None = None,
    since: float | None = None,
    limit: int = 20,
    offset: int = 0,
    rank: bool = False,
) -> list[dict[str, Any]]:
    """Full-text search (FTS5 query syntax) across every session, newest first (`rank`: most
    relevant first, bm25, which costs a pass over every match). Each hit names
    its session, turn and where it is (prompt, response, thinking, tool_arguments,
    tool_result), with a snippet of the text and the spans that matched."""
    hits = store.search_hits(query, session=session, model=model, tool=tool, role=role,
                             since=since, limit=limit, offset=offset, rank=rank)  # fmt: skip
    nodes = store.node_rows(sorted({h["node"] for h in hits}))
    titles: dict[str, str | None] = {}
    terms = _terms(query, store.SEARCH_OPERATORS)
    out = []
    for h in hits:
        node = nodes.get(h["node"])
        texts = search_texts(node["role"], node["content"]) if node else []
        text = texts[h["ordinal"]][1] if h["ordinal"] < len(texts) else ""
        if h["session"] not in titles:
            rows = store.session_rows(ids=[h["session"]])
            titles[h["session"]] = (
                (rows[0]["title"] or _first_prompt(store, h["session"])) if rows else None
            )
        snippet, spans = snippet_of(text, terms)
        out.append({
            "session": h["session"],
            "session_title": titles[h["session"]],
            "exchange_id": h["exchange_id"],
            "turn": store.turn_index(h["exchange_id"]),
            "where": h["kind"],
            "role": h["role"],
            "model": h["model"],
            "started_at": h["started_at"],
            "node": h["node"],
            "snippet": snippet,
            "highlights": spans,
        })  # fmt: skip
    return out


def search_texts(role: str, content: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(kind, text) of a node's searchable texts, in the order they were indexed."""
    return [
        (kind, text)
        for _, kind, text, _ in search_rows("", role, [Part.from_json(p) for p in content])
    ]


def _terms(query: str, operators: frozenset[str]) -> list[str]:
    """The words of a full-text query, for highlighting (the backend's operators, columns and
    quotes dropped)."""
    words = re.findall(r"[\w*]+", query)
    return [w.rstrip("*").lower() for w in words if w not in operators and w.rstrip("*")]


def snippet_of(text: str, terms: list[str]) -> tuple[str, list[list[int]]]:
    """About 200 characters of `text` around its first match, and the matched spans in it.
    Words are told apart as FTS5's unicode61 tokenizer does: `_` separates them too."""
    flat = " ".join(text.split())
    lower = flat.lower()
    pattern = (
        re.compile(r"(?<![^\W_])(" + "|".join(re.escape(t) for t in terms) + r")[^\W_]*")
        if terms
        else None
    )
    first = pattern.search(lower) if pattern else None
    start = max(0, (first.start() if first else 0) - _SNIPPET // 3)
    if start:  # begin at a word
        space = flat.find(" ", start)
        start = space + 1 if 0 <= space < start + 20 else start
    piece = flat[start : start + _SNIPPET]
    prefix = "…" if start else ""
    suffix = "…" if start + _SNIPPET < len(flat) else ""
    snippet = prefix + piece + suffix
    spans = []
    if pattern:
        for m in pattern.finditer(piece.lower()):
            spans.append([m.start() + len(prefix), m.end() + len(prefix)])
    return snippet, spans


# ---- tools --------------------------------------------------------------------------------


def tool_stats(store: Store, session: str | None = None) -> list[dict[str, Any]]:
    """Per tool name, most called first: calls, errors, error rate, median and p95 latency."""
    out = []
    for entry in store.tool_stats(session):
        latencies = entry.pop("latencies_ms")
        entry["error_rate"] = round(entry["errors"] / entry["calls"], 4) if entry["calls"] else 0.0
        entry["p50_ms"] = _percentile(latencies, 0.5)
        entry["p95_ms"] = _percentile(latencies, 0.95)
        out.append(entry)
    return sorted(out, key=lambda e: (-e["calls"], e["name"]))


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return None
    rank = max(1, math.ceil(q * len(values)))
    return round(values[rank - 1], 3)


# ---- diff and export ------------------------------------------------------------------------


def diff(store: Store, a: str, b: str) -> dict[str, Any]:
    """Two runs aligned turn by turn and by their tool calls (analysis/diff.py)."""
    return compare(session_detail(store, a), session_detail(store, b))


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """`diff` of two `session_detail` results already read. When one is a fork of the other,
    the comparison starts at the fork point: the fork's first turn against the parent's turn
    it was forked at."""
    a_from, b_from = fork_alignment(a["session"], b["session"])
    return diff_sessions(a, b, a_from=a_from, b_from=b_from)


def fork_alignment(a: dict[str, Any], b: dict[str, Any]) -> tuple[int, int]:
    """Where the comparison of sessions `a` and `b` (their summaries) starts on each side, as
    1-based turn positions: the parent's fork turn when one was forked from the other."""
    for fork, parent, swap in ((b, a, False), (a, b, True)):
        turn = fork.get("fork_turn")
        if fork.get("forked_from") == parent.get("id") and isinstance(turn, int) and turn > 1:
            return (1, turn) if swap else (turn, 1)
    return 1, 1


EXPORT_SCHEMA = 1  # the JSONL export's own version (docs/export.md), independent of releases


def export_records(store: Store, session_ids: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The JSONL export, a record at a time: per session, oldest first, a `session` record
    and then its `turn` records. One session is in memory at a time."""
    if session_ids is None:
        session_ids = [r["id"] for r in reversed(store.session_rows())]
    for sid in session_ids:
        detail = session_detail(store, sid)
        yield {"schema_version": EXPORT_SCHEMA, "type": "session", **detail["session"],
               "thread_list": detail["threads"]}  # fmt: skip
        for turn in detail["turns"]:
            yield {"schema_version": EXPORT_SCHEMA, "type": "turn", "session": sid, **turn}
