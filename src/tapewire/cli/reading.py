"""What the reading commands share: opening the store read-only, parsing times, and the
figures' short forms."""

from __future__ import annotations

from pathlib import Path

import click

from tapewire.query import SessionNotFound, parse_time, resolve_session
from tapewire.store import Store, open_store


def open_db(db: Path) -> Store:
    if not db.exists():
        raise click.ClickException(f"no database at {db}: nothing recorded yet")
    return open_store(db, readonly=True)


def since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None


def session_ref(store: Store, ref: str) -> str:
    try:
        return resolve_session(store, ref)
    except SessionNotFound as e:
        raise click.ClickException(str(e)) from None


def tokens(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def cost(v: float | None) -> str:
    return "?" if v is None else f"${v:.4f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
