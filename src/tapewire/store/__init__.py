"""The store: where exchanges live once the journal hands them over. `open_store` picks the
backend from the URL; the rest of tapewire sees only the `Store` protocol."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from tapewire.model import Exchange, ExchangeEnd, Frame, RunContext
from tapewire.store import location
from tapewire.store.derived import Derived
from tapewire.store.location import DbRef


@dataclass
class Batch:
    """Everything one ingest step writes, in one transaction."""

    begins: list[Exchange] = field(default_factory=list)
    ends: list[ExchangeEnd] = field(default_factory=list)
    contexts: list[RunContext] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.begins) + len(self.ends) + len(self.contexts) + len(self.drops)


@dataclass
class ExchangeRow:
    """An exchange as read back, with bodies decoded from their blobs."""

    id: str
    started_at: float
    method: str
    path: str
    upstream: str
    upstream_url: str
    provider: str | None
    status: int | None
    outcome: str
    error: str | None
    session: str | None
    evidence: dict[str, str]
    request_headers: list[tuple[str, str]]
    response_headers: list[tuple[str, str]]
    request_size: int
    response_size: int | None
    request_truncated: bool
    response_truncated: bool
    redactions: int
    timings: dict[str, float | None]
    request_sha256: str | None = None  # of the request body as sent, before any redaction
    request_encoding: str | None = None  # the content-encoding the stored body is in
    response_encoding: str | None = None
    request_body: bytes | None = None
    response_body: bytes | None = None
    # How the response arrived: (bytes, ms after its first byte) per read from the upstream,
    # in order; the sizes sum to response_size. None: captured before tapewire recorded it,
    # or dropped because redaction changed the stored body's length (docs/capture.md).
    response_chunks: list[tuple[int, float]] | None = None
    # A WebSocket exchange's frames, both ways, in order (model.Frame); None: HTTP.
    ws_frames: list[Frame] | None = None

    def as_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data.pop("request_body")
        data.pop("response_body")
        if self.ws_frames is not None:
            data["ws_frames"] = [f.as_json() for f in self.ws_frames]
        return data


class SearchSyntaxError(ValueError):
    """A full-text query the backend cannot read."""


class Store(Protocol):
    # The database's passing trouble (a lost connection, a lock or deadlock given up on): the
    # writer's whole batch is retried, never one item skipped.
    TRANSIENT: tuple[type[Exception], ...]
    location: DbRef  # what it was opened with: a SQLite file's path or a PostgreSQL URL
    # The words a full-text query reads as operators, not as words to find (in capitals).
    SEARCH_OPERATORS: frozenset[str]

    def write(self, batch: Batch) -> None: ...
    def interrupt_stale(self, recorder: str, live_run: str) -> int: ...
    def exchanges(self, limit: int = 50, with_bodies: bool = False) -> list[ExchangeRow]: ...
    def exchange(self, exchange_id: str) -> ExchangeRow | None: ...
    def counts(self) -> dict[str, Any]: ...
    def run_context(self, session: str) -> dict[str, Any] | None: ...
    def fork_links(self, names: list[str]) -> dict[str, dict[str, Any]]: ...
    def forks_of(self, session: str) -> list[dict[str, Any]]: ...
    def size_bytes(self) -> int: ...
    def close(self) -> None: ...
    def read_blob(self, blob_id: str) -> bytes: ...

    # the derived layer: written by `derive`, dropped and rebuilt by `tapewire rederive`
    def write_derived(self, items: list[Derived]) -> None: ...
    def derived_batch(self) -> AbstractContextManager[None]: ...
    def clear_derived(self) -> None: ...
    def derive_order(self) -> list[str]: ...
    def underived(self) -> list[tuple[str, str, str]]: ...
    def derived_out_of_order(self, session: str, exchange: str) -> bool: ...
    def underive_session(self, session: str) -> list[str]: ...
    def response_owner(self, response_id: str) -> tuple[str, str | None, str | None] | None: ...
    def node_depth(self, node: str) -> int: ...
    def chain_owner(self, nodes: list[str]) -> tuple[str, str | None] | None: ...
    def node_chain(self, node: str) -> list[str]: ...
    def known_depth(self, thread: str, chain: list[str], exchange: str) -> int: ...
    def spawning_call(self, session: str, texts: list[str]) -> str | None: ...
    def replace_findings(self, session: str, rows: list[dict[str, Any]]) -> None: ...
    def main_models(self) -> dict[str, str]: ...
    def finding_rows(
        self, sessions: list[str] | None = None, since: float | None = None
    ) -> list[dict[str, Any]]: ...

    # imported transcripts (importers/)
    def existing_exchanges(self, ids: list[str]) -> set[str]: ...
    def wire_response_ids(self, session: str) -> set[str]: ...
    def session_sources(self, ids: list[str]) -> dict[str, str]: ...
    def put_transcript_facts(
        self, session: str, harness: str, facts: dict[str, Any], source_file: str, at: float
    ) -> None: ...
    def transcript_facts(self, session: str) -> dict[str, Any] | None: ...

    # keeping it (store/retention.py, store/transfer.py, maintenance.py)
    def migration_state(self) -> tuple[list[tuple[str, float]], list[str]]: ...
    def sessions_ended_before(self, cutoff: float) -> list[str]: ...
    def delete_sessions(
        self,
        ids: list[str],
        search_texts: Callable[[str, str, Any], list[str]],
        *,
        exchanges_before: float | None = None,
    ) -> dict[str, int]: ...
    def reclaim(self) -> None: ...
    def exchange_ids(self, page: int = 1000) -> Iterator[list[str]]: ...
    def raw_exchanges(self, ids: list[str]) -> list[dict[str, Any]]: ...
    def raw_blobs(self, ids: set[str]) -> list[dict[str, Any]]: ...
    def raw_table(self, table: str) -> list[dict[str, Any]]: ...
    def put_raw(self, table: str, rows: list[dict[str, Any]]) -> int: ...

    # reading it
    def session_rows(
        self,
        *,
        ids: list[str] | None = None,
        since: float | None = None,
        harness: str | None = None,
        model: str | None = None,
        cwd: str | None = None,
        before: tuple[float, str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]: ...
    def search_hits(
        self,
        query: str,
        *,
        session: str | None = None,
        model: str | None = None,
        tool: str | None = None,
        role: str | None = None,
        since: float | None = None,
        limit: int = 50,
        offset: int = 0,
        rank: bool = False,
    ) -> list[dict[str, Any]]: ...
    def turn_index(self, exchange: str) -> int | None: ...
    def tool_stats(self, session: str | None = None) -> list[dict[str, Any]]: ...
    def find_sessions(self, ref: str) -> list[str]: ...
    def turn_rows(self, session: str) -> list[dict[str, Any]]: ...
    def thread_rows(self, session: str) -> list[dict[str, Any]]: ...
    def node_rows(self, ids: list[str]) -> dict[str, dict[str, Any]]: ...
    def tool_call_rows(self, session: str) -> list[dict[str, Any]]: ...
    def iter_nodes(self) -> Iterator[tuple[str, str | None, str, Any, int]]: ...
    def search_nodes(self, query: str, limit: int = 50) -> list[tuple[str, str]]: ...
    def blob_rows(self) -> Iterator[tuple[str, int]]: ...


def open_store(url: DbRef, *, readonly: bool = False) -> Store:
    """A SQLite path or a PostgreSQL URL. readonly: for commands that only read; never
    migrates, never writes."""
    db = location.parse(url)
    if isinstance(db, str):
        from tapewire.store.postgres import PostgresStore

        return PostgresStore(db, readonly=readonly)
    from tapewire.store.sqlite import SQLiteStore

    return SQLiteStore(db, readonly=readonly)
