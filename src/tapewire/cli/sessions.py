"""`tapewire sessions` and `tapewire show`: what the agents did, per session."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from tapewire.cli.options import db_option
from tapewire.cli.output import console, emit_json, table, when
from tapewire.query import SessionNotFound, resolve_session, session_detail
from tapewire.query import sessions as list_sessions
from tapewire.store import Store, open_store


def _open(db: Path) -> Store:
    if not db.exists():
        raise click.ClickException(f"no database at {db}: nothing recorded yet")
    return open_store(db, readonly=True)


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as e:
        raise click.BadParameter(f"{value!r} is not an ISO date or time") from e
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(UTC).timestamp()


def _tokens(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def _cost(v: float | None) -> str:
    return "?" if v is None else f"${v:.4f}"


@click.command()
@click.option("--since", help="Only sessions active since this ISO date or time.")
@click.option("--harness", help="claude-code, codex, aider or unknown.")
@click.option("--model", help="Only sessions that used this model.")
@click.option("--limit", "-n", type=int, default=None, help="At most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def sessions(
    since: str | None,
    harness: str | None,
    model: str | None,
    limit: int | None,
    as_json: bool,
    db: Path,
    journal: Path | None,
) -> None:
    """List recorded sessions, newest first."""
    store = _open(db)
    try:
        rows = list_sessions(store, since=_since(since), harness=harness, model=model, limit=limit)
    finally:
        store.close()
    if as_json:
        emit_json(rows)
        return
    t = table("id", "title", "harness", "started", "turns", "tools", "errors", "tokens", "cost")
    for r in rows:
        t.add_row(
            r["id"][:8],
            (r["title"] or "-")[:60],
            r["harness"],
            when(r["started_at"]),
            str(r["turns"]),
            str(r["tool_calls"]),
            str(r["tool_errors"]),
            _tokens(r["input_tokens"] + r["output_tokens"]),
            _cost(r["cost_usd"]),
        )
    console().print(t)


@click.command()
@click.argument("session")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def show(session: str, as_json: bool, db: Path, journal: Path | None) -> None:
    """Show a session's turns: what the agent saw, what it decided, what the tools returned.

    SESSION is its id, a unique prefix of it, its /s/ name or the harness's session id.
    """
    store = _open(db)
    try:
        try:
            detail = session_detail(store, resolve_session(store, session))
        except SessionNotFound as e:
            raise click.ClickException(str(e)) from e
    finally:
        store.close()
    if as_json:
        emit_json(detail)
        return
    _print_detail(detail)


def _print_detail(detail: dict[str, Any]) -> None:
    out = console()
    s = detail["session"]
    out.print(f"[bold]{s['title'] or s['id']}[/bold]  {s['harness']}  {when(s['started_at'])}")
    out.print(
        f"{s['turns']} turns · {s['threads']} threads · {s['tool_calls']} tool calls "
        f"({s['tool_errors']} errors) · {_tokens(s['input_tokens'])} in · "
        f"{_tokens(s['output_tokens'])} out · {_cost(s['cost_usd'])}",
        markup=False,
    )
    lanes = {t["id"]: ("main" if t["kind"] == "main" else f"agent {i}")
             for i, t in enumerate(detail["threads"])}  # fmt: skip
    for n, turn in enumerate(detail["turns"], 1):
        lane = lanes.get(turn["thread"], "side") if turn["thread"] else "side"
        ms = f"{turn['duration_ms']:.0f} ms" if turn["duration_ms"] is not None else "-"
        out.print()
        out.print(
            f"[bold]#{n}[/bold] {lane} · {turn['model'] or '-'} · {ms} · "
            f"{_tokens(turn['usage']['output_tokens'])} out · {_cost(turn['cost_usd'])}"
        )
        for msg in turn["input"]:
            for line in _part_lines(msg["parts"]):
                out.print(f"  [dim]{msg['role']:>9}[/dim] ", line, markup=True, highlight=False)
        for line in _part_lines(turn["output"]):
            out.print("  [cyan]assistant[/cyan] ", line)
        if turn["error"]:
            out.print(f"  [red]error[/red] {turn['error']}", highlight=False)


def _part_lines(parts: list[dict[str, Any]]) -> list[str]:
    from rich.markup import escape

    lines = []
    for p in parts:
        kind = p.get("type")
        if kind == "text":
            lines.append(escape(_short(p.get("text") or "")))
        elif kind == "thinking":
            text = p.get("text") or "(not shown by the provider)"
            lines.append(f"[dim]thinking: {escape(_short(text))}[/dim]")
        elif kind == "tool_call":
            lines.append(
                f"[yellow]→ {escape(str(p.get('name')))}[/yellow] {escape(_short(json.dumps(p.get('arguments'), ensure_ascii=False)))}"
            )
        elif kind == "tool_result":
            text = " ".join(c.get("text") or "" for c in p.get("content") or [])
            mark = "[red]✗[/red]" if p.get("is_error") else "←"
            lines.append(f"{mark} {escape(_short(text))}")
        else:
            lines.append(f"[dim]{escape(str(kind))}[/dim]")
    return lines


def _short(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
