"""`tapewire sessions` and `tapewire show`: what the agents did, per session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from tapewire.cli import reading
from tapewire.cli.options import db_option
from tapewire.cli.output import console, emit_json, table, when
from tapewire.query import lanes, raw_exchange, session_detail
from tapewire.query import sessions as list_sessions
from tapewire.store.location import DbRef


@click.command()
@click.option("--since", help="Only sessions active since this ISO date or time.")
@click.option("--harness", help="claude-code, codex, aider or unknown.")
@click.option("--model", help="Only sessions that used this model.")
@click.option("--cwd", help="Only runs `tapewire run` started in this directory (or below).")
@click.option("--limit", "-n", type=int, default=None, help="At most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def sessions(
    since: str | None,
    harness: str | None,
    model: str | None,
    cwd: str | None,
    limit: int | None,
    as_json: bool,
    db: DbRef,
    journal: Path | None,
) -> None:
    """List recorded sessions, newest first."""
    store = reading.open_db(db)
    try:
        rows = list_sessions(
            store, since=reading.since(since), harness=harness, model=model,
            cwd=str(Path(cwd).resolve()) if cwd else None, limit=limit,
        )  # fmt: skip
    finally:
        store.close()
    if as_json:
        emit_json(rows)
        return
    t = table(
        "id", "title", "harness", "started", "took", "turns", "tools", "errors", "tokens", "cost"
    )
    for r in rows:
        t.add_row(
            r["id"][:8],
            _fork_mark(r) + escape((r["title"] or "-")[:60]),
            r["harness"],
            when(r["started_at"]),
            reading.duration(r["duration_s"]),
            str(r["turns"]),
            str(r["tool_calls"]),
            str(r["tool_errors"]),
            reading.tokens(r["input_tokens"] + r["output_tokens"]),
            reading.cost(r["cost_usd"]),
        )
    console().print(t)


def _fork_mark(row: dict[str, Any]) -> str:
    """A fork's parent and fork point, before its title: `⑂ 1a2b3c4d@t4 `."""
    if not row.get("forked_from"):
        return ""
    at = f"@t{row['fork_turn']}" if row.get("fork_turn") is not None else ""
    return f"⑂ {escape(str(row['forked_from'])[:8])}{at} "


@click.command()
@click.argument("session")
@click.option("--turn", "turn_no", type=int, help="Show turn N in full.")
@click.option("--raw", "raw_no", type=int, help="The exchange of turn N as it crossed the wire.")
@click.option("--thinking", is_flag=True, help="Unfold thinking.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def show(
    session: str,
    turn_no: int | None,
    raw_no: int | None,
    thinking: bool,
    as_json: bool,
    db: DbRef,
    journal: Path | None,
) -> None:
    """Show a session's timeline: per turn what the agent saw that was new, what it decided,
    what its tools returned, timings, tokens and cost. Subagents are nested under the tool call
    that spawned them; side calls (titles, probes) are listed apart.

    SESSION is its id, a unique prefix of it, its /s/ name or the harness's session id.
    """
    store = reading.open_db(db)
    try:
        detail = session_detail(store, reading.session_ref(store, session))
        wanted = turn_no or raw_no
        if wanted is not None and not 1 <= wanted <= len(detail["turns"]):
            raise click.ClickException(f"the session has turns 1 to {len(detail['turns'])}")
        raw = raw_exchange(store, detail["turns"][raw_no - 1]["exchange_id"]) if raw_no else None
    finally:
        store.close()
    if raw is not None:
        emit_json(raw) if as_json else _print_raw(raw)
    elif turn_no is not None:
        turn = detail["turns"][turn_no - 1]
        lane = next(r["lane"] for r in lanes(detail) if turn in r["turns"])
        emit_json(turn) if as_json else _print_turn(console(), turn, lane, full=True)
    elif as_json:
        emit_json(detail)
    else:
        _print_detail(detail, thinking)


def _print_source(out: Any, s: dict[str, Any]) -> None:
    """Where the session's turns come from, and what an imported transcript added."""
    if s.get("source") == "transcript":
        out.print("from a transcript: exact bytes and timings unknown", markup=False)
    elif s.get("source") == "wire+transcript":
        out.print("captured on the wire, completed from a transcript", markup=False)
    facts = s.get("facts")
    if not facts:
        return
    known = [
        f"{label} {', '.join(facts[key])}"
        for key, label in (("cwd", "cwd"), ("git_branch", "branch"), ("version", "version"))
        if facts.get(key)
    ]
    if known:
        out.print("transcript: " + " · ".join(known), markup=False)
    for c in facts.get("local_commands") or []:
        out.print(f"local command {c.get('name')} {c.get('args') or ''}".rstrip(), markup=False)
    for a in facts.get("subagents") or []:
        out.print(
            f"subagent {a.get('agent_id')} spawned by {a.get('tool_call_id') or 'an unknown call'}",
            markup=False,
        )


