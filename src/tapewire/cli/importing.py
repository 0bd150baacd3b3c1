"""`tapewire import claude-code` and `tapewire import codex`: agent transcripts into the store
(docs/import.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from rich.progress import Progress

from tapewire.cli.options import db_option, prices_option
from tapewire.cli.output import console, emit_json
from tapewire.importers import (
    Report,
    default_path,
    import_claude_code,
    import_codex,
    list_files,
)
from tapewire.pricing import PriceTable
from tapewire.store import Store, open_store
from tapewire.store.location import DbRef

Importer = Callable[..., Report]


@click.group("import")
def import_() -> None:
    """Import agent transcripts: sessions recorded before tapewire ran, or beside it.

    A transcript-only session is marked so (it has no exact bytes or timings); a session the
    wire already holds gains what only the transcript knows, without counting a turn twice.
    Importing again changes nothing.
    """


_PATHS = click.argument("paths", nargs=-1, type=click.Path(path_type=Path, exists=True))
_JSON = click.option("--json", "as_json", is_flag=True, help="The report as one JSON document.")


@import_.command("claude-code")
@_PATHS
@_JSON
@prices_option
@db_option
def claude_code(
    paths: tuple[Path, ...], as_json: bool, prices: Path | None, db: DbRef, journal: Path | None
) -> None:
    """Claude Code transcripts: PATHS are files or directories (default ~/.claude/projects/),
    main session files and their subagents' agent-*.jsonl."""
    _run("claude-code", import_claude_code, paths, as_json, prices, db)


@import_.command("codex")
@_PATHS
@_JSON
@prices_option
@db_option
def codex(
    paths: tuple[Path, ...], as_json: bool, prices: Path | None, db: DbRef, journal: Path | None
) -> None:
    """Codex rollout files: PATHS are files or directories (default ~/.codex/sessions/)."""
    _run("codex", import_codex, paths, as_json, prices, db)


def _run(
    harness: str,
    importer: Importer,
    paths: tuple[Path, ...],
    as_json: bool,
    prices: Path | None,
    db: DbRef,
) -> None:
    roots = list(paths) or [default_path(harness)]
    missing = [p for p in roots if not p.exists()]
    if missing:
        raise click.ClickException(f"no such file or directory: {missing[0]}")
    files = list_files(harness, roots)
    store: Store = open_store(db)
    try:
        with Progress(console=console(), transient=True, disable=as_json) as bar:
            task = bar.add_task(f"importing {harness}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = importer(store, files, prices=PriceTable.load(prices), progress=progress)
    finally:
        store.close()
    if as_json:
        emit_json(report.as_json())
        return
    _print(report)


def _print(r: Report) -> None:
    out = console()
    out.print(
        f"{r.files} files, {r.records} records: {r.sessions_new} sessions new, "
        f"{r.sessions_enriched} enriched, {r.sessions_unchanged} unchanged; "
        f"{r.synthesized} exchanges synthesized, {r.skipped} already present, "
        f"{r.on_wire} already on the wire",
        markup=False,
    )
    if r.unknown:
        kinds = ", ".join(f"{k}: {n}" for k, n in sorted(r.unknown.items()))
        out.print(f"unknown record types kept, not imported: {kinds}", markup=False)
    if r.malformed:
        out.print(f"{len(r.malformed)} malformed:", markup=False)
        for line in r.malformed:
            out.print(f"  {line}", markup=False, highlight=False)
    for error in r.errors:
        out.print(f"could not read {error}", markup=False, highlight=False)
