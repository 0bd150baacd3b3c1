"""`tapewire tools`: how each tool fared: calls, errors, latency."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from tapewire.cli import reading
from tapewire.cli.options import db_option
from tapewire.cli.output import console, emit_json, table
from tapewire.query import tool_stats
from tapewire.store.location import DbRef


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.0f} ms" if v < 10_000 else f"{v / 1000:.1f} s")


@click.command()
@click.option("--session", help="Only this session (id, prefix, /s/ name or harness id).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def tools(session: str | None, as_json: bool, db: DbRef, journal: Path | None) -> None:
    """Per tool: calls, errors, error rate, median and p95 latency (from the response that
    asked to the request that answered), across every session or one."""
    store = reading.open_db(db)
    try:
        sid = reading.session_ref(store, session) if session else None
        rows = tool_stats(store, sid)
    finally:
        store.close()
    if as_json:
        emit_json(rows)
        return
    t = table("tool", "calls", "errors", "error rate", "p50", "p95")
    for r in rows:
        t.add_row(escape(r["name"] or "?"), str(r["calls"]), str(r["errors"]),
                  f"{r['error_rate']:.0%}", _ms(r["p50_ms"]), _ms(r["p95_ms"]))  # fmt: skip
    console().print(t)
