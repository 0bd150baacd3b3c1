"""`tapewire replay`: play a recorded session again with no provider and no network: a stand-in
that answers the agent's requests with the recorded responses (docs/replay.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from tapewire.capture.routing import DEFAULT_UPSTREAMS, PROVIDER_NAMES
from tapewire.cli import reading
from tapewire.cli.options import db_option, split_hostport
from tapewire.cli.output import console
from tapewire.store.location import DbRef

if TYPE_CHECKING:  # the replay's modules load when a replay runs
    from tapewire.replay.check import Checked
    from tapewire.replay.match import Recording

REPLAY_PORT = 8090


def _agent_env(url: str) -> dict[str, str]:
    """Base URLs for every client we know, pointing at `url` (see `tapewire run`)."""
    return {"ANTHROPIC_BASE_URL": url, "OPENAI_BASE_URL": f"{url}/v1",
            "OPENAI_API_BASE": f"{url}/v1", "ANTHROPIC_API_BASE": url, "OLLAMA_HOST": url,
            "OLLAMA_API_BASE": url}  # fmt: skip


def _upstreams(specs: tuple[str, ...]) -> dict[str, str]:
    urls = dict(DEFAULT_UPSTREAMS)
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or not name or not url:
            raise click.BadParameter(f"wants NAME=URL, got {spec!r}", param_hint="--upstream")
        urls[name.strip()] = url.strip()
    return urls


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("session")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--listen", default=f"127.0.0.1:{REPLAY_PORT}", show_default=True,
              help="HOST:PORT to serve the replay on (port 0 picks a free one).")  # fmt: skip
@click.option("--timing", type=click.Choice(["fast", "recorded"]), default="fast",
              show_default=True,
              help="fast: as fast as the client reads; recorded: the recorded time to first "
                   "byte and gaps between chunks.")  # fmt: skip
@click.option("--on-miss", type=click.Choice(["error", "passthrough"]), default="error",
              show_default=True,
              help="A request the recording does not hold: answer with a provider-shaped "
                   "error, or forward it to the real upstream and record the new branch.")  # fmt: skip
@click.option("--upstream", "upstreams", multiple=True, metavar="NAME=URL",
              help="Where --on-miss passthrough sends each provider's requests.")  # fmt: skip
@click.option("--check", is_flag=True,
              help="Send every recorded request to a fresh replay and prove each answer "
                   "byte-exact; exit 1 if one is not.")  # fmt: skip
@db_option
def replay(
    session: str,
    command: tuple[str, ...],
    listen: str,
    timing: str,
    on_miss: str,
    upstreams: tuple[str, ...],
    check: bool,
    db: DbRef,
    journal: Path | None,
) -> None:
    """Serve SESSION's recorded responses to an agent's requests, byte-exact, in the recorded
    chunks: point the agent at the printed URL, or give a COMMAND after `--` and it runs with
    its base URLs set. A request the recording does not hold says which turn it left the
    recording at and how it differs."""
    from tapewire.replay.check import check as self_test
    from tapewire.replay.server import load

    store = reading.open_db(db)
    try:
        sid = reading.session_ref(store, session)
        recording = load(store, sid)
    finally:
        store.close()
    if not recording.exchanges:
        raise click.ClickException(f"session {sid} holds no exchange to replay")
    if check:
        _check(self_test(recording))
        return
    forward = _upstreams(upstreams) if on_miss == "passthrough" else None
    host, port = split_hostport(listen, REPLAY_PORT)
    code = _serve(recording, sid, db, host, port, timing, forward, command)
    raise SystemExit(code)


def _check(results: Sequence[Checked]) -> None:
    out = console()
    failed = 0
    for r in results:
        failed += not r.ok
        mark = "[green]ok[/green]" if r.ok else "[red]DIFFERS[/red]"
        out.print(f"turn {r.turn:>3}  {mark}  {escape(r.detail)}")
    out.print(f"\n{len(results) - failed} of {len(results)} exchanges served byte-exact")
    if failed:
        raise SystemExit(1)


def _serve(
    recording: Recording,
    sid: str,
    db: DbRef,
    host: str,
    port: int,
    timing: str,
    forward: dict[str, str] | None,
    command: tuple[str, ...],
) -> int:
    from tapewire.replay.server import ReplayServer
    from tapewire.service import ServiceThread, Settings

    out = console()
    try:
        server = ReplayServer(recording, timing=timing, forward=forward, host=host, port=port)
        server.__enter__()
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e}") from None
    proxy: ServiceThread | None = None
    try:
        url, name = server.url, None
        if forward is not None:
            # Record the replayed run, hits and misses, as a session of its own: the proxy's
            # upstream for every provider is the replay, which forwards what it does not hold.
            name = f"replay-{sid[:8]}-{os.getpid()}"
            settings = Settings(db=db, port=0, grace=2.0,
                                upstreams=[f"{p}={server.url}" for p in PROVIDER_NAMES])  # fmt: skip
            proxy = ServiceThread(settings)
            url = f"{proxy.__enter__().url}/s/{name}"
        click.echo(f"replaying {sid} ({len(recording.exchanges)} exchanges) on {url}", err=True)
        if name:
            click.echo(f"  recording the run as session {name}; misses go upstream", err=True)
        if command:
            env = {**os.environ, **_agent_env(url)}
            code = subprocess.call(list(command), env=env)
        else:
            click.echo(f"  ANTHROPIC_BASE_URL={url}  OPENAI_BASE_URL={url}/v1", err=True)
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda signum, frame: stop.set())
            stop.wait()
            code = 0
    finally:
        if proxy is not None:
            proxy.stop()
        server.__exit__()
    served = sum(1 for r in recording.exchanges if r.served)
    out.print(f"served {served} of {len(recording.exchanges)} recorded exchanges", style="dim")
    if server.misses:
        first = server.misses[0]
        out.print(f"[yellow]{len(server.misses)} request(s) the recording does not hold[/yellow]"
                  + (f"; {server.forwarded} passed to the upstream" if forward else ""))  # fmt: skip
        out.print(escape(first.explain()), markup=False)
        return code or (0 if forward else 1)
    return code
