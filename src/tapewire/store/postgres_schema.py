"""PostgreSQL's migrations: the tables of `migrations.py` in PostgreSQL's types, under the same
names, so both backends list the same history. Three differences: floats are DOUBLE PRECISION
(PostgreSQL's REAL has 4 bytes), tables SQLite orders by its implicit rowid carry one of their
own, and full-text search is a `tsvector` column of search_rows with a GIN index rather than an
FTS5 table."""

from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_raw_layer",
        """
        CREATE TABLE blobs (
            id TEXT PRIMARY KEY,
            size BIGINT NOT NULL,
            codec TEXT NOT NULL,
            dict_id TEXT,
            depth INTEGER NOT NULL,
            chain TEXT,
            data BYTEA NOT NULL,
            rowid BIGINT GENERATED ALWAYS AS IDENTITY
        );
        CREATE INDEX blobs_chain ON blobs(chain, rowid);
        CREATE TABLE exchanges (
            id TEXT PRIMARY KEY,
            recorder TEXT NOT NULL,
            run TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL,
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
            request_blob TEXT,
            request_encoding TEXT,
            request_size BIGINT NOT NULL,
            request_truncated INTEGER NOT NULL,
            request_sha256 TEXT,
            request_end_at DOUBLE PRECISION,
            status INTEGER,
            response_headers TEXT,
            response_blob TEXT,
            response_encoding TEXT,
            response_size BIGINT,
            response_truncated INTEGER,
            response_sha256 TEXT,
            upstream_headers_at DOUBLE PRECISION,
            first_byte_at DOUBLE PRECISION,
            last_byte_at DOUBLE PRECISION,
            redactions INTEGER NOT NULL DEFAULT 0,
            response_redactions INTEGER NOT NULL DEFAULT 0,
            outcome TEXT NOT NULL,
            error TEXT
        );
        CREATE INDEX exchanges_started ON exchanges(started_at);
        CREATE INDEX exchanges_session ON exchanges(session);
        CREATE INDEX exchanges_outcome ON exchanges(outcome) WHERE outcome = 'in_flight';
        CREATE TABLE run_contexts (
            session TEXT PRIMARY KEY,
            recorded_at DOUBLE PRECISION NOT NULL,
            context TEXT NOT NULL
        );
        CREATE TABLE drops (
            reason TEXT PRIMARY KEY,
            count BIGINT NOT NULL,
            last_at DOUBLE PRECISION,
            last_detail TEXT
        );
        """,
    ),
    (
        "0002_derived_layer",
        """
        CREATE TABLE nodes (
            id TEXT PRIMARY KEY,
            parent TEXT,
            role TEXT NOT NULL,
            content BYTEA NOT NULL,
            depth INTEGER NOT NULL,
            exchange TEXT NOT NULL
        );
        CREATE INDEX nodes_parent ON nodes(parent);
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            harness TEXT NOT NULL,
            harness_session_id TEXT,
            name TEXT,
            title TEXT,
            started_at DOUBLE PRECISION NOT NULL,
            ended_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX sessions_started ON sessions(started_at);
        CREATE INDEX sessions_name ON sessions(name);
        CREATE TABLE threads (
            id TEXT PRIMARY KEY,
            session TEXT NOT NULL,
            kind TEXT NOT NULL,
            agent TEXT,
            started_at DOUBLE PRECISION NOT NULL,
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
            started_at DOUBLE PRECISION NOT NULL,
            duration_ms DOUBLE PRECISION,
            ttfb_ms DOUBLE PRECISION,
            status INTEGER,
            outcome TEXT NOT NULL,
            stop_reason TEXT,
            error TEXT,
            request_node TEXT,
            response_node TEXT,
            response_nodes TEXT NOT NULL,
            input_nodes TEXT NOT NULL,
            tools_doc TEXT,
            params TEXT NOT NULL,
            input_tokens BIGINT,
            output_tokens BIGINT,
            cache_read_tokens BIGINT,
            cache_write_tokens BIGINT,
            cache_write_1h_tokens BIGINT,
            reasoning_tokens BIGINT,
            cost_usd DOUBLE PRECISION,
            stream INTEGER NOT NULL
        );
        CREATE INDEX turns_session ON turns(session, started_at);
        CREATE INDEX turns_thread ON turns(thread, started_at);
        CREATE TABLE node_turns (
            node TEXT NOT NULL,
            exchange TEXT NOT NULL,
            PRIMARY KEY (node, exchange)
        );
        CREATE TABLE tips (
            node TEXT NOT NULL,
            thread TEXT NOT NULL,
            session TEXT NOT NULL,
            exchange TEXT NOT NULL,
            PRIMARY KEY (node, thread)
        );
        CREATE INDEX turns_response_id ON turns(response_id);
        CREATE TABLE tool_calls (
            session TEXT NOT NULL,
            thread TEXT,
            call_id TEXT NOT NULL,
            name TEXT,
            arguments TEXT,
            call_exchange TEXT NOT NULL,
            call_node TEXT NOT NULL,
            asked_at DOUBLE PRECISION,
            is_error INTEGER,
            result_exchange TEXT,
            result_node TEXT,
            answered_at DOUBLE PRECISION,
            rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
            PRIMARY KEY (call_exchange, call_id)
        );
        CREATE INDEX tool_calls_open ON tool_calls(session, call_id, asked_at)
            WHERE result_exchange IS NULL;
        CREATE INDEX tool_calls_session ON tool_calls(session, asked_at);
        CREATE TABLE search_rows (
            node TEXT NOT NULL,
            kind TEXT NOT NULL,
            call TEXT,
            ordinal INTEGER NOT NULL,
            tsv TSVECTOR NOT NULL,        -- the text's words ('simple': no stemming, any language)
            rowid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY
        );
        CREATE INDEX search_rows_node ON search_rows(node);
        CREATE INDEX search_rows_tsv ON search_rows USING GIN (tsv);
        """,
    ),
    (
        "0003_findings",
        """
        CREATE TABLE findings (
            session TEXT NOT NULL,
            id TEXT NOT NULL,
            kind TEXT NOT NULL,
            severity INTEGER NOT NULL,
            title TEXT NOT NULL,
            turns TEXT NOT NULL,
            evidence TEXT NOT NULL,
            PRIMARY KEY (session, id)
        );
        """,
    ),
    (
        "0004_response_chunks",
        """
        ALTER TABLE exchanges ADD COLUMN response_chunks BYTEA;
        """,
    ),
    (
        "0005_retention",
        # What deleting a session looks up: the rows of its exchanges and sessions, and who
        # still references a node or a body (tapewire delete, prune, serve --retain).
        """
        CREATE INDEX node_turns_exchange ON node_turns(exchange);
        CREATE INDEX tips_session ON tips(session);
        CREATE INDEX blobs_dict ON blobs(dict_id) WHERE dict_id IS NOT NULL;
        CREATE INDEX exchanges_request_blob ON exchanges(request_blob);
        CREATE INDEX exchanges_response_blob ON exchanges(response_blob);
        CREATE INDEX sessions_ended ON sessions(ended_at);
        """,
    ),
    (
        "0006_ws_frames",
        """
        ALTER TABLE exchanges ADD COLUMN ws_frames BYTEA;
        """,
    ),
    (
        "0007_search_statistics",
        # The planner tells a rare word from a common one by the words ANALYZE counted: by
        # default the 1,000 most common, every other word guessed at half the rarest of them
        # (9,000 of 1.8 million texts at 1,000,000 messages), so a search for a word found 15
        # times walked every row newest first (1.2 s). Counting the 10,000 most common makes
        # that guess ~400 rows: the planner takes a rare word's matches from the GIN index and
        # still walks the newest rows for a common one. ANALYZE then takes a few seconds more.
        """
        ALTER TABLE search_rows ALTER COLUMN tsv SET STATISTICS 1000;
        """,
    ),
]
