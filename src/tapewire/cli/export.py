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
from tapewire.store import Store
from tapewire.store.location import DbRef


@click.command()
@click.argument("sessions", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "otlp"]), default="jsonl",
              show_default=True,
              help="jsonl: a record per line (docs/export.md); otlp: OpenTelemetry traces "
                   "sent to --endpoint (docs/otel.md).")  # fmt: skip
@click.option(
    "--out", type=click.Path(path_type=Path, dir_okay=False), help="Write here, not to stdout."
)
@click.option("--endpoint", help="otlp: the collector, e.g. http://127.0.0.1:4318 (HTTP) or "
              "http://127.0.0.1:4317 (gRPC).")  # fmt: skip
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http",
              show_default=True, help="otlp: HTTP/protobuf or gRPC.")  # fmt: skip
@click.option("--header", "headers", multiple=True, metavar="NAME=VALUE",
              help="otlp: a header for the collector (auth), repeatable.")  # fmt: skip
@click.option("--content", is_flag=True,
              help="otlp: include messages, instructions, tool arguments and results "
                   "(as stored: redacted at ingest).")  # fmt: skip
@db_option
def export(
    sessions: tuple[str, ...],
    fmt: str,
    out: Path | None,
    endpoint: str | None,
    protocol: str,
    headers: tuple[str, ...],
    content: bool,
    db: DbRef,
    journal: Path | None,
) -> None:
    """Export SESSIONS (all when none are named), oldest first: as JSONL, per session a
    `session` record then its `turn` records, each with `schema_version`; or as OpenTelemetry
    traces (GenAI semantic conventions) to an OTLP endpoint."""
    store = reading.open_db(db)
    try:
        ids = [reading.session_ref(store, ref) for ref in sessions] or None
        if fmt == "otlp":
            _otlp(store, ids, endpoint, protocol, headers, content)
            return
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


def _otlp(
    store: Store,
    ids: list[str] | None,
    endpoint: str | None,
    protocol: str,
    headers: tuple[str, ...],
    content: bool,
) -> None:
    from tapewire.export.otlp import export_sessions, exporter_for

    if not endpoint:
        raise click.UsageError("--format otlp needs --endpoint URL")
    pairs = {}
    for h in headers:
        name, sep, value = h.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"wants NAME=VALUE, got {h!r}", param_hint="--header")
        pairs[name.strip().lower()] = value.strip()
    sessions = ids or [r["id"] for r in reversed(store.session_rows())]
    try:
        exporter = exporter_for(endpoint, protocol, pairs)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    counts = export_sessions(store, sessions, exporter, content=content)
    if counts.failed:
        raise click.ClickException(
            f"{counts.failed} of {counts.spans} spans were not taken by {endpoint} "
            "(see the exporter's log above)"
        )
    console().print(f"exported {counts.sessions} sessions as {counts.spans} spans to {endpoint}")
