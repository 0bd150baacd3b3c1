"""`tapewire fork SESSION --at TURN`: send the request a recorded conversation sent at one of its
turns again, with its last user message (or tool result) changed, through a recording proxy:
the answer becomes a new branch of the same DAG, a session of its own linked to its parent."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO, Any

import click

from tapewire.cli import reading
from tapewire.cli.options import db_option, proxy_options, settings_from
from tapewire.cli.output import emit_json
from tapewire.journal.segments import JournalLocked
from tapewire.query import SessionNotFound, resolve_session, session_detail
from tapewire.replay.fork import (
    ForkError,
    ForkPoint,
    Sent,
    check_body,
    edit_message,
    fork_context,
    fork_name,
    fork_point,
    request_headers,
    send,
)
from tapewire.service import ServiceThread, running_state
from tapewire.store.location import DbRef

INGEST_WAIT = 30.0  # seconds a running `tapewire serve` gets to store and derive the fork


def _header(value: str) -> tuple[str, str]:
    name, sep, rest = value.partition(":")
    if not sep or not name.strip():
        raise click.BadParameter(f"wants 'NAME: VALUE', got {value!r}", param_hint="--header")
    return name.strip(), rest.strip()


@click.command()
@click.argument("session")
@click.option("--at", "at", required=True, metavar="TURN_OR_NODE",
              help="The turn to fork at (1-based, as `tapewire show` numbers them), or a node id "
                   "(or a unique prefix of one) that a turn sent or received.")  # fmt: skip
@click.option("--message", "-m", default=None, metavar="TEXT",
              help="Replace the last user message's text with TEXT; where the request ends "
                   "with a tool's result, replace that result.")  # fmt: skip
@click.option("--edit", "edit_file", type=click.File("rb"), default=None, metavar="FILE",
              help="Send FILE as the request body instead (a --print output, edited; - reads "
                   "standard input).")  # fmt: skip
@click.option("--print", "print_only", is_flag=True,
              help="Write the request body to standard output and send nothing.")  # fmt: skip
@click.option("--header", "-H", "headers", multiple=True, metavar="'NAME: VALUE'",
              help="A header to send, over the recorded one of its name (credentials are never "
                   "recorded: give yours here, or set ANTHROPIC_API_KEY / OPENAI_API_KEY). "
                   "Repeatable.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@click.option("--token", envvar="TAPEWIRE_TOKEN", default=None, hidden=True)
@db_option
@proxy_options
def fork(
    session: str,
    at: str,
    message: str | None,
    edit_file: IO[bytes] | None,
    print_only: bool,
    headers: tuple[str, ...],
    as_json: bool,
    token: str | None,
    **options: Any,
) -> None:
    """Fork SESSION at a turn: rebuild the request its conversation sent there (in the
    provider's own wire format), change its last user message (--message) or take an edited
    body (--edit), and send it through a recording proxy to the upstream. The answer is
    recorded as a new branch of the same message DAG, in a new session linked to SESSION
    (`tapewire sessions` and `show` name the link; `tapewire diff FORK SESSION` starts at the
    fork point). With --print nothing is sent.

    Uses the `tapewire serve` that owns the database's journal when one is running, else
    starts a proxy in this process for the one request.
    """
    if message is not None and edit_file is not None:
        raise click.UsageError("give --message or --edit, not both")
    given = [_header(h) for h in headers]
    settings = settings_from(options)
    settings.port = 0
    store = reading.open_db(settings.db)
    try:
        parent = reading.session_ref(store, session)
        point = fork_point(store, parent, at)
        name = None if print_only else fork_name(store, parent, point.turn)
    except ForkError as e:
        raise click.ClickException(str(e)) from None
    finally:
        store.close()
    body, edited = point.body, None
    try:
        if edit_file is not None:
            body, edited = edit_file.read(), "the whole request body (--edit)"
            check_body(body)
        elif message is not None:
            body, edited = edit_message(point.api, point.body, message)
    except ForkError as e:
        raise click.ClickException(str(e)) from None
    for note in point.notes:
        click.echo(f"tapewire: {note}", err=True)
    if print_only:
        click.echo(
            f"tapewire: {point.method} {point.path} ({point.api or 'not an LLM call'}), turn "
            f"{point.turn} of {parent}" + (f"; replaced {edited}" if edited else ""),
            err=True,
        )
        sys.stdout.flush()
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return
    assert name is not None
    sent = _send(point, name, body, request_headers(point, given, os.environ),
                 fork_context(point, edited), settings, bool(options["upstreams"]), token)  # fmt: skip
    _report(settings.db, point, name, edited, sent, as_json)


def _send(
    point: ForkPoint,
    name: str,
    body: bytes,
    headers: list[tuple[str, str]],
    context: dict[str, Any],
    settings: Any,
    upstreams_given: bool,
    token: str | None,
) -> Sent:
    from tapewire.cli.run import post_context

    state = running_state(settings.journal_dir)
    try:
        if state is not None:
            if upstreams_given:
                raise click.ClickException(
                    f"a tapewire serve ({state['url']}) owns this database's journal and its "
                    "upstreams apply: stop it, or fork without --upstream"
                )
            url = str(state["url"]).rstrip("/")
            post_context(url, name, context, token)
            if token:
                headers = [*headers, ("x-tapewire-token", token)]
            sent = send(f"{url}/s/{name}{point.path}", point.method, headers, body,
                        settings.read_timeout)  # fmt: skip
            _wait_ingested(settings.db, name)
            return sent
        try:
            thread = ServiceThread(settings)
        except (JournalLocked, ValueError) as e:
            raise click.ClickException(str(e)) from None
        service = thread.__enter__()
        try:
            service.record_context(name, context)
            return send(f"{service.url}/s/{name}{point.path}", point.method, headers, body,
                        settings.read_timeout)  # fmt: skip
        finally:
            thread.stop()  # drains the journal: the fork is stored and derived
    except ForkError as e:
        raise click.ClickException(str(e)) from None


def _wait_ingested(db: DbRef, name: str) -> None:
    deadline = time.monotonic() + INGEST_WAIT
    while time.monotonic() < deadline:
        store = reading.open_db(db)
        try:
            found = store.find_sessions(name)
            if found and store.turn_rows(found[0]) and store.fork_links([name]):
                return
        finally:
            store.close()
        time.sleep(0.1)
    click.echo(f"tapewire: the fork is not stored yet; see `tapewire show {name}` later", err=True)


def _report(
    db: DbRef, point: ForkPoint, name: str, edited: str | None, sent: Sent, as_json: bool
) -> None:
    store = reading.open_db(db)
    try:
        try:
            sid: str | None = resolve_session(store, name)
        except SessionNotFound:
            sid = None
        turns = session_detail(store, sid)["turns"] if sid else []
    finally:
        store.close()
    turn = turns[-1] if turns else None
    result = {
        "session": sid,
        "name": name,
        "parent": point.parent,
        "fork_turn": point.turn,
        "fork_node": point.node,
        "edited": edited,
        "status": sent.status,
        "exchange_id": turn["exchange_id"] if turn else None,
        "output": turn["output"] if turn else [],
        "error": turn["error"] if turn else None,
    }
    if as_json:
        emit_json(result)
    else:
        click.echo(f"forked {point.parent} at turn {point.turn} → session {sid or '(not stored)'}"
                   f" (/s/{name})")  # fmt: skip
        if edited:
            click.echo(f"replaced {edited}")
        click.echo(f"status {sent.status}")
        for part in result["output"]:
            click.echo(_part(part))
        if result["error"]:
            click.echo(f"error: {result['error']}")
    if sent.status >= 400:
        sys.exit(1)


def _part(part: dict[str, Any]) -> str:
    kind = part.get("type")
    if kind in ("text", "refusal"):
        return str(part.get("text") or "")
    if kind == "tool_call":
        args = json.dumps(part.get("arguments"), ensure_ascii=False)
        return f"→ {part.get('name')} {args}"
    if kind == "thinking":
        return f"(thinking) {part.get('text') or ''}"
    return f"({part.get('name') or kind})"
