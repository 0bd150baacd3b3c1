"""Keeping a store: `tapewire migrate`, `copy`, `prune` and `delete`."""

from __future__ import annotations

import re
import time
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from tapewire import maintenance
from tapewire.cli.options import DATABASE, db_option, prices_option
from tapewire.cli.output import console, emit_json, size, when
from tapewire.cli.reading import open_db, session_ref
from tapewire.pricing import PriceTable
from tapewire.query import parse_time
from tapewire.service import Settings, running_state
from tapewire.store import location, open_store
from tapewire.store.location import DbRef

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str) -> float:
    """`90d`, `12h`, `2w`, `30m`, `45s` as seconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"{value!r} is not a duration like 90d, 12h or 2w")
    return float(match[1]) * _UNITS[match[2]]


def _cutoff(value: str) -> float:
    """A moment: an ISO date or date-time, or a duration before now (`90d`)."""
    try:
        return time.time() - parse_duration(value)
    except ValueError:
        pass
    try:
        return parse_time(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an ISO date (2026-09-01) nor an age (90d)",
            param_hint="--before",
        ) from None


def _writable(db: DbRef) -> None:
    if not location.exists(db):
        raise click.ClickException(f"no database at {location.display(db)}: nothing recorded yet")


def _migration_state(db: DbRef) -> tuple[list[tuple[str, float]], list[str]]:
    """Read without changing anything: a store not made yet has every migration pending."""
    try:
        store = open_store(db, readonly=True)
    except FileNotFoundError:  # no file yet, or a server without tapewire's tables
        if location.is_postgres(db):
            from tapewire.store.postgres_schema import MIGRATIONS
        else:
            from tapewire.store.migrations import MIGRATIONS
        return [], [name for name, _ in MIGRATIONS]
    try:
        return store.migration_state()
    finally:
        store.close()


@click.command()
@click.option("--dry-run", is_flag=True, help="Show what is pending; apply nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def migrate(dry_run: bool, as_json: bool, db: DbRef, journal: Path | None) -> None:
    """Show the schema's migrations, applied and pending, and apply the pending ones.
    (Every command that writes migrates on open; this does it on purpose, and says so.)"""
    before_applied, before_pending = _migration_state(db)
    applied_now: list[str] = []
    if not dry_run and before_pending:
        store = open_store(db)  # opening to write applies what is pending
        try:
            applied, pending = store.migration_state()
        finally:
            store.close()
        applied_now = [name for name, _ in applied if name in before_pending]
        before_pending = pending
    report = {
        "db": location.display(db),
        "applied": [{"name": n, "applied_at": at} for n, at in before_applied],
        "applied_now": applied_now,
        "pending": before_pending,
    }
    if as_json:
        emit_json(report)
        return
    out = console()
    out.print(f"[bold]database[/] {location.display(db)}")
    for name, at in before_applied:
        out.print(f"  applied  {name}  ({when(at)})")
    for name in applied_now:
        out.print(f"  [green]applied  {name}  (now)[/]")
    for name in before_pending:
        out.print(f"  [yellow]pending  {name}[/]")
    if not before_pending:
        out.print("  up to date")


@click.command()
@click.option("--from", "source", type=DATABASE, required=True, metavar="PATH|URL",
              help="The store to copy from (read only).")  # fmt: skip
@click.option("--to", "target", type=DATABASE, required=True, metavar="PATH|URL",
              help="The store to copy into (made and migrated if new).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@prices_option
def copy(source: DbRef, target: DbRef, as_json: bool, prices: Path | None) -> None:
    """Copy one store's record into another: a laptop's SQLite file into the team's
    PostgreSQL, or back. Exchanges travel with their bodies as stored; the target derives
    them to the same sessions and node ids. Idempotent: run it again and nothing changes."""
    if location.display(source) == location.display(target):
        raise click.ClickException("--from and --to name the same store")
    src = open_db(source)
    dst = open_store(target)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      console=console(), transient=True, disable=as_json) as bar:  # fmt: skip
            tasks: dict[str, TaskID] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total)
                bar.update(tasks[phase], completed=done, total=total)

            report = maintenance.copy_store(src, dst, PriceTable.load(prices), progress)
        counts = dst.counts()
    finally:
        src.close()
        dst.close()
    if as_json:
        emit_json({**report.__dict__, "target": {k: counts[k] for k in
                                                 ("exchanges", "sessions", "turns", "nodes")}})  # fmt: skip
        return
    console().print(
        f"copied {report.copied} of {report.exchanges} exchanges ({report.blobs} bodies) into"
        f" {location.display(target)}; derived {report.derived}. The target holds"
        f" {counts['exchanges']} exchanges in {counts['sessions']} sessions."
    )


def _refuse_if_serving(db: DbRef, journal: Path | None) -> None:
    if running_state(Settings(db=db, journal=journal).journal_dir) is not None:
        raise click.ClickException(
            "tapewire serve is running on this database: use serve --retain, or stop it first"
        )


def _report(gone: dict[str, int], as_json: bool, what: str) -> None:
    if as_json:
        emit_json(gone)
        return
    console().print(
        f"{what} {gone['sessions']} sessions, {gone['exchanges']} exchanges, "
        f"{gone['nodes']} nodes and {gone['blobs']} bodies ({size(gone['blob_bytes'])} stored)"
    )


@click.command()
@click.option("--before", required=True, metavar="DATE|AGE",
              help="Sessions that ended before this: an ISO date, or an age like 90d.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def prune(before: str, as_json: bool, db: DbRef, journal: Path | None) -> None:
    """Delete the sessions that ended before DATE, with their exchanges and every node and
    body no kept session references, and give the space back."""
    cutoff = _cutoff(before)
    _writable(db)
    _refuse_if_serving(db, journal)
    store = open_store(db)
    try:
        gone = maintenance.prune(store, cutoff)
    finally:
        store.close()
    _report(gone, as_json, "pruned")


@click.command()
@click.argument("sessions", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def delete(sessions: tuple[str, ...], as_json: bool, db: DbRef, journal: Path | None) -> None:
    """Delete SESSIONS (ids, unique prefixes, /s/ names) with their exchanges and every node
    and body no other session references."""
    _writable(db)
    _refuse_if_serving(db, journal)
    store = open_store(db)
    try:
        ids = [session_ref(store, ref) for ref in sessions]
        gone = maintenance.delete_sessions(store, ids)
    finally:
        store.close()
    _report(gone, as_json, "deleted")
