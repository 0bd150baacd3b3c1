"""`tapewire exchanges`: the recorded exchanges, newest first."""

from __future__ import annotations

from pathlib import Path

import click

from tapewire.cli.options import db_option
from tapewire.cli.output import console, emit_json, size, table, when
from tapewire.cli.reading import open_db
from tapewire.store.location import DbRef


@click.command()
@click.option("--limit", "-n", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def exchanges(limit: int, as_json: bool, db: DbRef, journal: Path | None) -> None:
    """List recorded exchanges, newest first."""
    store = open_db(db)
    try:
        rows = store.exchanges(limit=limit)
    finally:
        store.close()
    if as_json:
        emit_json([r.as_json() for r in rows])
        return
    t = table(
        "started", "id", "method", "path", "provider", "status", "outcome", "ms", "req", "resp"
    )
    for r in rows:
        last = r.timings.get("last_byte")
        ms = f"{(last - r.started_at) * 1000:.0f}" if last else "-"
        t.add_row(
            when(r.started_at),
            r.id[:13],
            r.method,
            r.path,
            r.provider or "-",
            str(r.status or "-"),
            r.outcome,
            ms,
            size(r.request_size),
            size(r.response_size),
        )
    console().print(t)
