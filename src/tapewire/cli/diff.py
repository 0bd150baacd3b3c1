"""`tapewire diff`: two runs side by side, and where they part."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from tapewire.cli import reading
from tapewire.cli.options import db_option
from tapewire.cli.output import console, emit_json
from tapewire.query import diff as diff_runs
from tapewire.store.location import DbRef


@click.command()
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def diff(a: str, b: str, as_json: bool, db: DbRef, journal: Path | None) -> None:
    """Align runs A and B turn by turn and by their tool calls: where they first diverge,
    which tool calls differ, and what the difference cost. Exit code 1 when they differ."""
    store = reading.open_db(db)
    try:
        result = diff_runs(store, reading.session_ref(store, a), reading.session_ref(store, b))
    finally:
        store.close()
    if as_json:
        emit_json(result)
    else:
        _print(result)
    if not result["identical"]:
        raise SystemExit(1)


def _call(c: dict[str, Any]) -> str:
    args = json.dumps(c.get("arguments"), ensure_ascii=False)
    args = args if len(args) <= 100 else args[:99] + "…"
    return f"turn {c.get('turn')}: {escape(str(c.get('name')))} {escape(args)}"


def _print(r: dict[str, Any]) -> None:
    out = console()
    for side in ("a", "b"):
        s = r[side]
        out.print(
            f"[bold]{side.upper()}[/bold] {s['id'][:8]} {escape(s.get('title') or '')} · {s.get('turns')} turns"
        )
    aligned = r.get("aligned_from")
    if aligned:
        fork, parent = ("B", "A") if aligned["a"] > 1 else ("A", "B")
        turn = max(aligned["a"], aligned["b"])
        out.print(f"{fork} is a fork of {parent} at turn {turn}: compared from there on")
    if r["identical"]:
        out.print("[green]identical[/green]: the same turns and the same tool calls")
    first = r["first_divergence"]
    if first:
        out.print(
            f"\n[bold]first divergence[/bold] at turn {first['turn']} ({first['reason'].replace('_', ' ')})"
        )
        if first.get("detail"):
            out.print(f"  {escape(str(first['detail']))}")
    calls = r["tool_calls"]
    for key, label in (("added", "only in B"), ("removed", "only in A")):
        for c in calls.get(key, []):
            out.print(f"  [yellow]{label}[/yellow] {_call(c)}")
    for pair in calls.get("arguments_differ", []):
        out.print(
            f"  [yellow]other arguments[/yellow] A {_call(pair['a'])}\n{'':>18}B {_call(pair['b'])}"
        )
    for pair in calls.get("results_differ", []):
        out.print(f"  [yellow]other result[/yellow] {_call(pair['a'])}")
    d = r["deltas"]
    parts = [
        f"{k.replace('_', ' ')} {v:+g}" for k, v in d.items() if isinstance(v, int | float) and v
    ]
    out.print("\n[bold]B - A[/bold] " + (", ".join(parts) if parts else "no difference in totals"))
