"""`tapewire analyze` and `tapewire drift`: what the detectors found, and how far runs of one
task drifted apart (docs/analysis.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from tapewire.analysis import SEVERITIES, Thresholds, rank
from tapewire.cli import reading
from tapewire.cli.options import db_option
from tapewire.cli.output import console, emit_json
from tapewire.config import ConfigError
from tapewire.query import drift as drift_runs
from tapewire.query import findings, sessions
from tapewire.store.location import DbRef

_STYLE = {"info": "dim", "warning": "yellow", "error": "bold red"}


def _thresholds() -> Thresholds:
    try:
        return Thresholds.load()
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


def _turns(turns: list[int]) -> str:
    if not turns:
        return ""
    if len(turns) > 2 and turns == list(range(turns[0], turns[-1] + 1)):
        return f"turns {turns[0]}-{turns[-1]}"
    shown = ", ".join(map(str, turns[:8])) + (" …" if len(turns) > 8 else "")
    return f"turn{'s' if len(turns) > 1 else ''} {shown}"


@click.command()
@click.argument("session", nargs=-1)
@click.option("--since", help="Every session active since this ISO date or date-time.")
@click.option(
    "--fail-on",
    type=click.Choice([*SEVERITIES, "never"]),
    default="error",
    show_default=True,
    help="Exit with 1 when a finding at or above this severity exists.",
)
@click.option(
    "--min-severity",
    type=click.Choice(SEVERITIES),
    default="info",
    show_default=True,
    help="Show findings at or above this severity.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def analyze(
    session: tuple[str, ...],
    since: str | None,
    fail_on: str,
    min_severity: str,
    as_json: bool,
    db: DbRef,
    journal: Path | None,
) -> None:
    """Find loops, stalls, error bursts and anomalies in SESSIONs (default: every session, or
    those active --since a date). Each finding has a severity, a line that explains it, its
    evidence and the turns it points at. With --fail-on, gates CI runs of agents."""
    limits = _thresholds()
    store = reading.open_db(db)
    try:
        if session:
            ids = [reading.session_ref(store, s) for s in session]
        else:
            ids = [r["id"] for r in sessions(store, since=reading.since(since))]
        found = findings(store, ids, limits)
        titles = {r["id"]: r["title"] for r in sessions(store)} if not as_json else {}
    finally:
        store.close()
    floor = rank(min_severity)
    shown = {sid: [f for f in fs if rank(f["severity"]) >= floor] for sid, fs in found.items()}
    if as_json:
        emit_json({"sessions": [{"session": sid, "findings": fs} for sid, fs in shown.items()]})
    else:
        _print(shown, titles)
    every = [f for fs in found.values() for f in fs]
    if fail_on != "never" and any(rank(f["severity"]) >= rank(fail_on) for f in every):
        raise SystemExit(1)


def _print(found: dict[str, list[dict[str, Any]]], titles: dict[str, str | None]) -> None:
    out = console()
    clean = 0
    for sid, fs in found.items():
        if not fs:
            clean += 1
            continue
        out.print(f"[bold]{escape(titles.get(sid) or sid)}[/bold]  {sid[:8]}")
        for f in fs:
            style = _STYLE[f["severity"]]
            where = _turns(f["turns"])
            out.print(
                f"  [{style}]{f['severity']:<7}[/{style}] {f['kind']:<16} "
                f"{escape(f['title'])}" + (f"  [dim]({where})[/dim]" if where else "")
            )
    total = sum(len(fs) for fs in found.values())
    out.print(
        f"\n{total} finding{'s' if total != 1 else ''} in {len(found) - clean} of "
        f"{len(found)} session{'s' if len(found) != 1 else ''}"
    )


@click.command()
@click.argument("session", nargs=-1)
@click.option(
    "--family",
    help="Also every session whose /s/ name starts with this (run-42-a, run-42-b, …).",
)
@click.option(
    "--same-prompt",
    "like",
    metavar="SESSION",
    help="Also every session whose first prompt (or harness title) is this session's.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def drift(
    session: tuple[str, ...],
    family: str | None,
    like: str | None,
    as_json: bool,
    db: DbRef,
    journal: Path | None,
) -> None:
    """How far two or more runs of one task drifted apart: the edit distance between their
    tool-call paths, the step where they split, which run left the usual path, and how their
    costs and answers differ. Exit code 1 when a run drifted."""
    limits = _thresholds()
    store = reading.open_db(db)
    try:
        ids = [reading.session_ref(store, s) for s in session]
        every = list(reversed(sessions(store)))  # oldest first
        if family:
            named = [r for r in every if (r["name"] or "").startswith(family)]
            ids += [r["id"] for r in named if r["id"] not in ids]
        if like:
            anchor = reading.session_ref(store, like)
            title = next(r["title"] for r in every if r["id"] == anchor)
            same = [r for r in every if title and r["title"] == title]
            ids += [r["id"] for r in same if r["id"] not in ids]
        if len(ids) < 2:
            raise click.UsageError("name two or more runs (or a --family that has them)")
        result = drift_runs(store, ids, limits)
    finally:
        store.close()
    if as_json:
        emit_json(result)
    else:
        _print_drift(result)
    if result["drifted"]:
        raise SystemExit(1)


def _print_drift(r: dict[str, Any]) -> None:
    out = console()
    out.print(f"[bold]{escape(r['explanation'])}[/bold]")
    out.print(
        f"{'run':<10}{'steps':>6}{'distance':>10}{'split at':>10}{'turns':>7}{'cost':>11}  answer"
    )
    for run in r["runs"]:
        mark = " [yellow]drifted[/yellow]" if run["drifted"] else ""
        usual = " [dim](the usual path)[/dim]" if run["session"] == r["usual"] else ""
        cost = "?" if run["cost_usd"] is None else f"${run['cost_usd']:.4f}"
        answer = (
            "same" if run["final_answer_same"] else f"{run['final_answer_similarity']:.0%} alike"
        )
        out.print(
            f"{run['session'][:8]:<10}{run['steps']:>6}{run['distance']:>10}"
            f"{run['split_step'] or '-':>10}{run['turns']:>7}{cost:>11}  {answer}{mark}{usual}"
        )
