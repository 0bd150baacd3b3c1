"""`tapewire demo`: tapewire at work in seconds, with no agent, no API key and no network. A
real Claude Code recording and a scripted OpenAI conversation go through a real proxy to a
fake provider on 127.0.0.1, into a new database; then the read side serves it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from tapewire.cli.options import setup_logging
from tapewire.cli.ui import UI_PORT, serve_until_signalled


def _new_db(db: Path | None) -> Path:
    """A path for a new database: the demo never writes into one that exists."""
    if db is None:
        return Path(tempfile.mkdtemp(prefix="tapewire-demo-")) / "tapewire.db"
    for path in (db, Path(f"{db}.journal")):
        if path.exists():
            raise click.ClickException(
                f"{path} already exists: the demo records into a new database only "
                "(give --db a path that does not exist, or leave it out for a temporary one)"
            )
    db.parent.mkdir(parents=True, exist_ok=True)
    return db


@click.command()
@click.option(
    "--db",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to create the demo's database; it must not exist yet. "
    "Default: a new temporary directory.",
)
@click.option(
    "--listen",
    default=f"127.0.0.1:{UI_PORT}",
    show_default=True,
    help="HOST:PORT for the UI and read API (port 0 picks a free one).",
)
@click.option("--no-serve", is_flag=True, help="Record, print the database's path and exit.")
@click.option("-v", "--verbose", is_flag=True)
def demo(db: Path | None, listen: str, no_serve: bool, verbose: bool) -> None:
    """Record a demo into a new database and show it.

    A real Claude Code session (17 recorded turns) and a scripted OpenAI conversation with
    tool calls go through a real tapewire proxy to a fake provider on 127.0.0.1: no agent,
    no API key, no network. Then the UI serves what was recorded.
    """
    from tapewire.demo import DemoError, record_demo

    if verbose:
        setup_logging(verbose)
    path = _new_db(db)
    try:
        sessions = record_demo(path)
    except DemoError as e:
        raise click.ClickException(f"the demo failed: {e}") from None
    click.echo(f"tapewire demo: {len(sessions)} sessions recorded into {path}", err=True)
    if no_serve:
        click.echo(str(path))
        return
    # 8081 is also `tapewire serve`'s: a newcomer may well have one running.
    serve_until_signalled(
        path, listen, None, "  (Ctrl-C to stop; the database stays)",
        busy_hint=f" (--listen 127.0.0.1:0 picks a free port; the recording is in {path})",
    )  # fmt: skip
