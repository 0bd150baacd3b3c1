"""`tapewire search`: full text across every session."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.text import Text

from tapewire.cli import reading
from tapewire.cli.options import db_option
from tapewire.cli.output import console, emit_json, when
from tapewire.query import SearchSyntaxError
from tapewire.query import search as run_search
from tapewire.store.location import DbRef


@click.command()
@click.argument("query")
@click.option("--session", help="Only this session (id, prefix, /s/ name or harness id).")
@click.option("--model", help="Only turns of this model.")
@click.option("--tool", help="Only the arguments and results of this tool.")
@click.option("--role", type=click.Choice(["system", "developer", "user", "assistant", "tool"]),
              help="Only messages of this role.")  # fmt: skip
@click.option("--since", help="Only turns since this ISO date or time.")
@click.option("--limit", "-n", type=int, default=20, show_default=True)
@click.option("--rank", is_flag=True, help="Most relevant first (bm25), not newest first; "
              "slower for words that are everywhere.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def search(
    query: str,
    session: str | None,
    model: str | None,
    tool: str | None,
    role: str | None,
    since: str | None,
    limit: int,
    rank: bool,
    as_json: bool,
    db: DbRef,
    journal: Path | None,
) -> None:
    """Search every session's prompts, responses, thinking, tool arguments and tool results.

    QUERY is FTS5 syntax: words (all must match), "a phrase", prefix*, OR, NOT, NEAR(a b).
    """
    store = reading.open_db(db)
    try:
        sid = reading.session_ref(store, session) if session else None
        hits = run_search(store, query, session=sid, model=model, tool=tool, role=role,
                          since=reading.since(since), limit=limit, rank=rank)  # fmt: skip
    except SearchSyntaxError as e:
        raise click.ClickException(str(e)) from None
    finally:
        store.close()
    if as_json:
        emit_json(hits)
        return
    out = console()
    if not hits:
        out.print("no matches")
    for h in hits:
        out.print(
            f"[bold]{h['session'][:8]}[/bold] {escape((h['session_title'] or '')[:50])}"
            f" · turn {h['turn']} · {h['where'].replace('_', ' ')} · {when(h['started_at'])}"
        )
        text = Text("  " + h["snippet"])
        for start, end in h["highlights"]:
            text.stylize("bold yellow", start + 2, end + 2)
        out.print(text)
