"""Where a store lives: a SQLite file's path, or a PostgreSQL URL (`postgresql://…`). Commands
take either as `--db` (or TAPEWIRE_DB); this says which it is, whether it exists, how to show it
without its password, and where its journal goes by default."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import platformdirs

DbRef = Path | str  # a SQLite path, or a PostgreSQL URL as given
POSTGRES_SCHEMES = ("postgres://", "postgresql://")


def parse(value: str | Path) -> DbRef:
    text = str(value)
    if text.startswith(POSTGRES_SCHEMES):
        return text
    return Path(text.removeprefix("sqlite:///").removeprefix("sqlite://"))


def is_postgres(db: DbRef) -> bool:
    return isinstance(db, str) and db.startswith(POSTGRES_SCHEMES)


def exists(db: DbRef) -> bool:
    """Whether there may be a record to read: a SQLite file on disk; a server, always (opening
    it says whether tapewire's tables are there)."""
    return is_postgres(db) or Path(db).exists()


def display(db: DbRef) -> str:
    """For messages and `status`: a URL's password never reaches a log or a terminal."""
    if not is_postgres(db):
        return str(db)
    parts = urlsplit(str(db))
    if parts.password is None:
        return str(db)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def default_journal(db: DbRef) -> Path:
    """Beside a SQLite file; for a server, in the user data directory, one per database."""
    if not is_postgres(db):
        return Path(f"{db}.journal")
    parts = urlsplit(str(db))
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{parts.hostname or 'local'}-{parts.path.strip('/')}")
    digest = hashlib.sha256(display(db).encode()).hexdigest()[:12]
    return Path(platformdirs.user_data_dir("tapewire")) / "journals" / f"{name}-{digest}"
