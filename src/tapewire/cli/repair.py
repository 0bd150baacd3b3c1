"""`tapewire rederive` and `tapewire verify`: rebuild and check the derived layer."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import Progress

from tapewire.cli.options import db_option, prices_option
from tapewire.cli.output import console, emit_json
from tapewire.derive import Deriver
from tapewire.derive.verify import verify as verify_store
from tapewire.pricing import PriceTable
from tapewire.service import Settings, running_state
from tapewire.store import location, open_store
from tapewire.store.location import DbRef


def _journal_dir(db: DbRef, journal: Path | None) -> Path:
    return Settings(db=db, journal=journal).journal_dir


@click.command()
@prices_option
@db_option
def rederive(prices: Path | None, db: DbRef, journal: Path | None) -> None:
    """Drop the derived layer (sessions, turns, nodes, tool calls, search) and rebuild it from
    the raw exchanges, to the same ids."""
    if not location.exists(db):
        raise click.ClickException(f"no database at {location.display(db)}: nothing recorded yet")
    if running_state(_journal_dir(db, journal)) is not None:
        raise click.ClickException("tapewire serve is running on this database: stop it first")
    store = open_store(db)
    try:
        order = store.derive_order()
        store.clear_derived()
        deriver = Deriver(store, PriceTable.load(prices))
        with Progress(console=console(), transient=True) as bar:
            task = bar.add_task("deriving", total=len(order))
            for i in range(0, len(order), 64):
                deriver.derive_ids(order[i : i + 64])
                bar.update(task, advance=len(order[i : i + 64]))
            deriver.analyse_pending()  # findings are derived too
        sessions = len(store.session_rows())
    finally:
        store.close()
    console().print(
        f"rederived {len(order)} exchanges into {sessions} sessions"
        + (f"; {deriver.errors} could not be derived (see the log)" if deriver.errors else "")
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def verify(as_json: bool, db: DbRef, journal: Path | None) -> None:
    """Check the record: re-hash every body and node, check parent links, and that every
    exchange still decodes and has its turn. Exits 1 when something is wrong."""
    if not location.exists(db):
        raise click.ClickException(f"no database at {location.display(db)}: nothing recorded yet")
    store = open_store(db, readonly=True)
    try:
        report = verify_store(store)
    finally:
        store.close()
    if as_json:
        emit_json(report.as_json())
    else:
        out = console()
        out.print(
            f"{report.blobs} bodies, {report.nodes} nodes, {report.exchanges} exchanges checked"
        )
        for note in report.notes:
            out.print(f"[yellow]·[/yellow] {note}", highlight=False)
        for problem in report.problems:
            out.print(f"[red]✗[/red] {problem}", highlight=False)
        if report.ok:
            out.print("[green]✓[/green] all good")
    if not report.ok:
        raise SystemExit(1)
