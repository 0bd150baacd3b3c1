"""Named schema migrations, each applied with its bookkeeping row in one transaction: SQLite's
here, PostgreSQL's (the same tables in its types) in `postgres_schema.py`, one runner for both."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

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
    (
        "0002_derived_layer",
        """
        CREATE TABLE nodes (
            id TEXT PRIMARY KEY,          -- sha256 of RFC 8785 JSON of {parent, role, content}
            parent TEXT,
            role TEXT NOT NULL,
            content BLOB NOT NULL,        -- the canonical parts: JSON, zstd when large
            depth INTEGER NOT NULL,
            exchange TEXT NOT NULL        -- the exchange that first carried it
        );
        CREATE INDEX nodes_parent ON nodes(parent);
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            harness TEXT NOT NULL,
            harness_session_id TEXT,
            name TEXT,
            title TEXT,
            started_at REAL NOT NULL,
            ended_at REAL NOT NULL
        );
        CREATE INDEX sessions_started ON sessions(started_at);
        CREATE INDEX sessions_name ON sessions(name);
        CREATE TABLE threads (
            id TEXT PRIMARY KEY,
            session TEXT NOT NULL,
            kind TEXT NOT NULL,
            agent TEXT,
            started_at REAL NOT NULL,
            spawned_by TEXT
        );
        CREATE INDEX threads_session ON threads(session);
        CREATE TABLE turns (
            exchange TEXT PRIMARY KEY,
            session TEXT NOT NULL,
            thread TEXT,
            kind TEXT NOT NULL,
            api TEXT NOT NULL,
            model TEXT,
            response_model TEXT,
            response_id TEXT,
            started_at REAL NOT NULL,
            duration_ms REAL,
            ttfb_ms REAL,
            status INTEGER,
            outcome TEXT NOT NULL,
            stop_reason TEXT,
            error TEXT,
            request_node TEXT,
            response_node TEXT,           -- the first choice's
            response_nodes TEXT NOT NULL, -- JSON list, every choice
            input_nodes TEXT NOT NULL,    -- JSON list: new since the thread's previous turn
            tools_doc TEXT,               -- sha256 of the tool definitions (in the raw body)
            params TEXT NOT NULL,
            input_tokens INTEGER,
            output_tokens INTEGER,
            cache_read_tokens INTEGER,
            cache_write_tokens INTEGER,
            cache_write_1h_tokens INTEGER,
            reasoning_tokens INTEGER,
            cost_usd REAL,
            stream INTEGER NOT NULL
        );
        CREATE INDEX turns_session ON turns(session, started_at);
        CREATE INDEX turns_thread ON turns(thread, started_at);
        CREATE TABLE node_turns (         -- the turns that brought a node into their thread:
            node TEXT NOT NULL,           -- identical runs share nodes, and search names
            exchange TEXT NOT NULL,       -- every session a text appeared in
            PRIMARY KEY (node, exchange)
        ) WITHOUT ROWID;
        CREATE TABLE tips (               -- each node a turn sent last or received, per thread
            node TEXT NOT NULL,           -- once, however many turns resent it: lookups by
            thread TEXT NOT NULL,         -- node stay bounded when an agent repeats itself
            session TEXT NOT NULL,        -- ('' thread: a side call)
            exchange TEXT NOT NULL,       -- the first turn that held it
            PRIMARY KEY (node, thread)
        ) WITHOUT ROWID;
        CREATE INDEX turns_response_id ON turns(response_id);
        CREATE TABLE tool_calls (
            session TEXT NOT NULL,
            thread TEXT,
            call_id TEXT NOT NULL,
            name TEXT,
            arguments TEXT,
            call_exchange TEXT NOT NULL,
            call_node TEXT NOT NULL,
            asked_at REAL,
            is_error INTEGER,             -- the result's text is in its node
            result_exchange TEXT,
            result_node TEXT,
            answered_at REAL,
            PRIMARY KEY (call_exchange, call_id)
        );
        CREATE INDEX tool_calls_open ON tool_calls(session, call_id, asked_at)
            WHERE result_exchange IS NULL;
        CREATE INDEX tool_calls_session ON tool_calls(session, asked_at);
        CREATE TABLE search_rows (        -- what each full-text row is: the text is in its node
            rowid INTEGER PRIMARY KEY,
            node TEXT NOT NULL,
            kind TEXT NOT NULL,           -- prompt | response | thinking | tool_arguments | tool_result
            call TEXT,                    -- the tool call id of tool arguments and results
            ordinal INTEGER NOT NULL      -- which of its node's search rows it is
        );
        CREATE VIRTUAL TABLE search USING fts5(text, content = '', tokenize = 'unicode61');
        """,
    ),
    (
        "0003_findings",
        """
        CREATE TABLE findings (           -- what analysis found in a session's own record
            session TEXT NOT NULL,
            id TEXT NOT NULL,
            kind TEXT NOT NULL,
            severity INTEGER NOT NULL,    -- 0 info, 1 warning, 2 error
            title TEXT NOT NULL,
            turns TEXT NOT NULL,          -- JSON list of 1-based turn indices
            evidence TEXT NOT NULL,       -- JSON
            PRIMARY KEY (session, id)
        );
        """,
    ),
    (
        "0004_response_chunks",
        # How the response arrived, read by read, for replay: JSON {"sizes": [...], "ms": [...]}
        # as text, zstd-compressed (a blob) when long. NULL: captured before this column, or
        # dropped because redaction changed the body's length. Adding a nullable column
        # rewrites nothing, however large the table.
        """
        ALTER TABLE exchanges ADD COLUMN response_chunks BLOB;
        """,
    ),
    (
        "0005_retention",
        # What deleting a session looks up: the rows of its exchanges and sessions, and who
        # still references a node or a body (tapewire delete, prune, serve --retain).
        """
        CREATE INDEX node_turns_exchange ON node_turns(exchange);
        CREATE INDEX tips_session ON tips(session);
        CREATE INDEX search_rows_node ON search_rows(node);
        CREATE INDEX blobs_dict ON blobs(dict_id) WHERE dict_id IS NOT NULL;
        CREATE INDEX exchanges_request_blob ON exchanges(request_blob);
        CREATE INDEX exchanges_response_blob ON exchanges(response_blob);
        CREATE INDEX sessions_ended ON sessions(ended_at);
        """,
    ),
    (
        "0006_ws_frames",
        # A WebSocket exchange's frames, both ways (model.Frame): JSON list of [source, opcode,
        # ms, size(, control payload hex)] as text, zstd-compressed (a blob) when long. NULL:
        # an HTTP exchange.
        """
        ALTER TABLE exchanges ADD COLUMN ws_frames BLOB;
        """,
    ),
    # PostgreSQL's planner statistics for search (postgres_schema.py); FTS5 needs none. Kept
    # in step so that both backends name the same history (`tapewire migrate`, copy).
    ("0007_search_statistics", ""),
]

# Tables `tapewire rederive` empties and rebuilds.
DERIVED_TABLES = (
    "nodes", "sessions", "threads", "turns", "node_turns", "tips", "tool_calls", "search_rows",
    "findings",
)  # fmt: skip


class Connection(Protocol):
    def execute(self, sql: str, args: Sequence[Any] = ...) -> Any: ...


def ensure_table(conn: Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at"
        " DOUBLE PRECISION NOT NULL)"
    )


def applied(conn: Connection) -> set[str]:
    ensure_table(conn)
    return {row[0] for row in conn.execute("SELECT name FROM _migrations")}


def pending(conn: Connection, migrations: list[tuple[str, str]] | None = None) -> list[str]:
    done = applied(conn)
    return [name for name, _ in migrations or MIGRATIONS if name not in done]


def migrate(
    conn: Connection,
    migrations: list[tuple[str, str]] | None = None,
    begin: tuple[str, ...] = ("BEGIN IMMEDIATE",),
) -> list[str]:
    """Apply what is pending, each migration with its bookkeeping row in one transaction;
    `begin` opens it and takes whatever lock keeps two processes from both applying one.
    The connection must be in autocommit mode."""
    done = applied(conn)
    ran = []
    for name, sql in migrations or MIGRATIONS:
        if name in done:
            continue
        for statement in begin:
            conn.execute(statement)
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
