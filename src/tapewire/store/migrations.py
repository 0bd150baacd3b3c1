"""Named schema migrations for SQLite, each applied with its bookkeeping row in one transaction."""

from __future__ import annotations

import sqlite3
import time

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_raw_layer",
        """
        CREATE TABLE blobs (
            id TEXT PRIMARY KEY,          -- sha256 of the body bytes as stored
            size INTEGER NOT NULL,
            codec TEXT NOT NULL,          -- raw | zstd | zstd-dict
            dict_id TEXT REFERENCES blobs(id),
            depth INTEGER NOT NULL,       -- length of the dictionary chain behind it
            chain TEXT,                   -- conversation the body belongs to, for dictionaries
            data BLOB NOT NULL
        );
        CREATE INDEX blobs_chain ON blobs(chain);
        CREATE TABLE exchanges (
            id TEXT PRIMARY KEY,
            recorder TEXT NOT NULL,       -- the journal that captured it
            run TEXT NOT NULL,            -- the proxy process that captured it
            started_at REAL NOT NULL,
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            upstream TEXT NOT NULL,
            upstream_url TEXT NOT NULL,
            provider TEXT,
            session TEXT,
            claude_session TEXT,
            claude_agent TEXT,
            codex_session TEXT,
            codex_thread TEXT,
            request_headers TEXT NOT NULL,
            request_blob TEXT REFERENCES blobs(id),
            request_encoding TEXT,
            request_size INTEGER NOT NULL,
            request_truncated INTEGER NOT NULL,
            request_sha256 TEXT,          -- of the body as it crossed the wire, before redaction
            request_end_at REAL,
            status INTEGER,
            response_headers TEXT,
            response_blob TEXT REFERENCES blobs(id),
            response_encoding TEXT,
            response_size INTEGER,
            response_truncated INTEGER,
            response_sha256 TEXT,
            upstream_headers_at REAL,
            first_byte_at REAL,
            last_byte_at REAL,
            redactions INTEGER NOT NULL DEFAULT 0,          -- in the request body
            response_redactions INTEGER NOT NULL DEFAULT 0,
            outcome TEXT NOT NULL,
            error TEXT
        );
        CREATE INDEX exchanges_started ON exchanges(started_at);
        CREATE INDEX exchanges_session ON exchanges(session);
        CREATE INDEX exchanges_outcome ON exchanges(outcome) WHERE outcome = 'in_flight';
        CREATE TABLE run_contexts (
            session TEXT PRIMARY KEY,
            recorded_at REAL NOT NULL,
            context TEXT NOT NULL
        );
        CREATE TABLE drops (
            reason TEXT PRIMARY KEY,
            count INTEGER NOT NULL,
            last_at REAL,
            last_detail TEXT
        );
        """,
    ),
]


def ensure_table(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
    )


def applied(conn: sqlite3.Connection) -> set[str]:
    ensure_table(conn)
    return {row[0] for row in conn.execute("SELECT name FROM _migrations")}


def pending(conn: sqlite3.Connection) -> list[str]:
    done = applied(conn)
    return [name for name, _ in MIGRATIONS if name not in done]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply what is pending; the connection must be in autocommit mode."""
    done = applied(conn)
    ran = []
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if name in applied(conn):  # another process got there first
                conn.execute("ROLLBACK")
                continue
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        ran.append(name)
    return ran
