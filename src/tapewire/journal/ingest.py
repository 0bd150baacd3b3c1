"""The ingester: a thread that moves journal records into the store, in batches, checkpointed.

It is the only reader of the journal in a live process and the only writer to the store.
A store that fails (unwritable, full, down) leaves the records in the journal: the ingester
retries with backoff and the backlog shows in `tapewire status`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tapewire.content_encoding import DecodeError, decode
from tapewire.journal.reader import SEGMENT_END, JournalReader
from tapewire.journal.records import to_begin, to_context, to_end
from tapewire.journal.segments import (
    Position,
    backlog_bytes,
    list_segments,
    read_checkpoint,
    segment_path,
    write_checkpoint,
)
from tapewire.model import Exchange, ExchangeEnd, header_value
from tapewire.redact import Redactor
from tapewire.store import Batch, Store

log = logging.getLogger("tapewire.ingest")

BATCH_RECORDS = 256
BATCH_BYTES = 32 * 1024 * 1024


class Ingester:
    def __init__(
        self,
        directory: Path,
        open_store: Callable[[], Store],
        *,
        recorder: str,
        run: str,
        live_segment: Callable[[], int | None] = lambda: None,
        redactor: Redactor | None = None,
    ) -> None:
        self.directory = directory
        self._open_store = open_store
        self.recorder = recorder
        self.run = run
        self.redactor = redactor
        self.reader = JournalReader(directory, live_segment)
        self._store: Store | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stale_checked = False
        self.ingested = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_ingest_at: float | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tapewire-ingest", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Drain what the journal holds (bounded by timeout), then close the store."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None

    def _loop(self) -> None:
        backoff = 0.05
        while True:
            stopping = self._stopping.is_set()
            try:
                moved = self.step()
                backoff = 0.05
            except Exception as e:  # the store's trouble is never the proxy's
                self._fail(e)
                if stopping:
                    return
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if stopping and not moved:
                return
            if not moved:
                self._wake.wait(0.5)
                self._wake.clear()

    def _fail(self, e: BaseException) -> None:
        self.last_error = f"{type(e).__name__}: {e}"
        self.last_error_at = time.time()
        log.warning("ingest failed, will retry: %s", self.last_error)
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None

    # ---- one step --------------------------------------------------------------------------

    def step(self) -> int:
        """Ingest one batch; returns how many records it moved (0: caught up)."""
        if self._store is None:
            self._store = self._open_store()
        store = self._store
        start = read_checkpoint(self.directory)
        batch, end, n, size = Batch(), start, 0, 0
        for record, pos in self.reader.read(start):
            end = pos
            if record is SEGMENT_END:
                continue
            n += 1
            kind = record.kind
            if kind == "begin":
                ex = to_begin(record)
                ex.recorder = self.recorder
                self._redact_request(ex)
                batch.begins.append(ex)
            elif kind == "end":
                end_ = to_end(record)
                self._redact_response(end_)
                batch.ends.append(end_)
            elif kind == "context":
                ctx = to_context(record)
                if self.redactor is not None:  # memory files can hold keys as well as bodies
                    raw, count = self.redactor.redact(json.dumps(ctx.context).encode())
                    ctx.context = json.loads(raw) if count else ctx.context
                batch.contexts.append(ctx)
            elif kind == "drops":
                for reason, count in record.meta["drops"].items():
                    batch.drops[reason] = batch.drops.get(reason, 0) + int(count)
            size += sum(len(s) for s in record.sections)
            if n >= BATCH_RECORDS or size >= BATCH_BYTES:
                break
        if end == start:
            if not self._stale_checked:
                # Caught up with what earlier runs left: their open exchanges never end.
                store.interrupt_stale(self.recorder, self.run)
                self._stale_checked = True
            return 0
        if len(batch):
            store.write(batch)
        write_checkpoint(self.directory, end)
        self._delete_ingested(end)
        self.ingested += n
        self.last_ingest_at = time.time()
        return max(n, 1)

    def _delete_ingested(self, pos: Position) -> None:
        for seq in list_segments(self.directory):
            if seq < pos.segment:
                with contextlib.suppress(FileNotFoundError):
                    segment_path(self.directory, seq).unlink()

    # ---- redaction -------------------------------------------------------------------------

    def _redact_request(self, ex: Exchange) -> None:
        ex.request_sha256 = hashlib.sha256(ex.request_body).hexdigest()
        if self.redactor is None or not ex.request_body:
            return
        body, count = self._redact(
            ex.request_body, header_value(ex.request_headers, "content-encoding")
        )
        if count:
            ex.request_body, ex.redactions = body[0], count
            if body[1]:  # stored decoded: say so where a reader looks for the encoding
                ex.request_headers = [
                    (k, v) for k, v in ex.request_headers if k.lower() != "content-encoding"
                ]

    def _redact_response(self, end: ExchangeEnd) -> None:
        end.response_sha256 = hashlib.sha256(end.response_body).hexdigest()
        if self.redactor is None or not end.response_body:
            return
        body, count = self._redact(
            end.response_body, header_value(end.response_headers, "content-encoding")
        )
        if count:
            end.response_body, end.redactions = body[0], count
            if body[1]:
                end.response_encoding = "identity"

    def _redact(self, data: bytes, encoding: str | None) -> tuple[tuple[bytes, bool], int]:
        """((body to store, whether it had to be decoded), replacements)."""
        assert self.redactor is not None
        decoded = False
        if encoding and encoding.strip().lower() != "identity":
            try:
                data, decoded = decode(data, encoding), True
            except DecodeError:
                return (data, False), 0  # undecodable: nothing we can scan; kept as sent
        redacted, count = self.redactor.redact(data)
        return (redacted, decoded), count

    # ---- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "ingested_records": self.ingested,
            "backlog_bytes": backlog_bytes(self.directory),
            "last_ingest_at": self.last_ingest_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "corrupt_skips": self.reader.corrupt_skips,
        }
