"""`tapewire serve`: record every exchange that passes through the proxy listener."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import click

from tapewire.cli.options import (
    db_option,
    proxy_options,
    settings_from,
    setup_logging,
    split_hostport,
)
from tapewire.journal.segments import JournalLocked
from tapewire.pricing import PriceTable
from tapewire.service import Service, new_loop


def agent_lines(url: str) -> list[str]:
    return [
        f"  export ANTHROPIC_BASE_URL={url}          # Claude Code, Anthropic SDKs",
        f"  export OPENAI_BASE_URL={url}/v1          # Codex, OpenAI SDKs, aider",
        f"  export OLLAMA_HOST={url}                 # Ollama clients",
    ]


@click.command()
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    envvar="TAPEWIRE_LISTEN",
    show_default=True,
    help="HOST:PORT for the proxy (port 0 picks a free one).",
)
@click.option(
    "--ui-listen",
    default="127.0.0.1:8081",
    envvar="TAPEWIRE_UI_LISTEN",
    show_default=True,
    help="HOST:PORT for the read side (web UI and API; reserved, not served yet).",
)
@click.option(
    "--token",
    envvar="TAPEWIRE_TOKEN",
    default=None,
    help="Required to listen beyond loopback: clients send it as x-tapewire-token.",
)
@click.option(
    "--grace",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds a stop waits for streams still running.",
)
@click.option("-v", "--verbose", is_flag=True)
@db_option
@proxy_options
def serve(
    listen: str,
    ui_listen: str,
    token: str | None,
    grace: float,
    verbose: bool,
    **options: Any,
) -> None:
    """Run the recording proxy until SIGINT or SIGTERM."""
    setup_logging(verbose)
    settings = settings_from(options)
    settings.host, settings.port = split_hostport(listen, 8080)
    settings.token = token
    settings.grace = grace
    split_hostport(ui_listen, 8081)  # validated now; the read side arrives with its issue
    try:
        PriceTable.load(settings.prices)  # a bad price file is said now, not in the worker's log
        service = Service(settings)
    except (JournalLocked, ValueError) as e:
        raise click.ClickException(str(e)) from None
    loop = new_loop()
    try:
        loop.run_until_complete(_serve(service))
    finally:
        loop.close()


async def _serve(service: Service) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except OSError as e:
        raise click.ClickException(
            f"cannot listen on {service.settings.host}:{service.settings.port}: {e}"
        ) from None
    url = service.url
    click.echo(f"tapewire {service.run_id[:8]} recording on {url}", err=True)
    click.echo(f"  database: {service.settings.db}", err=True)
    click.echo("Point your agent at it:", err=True)
    for line in agent_lines(url):
        click.echo(line, err=True)
    click.echo("or start one recorded: tapewire run -- claude", err=True)
    await stop.wait()
    click.echo("tapewire: stopping (finishing streams, flushing the journal)", err=True)
    await service.stop()
    status = service.ingester.status()
    click.echo(
        f"tapewire: stopped; {service.recorder.exchanges} exchanges recorded this run,"
        f" {status['backlog_bytes']} journal bytes not yet in the store",
        err=True,
    )
