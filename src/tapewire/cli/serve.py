"""`tapewire serve`: record every exchange that passes through the proxy listener."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Any

import click

from tapewire.cli.admin import parse_duration
from tapewire.cli.options import (
    db_option,
    https_options,
    proxy_options,
    settings_from,
    setup_logging,
    split_hostport,
)
from tapewire.cli.ui import UI_PORT, read_api_line
from tapewire.journal.segments import JournalLocked
from tapewire.pricing import PriceTable
from tapewire.service import Service, new_loop
from tapewire.store import location
from tapewire.store.location import DbRef

if TYPE_CHECKING:
    from tapewire.web import ReadServer


def agent_lines(url: str) -> list[str]:
    return [
        f"  export ANTHROPIC_BASE_URL={url}          # Claude Code, Anthropic SDKs",
        f"  export OPENAI_BASE_URL={url}/v1          # Codex, OpenAI SDKs, aider",
        f"  export OLLAMA_HOST={url}                 # Ollama clients",
        f"  export GOOGLE_GEMINI_BASE_URL={url}      # Gemini CLI, google-genai",
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
    help="HOST:PORT for the read API (docs/api.md); port 0 picks a free one.",
)
@click.option("--no-ui", is_flag=True, help="Record only: no read API.")
@click.option(
    "--token",
    envvar="TAPEWIRE_TOKEN",
    default=None,
    help="Required to listen beyond loopback: proxy clients send it as x-tapewire-token, "
    "read API clients as Authorization: Bearer TOKEN.",
)
@click.option(
    "--grace",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds a stop waits for streams still running.",
)
@click.option(
    "--otlp-endpoint",
    envvar="TAPEWIRE_OTLP_ENDPOINT",
    help="Send the turns to this OpenTelemetry collector as they are derived (docs/otel.md); "
    "auth headers from OTEL_EXPORTER_OTLP_HEADERS.",
)
@click.option("--otlp-protocol", type=click.Choice(["http", "grpc"]), default="http",
              show_default=True)  # fmt: skip
@click.option("--otlp-content", is_flag=True, help="Include messages and tool results.")
@click.option(
    "--retain",
    envvar="TAPEWIRE_RETAIN",
    metavar="AGE",
    help="Keep sessions this long (90d, 12w, 36h): older ones are pruned once caught up, then "
    "daily, as `tapewire prune` does.",
)
@click.option("-v", "--verbose", is_flag=True)
@db_option
@proxy_options
@https_options
def serve(
    listen: str,
    ui_listen: str,
    no_ui: bool,
    token: str | None,
    grace: float,
    otlp_endpoint: str | None,
    otlp_protocol: str,
    otlp_content: bool,
    retain: str | None,
    verbose: bool,
    **options: Any,
) -> None:
    """Run the recording proxy until SIGINT or SIGTERM."""
    setup_logging(verbose)
    settings = settings_from(options)
    settings.host, settings.port = split_hostport(listen, 8080)
    settings.token = token
    settings.grace = grace
    settings.otlp_endpoint = otlp_endpoint
    settings.otlp_protocol = otlp_protocol
    settings.otlp_content = otlp_content
    try:
        settings.retain = parse_duration(retain) if retain else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--retain") from None
    try:
        read = None if no_ui else _read_server(settings.db, ui_listen, token)
        PriceTable.load(settings.prices)  # a bad price file is said now, not in the worker's log
        service = Service(settings)
    except (JournalLocked, ValueError) as e:
        raise click.ClickException(str(e)) from None
    loop = new_loop()
    try:
        loop.run_until_complete(_serve(service, read))
    finally:
        loop.close()


def _read_server(db: DbRef, ui_listen: str, token: str | None) -> ReadServer:
    """The read API on its own thread and loop; ValueError beyond loopback without a token."""
    from tapewire.web import ReadServer

    host, port = split_hostport(ui_listen, UI_PORT)
    return ReadServer(db, host, port, token)


async def _start_read(read: ReadServer) -> bool:
    """Recording matters more: a read API that cannot listen is said, and recording goes on."""
    try:
        await asyncio.to_thread(read.start)
    except OSError as e:
        click.echo(
            f"tapewire: no read API: cannot listen on {read.host}:{read.port}: {e}"
            " (--ui-listen HOST:PORT for another address, --no-ui for none)",
            err=True,
        )
        return False
    click.echo(read_api_line(read.url), err=True)
    return True


async def _serve(service: Service, read: ReadServer | None) -> None:
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
    click.echo(f"  database: {location.display(service.settings.db)}", err=True)
    click.echo("Point your agent at it:", err=True)
    for line in agent_lines(url):
        click.echo(line, err=True)
    click.echo("or start one recorded: tapewire run -- claude", err=True)
    if service.https is not None:
        click.echo(
            f"HTTPS proxy: HTTPS_PROXY={url}, trusting {service.https.ca.cert_path}", err=True
        )
        click.echo("  (or: tapewire run --https-proxy -- AGENT, which sets both)", err=True)
    reading = read is not None and await _start_read(read)
    await stop.wait()
    click.echo("tapewire: stopping (finishing streams, flushing the journal)", err=True)
    if read is not None and reading:
        await asyncio.to_thread(read.stop)
    await service.stop()
    status = service.ingester.status()
    click.echo(
        f"tapewire: stopped; {service.recorder.exchanges} exchanges recorded this run,"
        f" {status['backlog_bytes']} journal bytes not yet in the store",
        err=True,
    )
