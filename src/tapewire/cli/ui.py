"""`tapewire ui`: the read side alone (the web UI, docs/ui.md, and the HTTP JSON API,
docs/api.md) over an existing database, without a proxy."""

from __future__ import annotations

import signal
import threading

import click

from tapewire.cli.options import database_option, setup_logging, split_hostport
from tapewire.cli.reading import open_db
from tapewire.store import location
from tapewire.store.location import DbRef

UI_PORT = 8081


def read_api_line(url: str) -> str:
    return f"UI: {url}/  (read API: {url}/api/, docs: {url}/api/docs)"


@click.command()
@database_option
@click.option(
    "--listen",
    default=f"127.0.0.1:{UI_PORT}",
    envvar="TAPEWIRE_UI_LISTEN",
    show_default=True,
    help="HOST:PORT for the web UI and read API (port 0 picks a free one).",
)
@click.option(
    "--token",
    envvar="TAPEWIRE_TOKEN",
    default=None,
    help="Required to listen beyond loopback: clients send Authorization: Bearer TOKEN.",
)
@click.option("-v", "--verbose", is_flag=True)
def ui(db: DbRef, listen: str, token: str | None, verbose: bool) -> None:
    """Serve the web UI and the read API over an existing database until SIGINT or SIGTERM."""
    setup_logging(verbose)
    open_db(db).close()  # a file, or a server with tapewire's tables: else say so and stop
    serve_until_signalled(db, listen, token, f"  database: {location.display(db)}")


def serve_until_signalled(
    db: DbRef, listen: str, token: str | None, note: str, busy_hint: str = ""
) -> None:
    """The read side (web UI and API) over `db` until SIGINT or SIGTERM; prints its URL and
    `note`. `busy_hint` follows the error when the address is taken."""
    from tapewire.web import ReadServer

    host, port = split_hostport(listen, UI_PORT)
    try:
        server = ReadServer(db, host, port, token)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        server.start()
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e}{busy_hint}") from None
    click.echo(read_api_line(server.url), err=True)
    click.echo(note, err=True)
    stop.wait()
    click.echo("tapewire: stopping the web UI and read API", err=True)
    server.stop()
