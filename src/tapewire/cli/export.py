"""`tapewire export`: sessions as JSONL, a record per line (docs/export.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson
from rich.progress import Progress

from tapewire.cli import reading
from tapewire.cli.options import db_option
from tapewire.cli.output import console
from tapewire.query import export_records


@click.command()
@click.argument("sessions", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option(
    "--out", type=click.Path(path_type=Path, dir_okay=False), help="Write here, not to stdout."
)
@db_option
def export(
    sessions: tuple[str, ...], fmt: str, out: Path | None, db: Path, journal: Path | None
) -> None:
    """Export SESSIONS (all when none are named), oldest first: per session a `session` record,
    then its `turn` records, one JSON object per line, each with `schema_version`."""
    store = reading.open_db(db)
    try:
        ids = [reading.session_ref(store, ref) for ref in sessions] or None
        total = len(ids) if ids else len(store.session_rows())
        if out is None:
            for record in export_records(store, ids):
                sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
            sys.stdout.buffer.flush()
            return
        tmp = out.with_name(out.name + ".part")
        with tmp.open("wb") as f, Progress(console=console(), transient=True) as bar:
            task = bar.add_task("exporting", total=total)
            for record in export_records(store, ids):
                if record["type"] == "session":
                    bar.advance(task)
                f.write(orjson.dumps(record) + b"\n")
        tmp.replace(out)  # a file that exists is a whole export
        console().print(f"exported {total} sessions to {out}")
    finally:
        store.close()
