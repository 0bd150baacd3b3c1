"""The one query layer over the store: the CLI's --json, the HTTP API and the web UI all read
through here, so they never disagree."""

from __future__ import annotations

from typing import Any

from tapewire.store import Store

_USAGE = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
          "cache_write_1h_tokens", "reasoning_tokens")  # fmt: skip
_TITLE_CHARS = 80


class SessionNotFound(LookupError):
    pass


def resolve_session(store: Store, ref: str) -> str:
    """A session named by its id, a unique prefix of it, its /s/ name or the harness's id."""
    found = store.find_sessions(ref)
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
    limit: int | None = None,
) -> list[dict[str, Any]]:
    rows = store.session_rows(since=since, harness=harness, model=model, limit=limit)
    for row in rows:
        if not row["title"]:
            row["title"] = _first_prompt(store, row["id"])
    return rows


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
    if node is None:
        return None
    for part in node["content"]:
        if part.get("type") == "tool_result" and part.get("id") == call_id:
            pieces = []
            for p in part.get("content") or []:
                if p.get("text") is not None:
                    pieces.append(p["text"])
                elif p.get("type") == "image":
                    pieces.append("[image]")
            return "\n".join(pieces)
    return None


def session_detail(store: Store, session: str) -> dict[str, Any]:
    """The session's summary and its turns in time order."""
    summary = store.session_rows(ids=[session])
    if not summary:
        raise SessionNotFound(f"no session {session!r}")
    head = summary[0]
    if not head["title"]:
        head["title"] = _first_prompt(store, session)
    turns = store.turn_rows(session)
    calls = store.tool_call_rows(session)
    calls_by_exchange: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        calls_by_exchange.setdefault(call["call_exchange"], []).append(call)
    wanted = [n for t in turns for n in t["input_nodes"] + t["response_nodes"][:1]]
    wanted += [c["result_node"] for c in calls if c["result_node"]]
    nodes = store.node_rows(wanted)
    out = []
    for t in turns:
        response = nodes.get(t["response_nodes"][0]) if t["response_nodes"] else None
        out.append({
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