def _print_detail(detail: dict[str, Any], thinking: bool) -> None:
    out = console()
    s = detail["session"]
    out.print(f"[bold]{escape(s['title'] or s['id'])}[/bold]  {s['id']}")
    out.print(
        f"{s['harness']} · {when(s['started_at'])} · {reading.duration(s['duration_s'])} · "
        f"{s['turns']} turns · {s['threads']} threads · {s['tool_calls']} tool calls "
        f"({s['tool_errors']} errors) · {reading.tokens(s['input_tokens'])} in · "
        f"{reading.tokens(s['output_tokens'])} out · {reading.cost(s['cost_usd'])}",
        markup=False,
    )
    if s.get("forked_from"):
        node = f" (node {s['fork_node'][:12]}…)" if s.get("fork_node") else ""
        at = f" at turn {s['fork_turn']}" if s.get("fork_turn") is not None else ""
        out.print(
            f"forked from {s['forked_from']}{at}{node}: "
            f"`tapewire diff {s['id'][:8]} {s['forked_from'][:8]}` starts there",
            markup=False,
        )
    for f in s.get("forks") or []:
        name = f" (/s/{f['name']})" if f.get("name") else ""
        out.print(f"fork {f['id']} at turn {f['fork_turn']}{name}", markup=False)
    _print_source(out, s)
    for run in lanes(detail):
        indent = "    " * run["depth"]
        if run["note"]:
            heading = "side calls" if run["thread"] is None else run["lane"]
            out.print(f"\n[bold]{heading}[/bold] ({run['note']})")
        for turn in run["turns"]:
            _print_turn(out, turn, run["lane"], indent=indent, thinking=thinking)


def _print_turn(
    out: Console,
    turn: dict[str, Any],
    lane: str,
    *,
    indent: str = "",
    thinking: bool = False,
    full: bool = False,
) -> None:
    ms = f"{turn['duration_ms']:.0f} ms" if turn["duration_ms"] is not None else "-"
    ttfb = f" (first byte {turn['ttfb_ms']:.0f} ms)" if turn["ttfb_ms"] is not None else ""
    out.print()
    out.print(
        f"{indent}[bold]#{turn['index']}[/bold] {lane} · "
        f"{escape(turn['model'] or '-')} · {ms}{ttfb} · "
        f"{reading.tokens(turn['usage']['input_tokens'])} in · "
        f"{reading.tokens(turn['usage']['output_tokens'])} out · {reading.cost(turn['cost_usd'])}"
    )
    width = None if full else 160
    for msg in turn["input"]:
        for line in _part_lines(msg["parts"], width, thinking or full):
            out.print(f"{indent}  [dim]{msg['role']:>9}[/dim] {line}")
    for line in _part_lines(turn["output"], width, thinking or full):
        out.print(f"{indent}  [cyan]assistant[/cyan] {line}")
    if turn["error"]:
        out.print(f"{indent}  [red]error[/red] {escape(turn['error'])}")
    for call in turn["tool_calls"]:
        if not call["answered"]:
            out.print(
                f"{indent}  [yellow]unanswered[/yellow] {escape(str(call['name']))} {call['id']}"
            )


def _part_lines(parts: list[dict[str, Any]], width: int | None, unfold: bool) -> list[str]:
    lines = []
    for p in parts:
        kind = p.get("type")
        if kind in ("text", "refusal"):
            lines.append(escape(_short(p.get("text") or "", width)))
        elif kind == "thinking":
            text = p.get("text") or "(not shown by the provider)"
            lines.append(
                f"[dim]thinking: {escape(_short(text, width if not unfold else None))}[/dim]"
            )
        elif kind == "tool_call":
            args = json.dumps(p.get("arguments"), ensure_ascii=False, indent=None if width else 2)
            lines.append(
                f"[yellow]→ {escape(str(p.get('name')))}[/yellow] {escape(_short(args, width))}"
            )
        elif kind == "tool_result":
            text = "\n".join(c.get("text") or "" for c in p.get("content") or [])
            mark = "[red]✗ error[/red]" if p.get("is_error") else "←"
            lines.append(f"{mark} {escape(_short(text, width))}")
        else:
            lines.append(f"[dim]{escape(str(p.get('name') or kind))}[/dim]")
    return lines


def _short(text: str, width: int | None = 160) -> str:
    if width is None:
        return text
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_raw(raw: dict[str, Any]) -> None:
    out = console()
    out.print(
        f"[bold]{raw['method']} {escape(raw['path'])}[/bold]  → {escape(raw['upstream_url'])}"
    )
    for k, v in raw["request_headers"]:
        out.print(f"{escape(k)}: {escape(v)}", highlight=False)
    _print_body(out, raw["request_body"])
    out.print(
        f"\n[bold]{raw['status'] or '-'}[/bold]  {raw['outcome']}"
        + (f"  {escape(raw['error'])}" if raw["error"] else "")
    )
    for k, v in raw["response_headers"]:
        out.print(f"{escape(k)}: {escape(v)}", highlight=False)
    _print_body(out, raw["response_body"])
    t = raw["timings"]
    start = t["started"]
    marks = ", ".join(
        f"{k} +{(v - start) * 1000:.1f} ms"
        for k, v in t.items()
        if v is not None and k != "started"
    )
    out.print(f"\n[dim]{when(start)}: {marks}[/dim]")


def _print_body(out: Console, body: dict[str, Any]) -> None:
    out.print()
    if body["note"]:
        out.print(f"[dim]({escape(body['note'])})[/dim]")
    if body["text"] is not None:
        out.print(body["text"], markup=False, highlight=False)
    elif body["size"]:
        out.print(f"[dim]{body['size']} bytes of binary, base64 in --json[/dim]")
