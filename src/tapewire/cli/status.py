"""`tapewire status`: what has been recorded, what was dropped and why, what still waits."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import click

from tapewire.cli.options import db_option
from tapewire.cli.output import console, emit_json, size, when
from tapewire.journal.ingest import read_status
from tapewire.journal.segments import backlog_bytes
from tapewire.service import running_state
from tapewire.store import location, open_store
from tapewire.store.location import DbRef


def live_status(journal_dir: Path) -> dict[str, Any] | None:
    state = running_state(journal_dir)
    if state is None:
        return None
    try:
        with urllib.request.urlopen(state["url"] + "/_tapewire/status", timeout=3) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except OSError as e:
        return {"url": state["url"], "pid": state["pid"], "unreachable": str(e)}


def gather(db: DbRef, journal_dir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"db": location.display(db), "journal": str(journal_dir)}
    if location.exists(db):
        try:
            store = open_store(db, readonly=True)
            try:
                report["store"] = store.counts()
                report["store"]["size_bytes"] = store.size_bytes()
            finally:
                store.close()
        except FileNotFoundError:  # a PostgreSQL database without tapewire's tables
            pass
        except Exception as e:  # a broken store is what status exists to report
            report["store_error"] = f"{type(e).__name__}: {e}"
    report["journal_backlog_bytes"] = backlog_bytes(journal_dir)
    report["serving"] = live_status(journal_dir)
    if journal_dir.exists():
        report["ingest"] = read_status(journal_dir)  # the worker's last word, live or not
    drops: dict[str, int] = {
        reason: d["count"] for reason, d in report.get("store", {}).get("drops", {}).items()
    }
    live = report["serving"] or {}
    for reason, count in live.get("capture", {}).get("drops", {}).items():
        # The live counters include drops not yet journaled (a full disk); take the larger.
        drops[reason] = max(drops.get(reason, 0), count)
    report["drops"] = drops
    return report


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for programs.")
@db_option
def status(as_json: bool, db: DbRef, journal: Path | None) -> None:
    """Exchanges recorded, drops by reason, journal backlog, store size."""
    journal_dir = journal or location.default_journal(db)
    report = gather(db, journal_dir)
    if as_json:
        emit_json(report)
        return
    out = console()
    store = report.get("store")
    out.print(f"[bold]database[/] {location.display(db)}")
    if "store_error" in report:
        out.print(f"  [red]store unreadable:[/] {report['store_error']}")
    elif store is None:
        out.print("  nothing recorded yet")
    else:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(store["outcomes"].items()))
        out.print(f"  exchanges  {store['exchanges']}  ({outcomes or 'none'})")
        out.print(
            f"  derived    {store['sessions']} sessions, {store['turns']} turns, {store['nodes']} nodes"
        )
        out.print(
            f"  size       {size(store['size_bytes'])} on disk;"
            f" bodies {size(store['body_bytes'])} stored in {size(store['body_bytes_stored'])}"
        )
    out.print(f"[bold]journal[/] {journal_dir}")
    out.print(f"  backlog    {size(report['journal_backlog_bytes'])} not yet in the store")
    ingest = report.get("ingest") or {}
    if ingest.get("last_error") and (ingest.get("last_error_at") or 0) > (
        ingest.get("last_ingest_at") or 0
    ):
        out.print(
            f"  [red]ingest failing[/] since {when(ingest['last_error_at'])}: {ingest['last_error']}"
        )
    drops = report["drops"]
    out.print(
        "[bold]drops[/] " + (", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none")
    )
    live = report["serving"]
    if live is None:
        out.print("[bold]proxy[/] not running")
    elif "unreachable" in live:
        out.print(
            f"[bold]proxy[/] pid {live['pid']} at {live['url']}: [red]unreachable[/] ({live['unreachable']})"
        )
    else:
        cap, ing = live["capture"], live["ingest"]
        out.print(f"[bold]proxy[/] {live['url']} (pid {live['pid']}, up {live['uptime_s']} s)")
        out.print(f"  this run   {cap['exchanges']} exchanges, {cap['in_flight']} in flight")
        out.print(f"  ingest     last {when(ing['last_ingest_at'])}")
        if cap["last_drop"]:
            d = cap["last_drop"]
            out.print(f"  [yellow]last drop[/] {d['reason']} at {when(d['at'])}: {d['detail']}")
