"""What the reading commands share: opening the store read-only, parsing times, and the
figures' short forms."""

from __future__ import annotations

import click

from tapewire.figures import cost, duration, tokens
from tapewire.query import SessionNotFound, parse_time, resolve_session
from tapewire.store import Store, location, open_store
from tapewire.store.location import DbRef

__all__ = ["cost", "duration", "open_db", "session_ref", "since", "tokens"]


def open_db(db: DbRef) -> Store:
    try:
        if not location.exists(db):
            raise FileNotFoundError(db)
        return open_store(db, readonly=True)
    except FileNotFoundError:  # no file; or a PostgreSQL database without tapewire's tables
        raise click.ClickException(
            f"no database at {location.display(db)}: nothing recorded yet"
        ) from None


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
