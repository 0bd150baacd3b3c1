"""The ingester: moves journal records into the store, in batches, checkpointed.

It runs in a worker process of its own (`journal/worker.py`): parsing, hashing, redacting and
compressing bodies hold the GIL, and the proxy's event loop must never wait for them.
A store that fails (unwritable, full, down) leaves the records in the journal: the ingester
retries with backoff and the backlog shows in `tapewire status`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from tapewire.content_encoding import DecodeError, decode
from tapewire.derive import Deriver
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
from tapewire.model import Exchange, ExchangeEnd, header_value, ws_messages
from tapewire.pricing import PriceTable
from tapewire.redact import Redactor
from tapewire.store import Batch, Store
from tapewire.store.blobs import shared_prefix, shared_suffix

log = logging.getLogger("tapewire.ingest")

_RESCAN_MARGIN = 8 * 1024  # longer than any secret the rules match (a 4096-bit PEM key: ~3.4 KB)
_CLEAN_CHAINS = 64
_CLEAN_PER_CHAIN = 4
BATCH_RECORDS = 256
STATUS_FILE = "ingest.json"
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
        prices: PriceTable | None = None,
        export: Any = None,
        retain: float | None = None,
    ) -> None:
        self.directory = directory
        self.export = export  # a LiveExport: derived turns out as OpenTelemetry spans
        self._open_store = open_store
        self.recorder = recorder
        self.run_id = run
        self.redactor = redactor
        self.reader = JournalReader(directory, live_segment)
        self._store: Store | None = None
        self._deriver: Deriver | None = None
        self.prices = prices
        self._stale_checked = False
        self._published = 0.0
        # conversation -> its recent bodies that held no secret (main thread, subagents, side calls)
        self._clean: OrderedDict[str, list[bytes]] = OrderedDict()
        self.more = False  # the last step stopped at the batch limit, not at the journal's end
        self.ingested = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_ingest_at: float | None = None
        self.retain = retain  # seconds: sessions that ended longer ago are pruned, daily
        self._next_prune = 0.0
        self.last_prune: dict[str, Any] | None = None

    def run(
        self,
        stopping: Callable[[], bool],
        abandon: Callable[[], bool] = lambda: False,
        poll: float = 0.1,
    ) -> None:
        """Ingest until stopping() turns true, then drain what is left and return; return at
        once when abandon() does. Store errors are retried with backoff while running."""
        backoff = poll
        while not abandon():
            stop = stopping()
            try:
                moved = self.step()
                backoff = poll
            except Exception as e:  # the store's trouble is never the proxy's
                self._fail(e)
                self.publish_status()
                if stop:
                    break
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self.more:
                continue  # a backlog: keep going
            if stop and not moved:
                break
            if not moved and self.retain is not None and time.time() >= self._next_prune:
                self._prune()
            self.publish_status(every=0.5)
            if not stop:
                time.sleep(poll)  # let a batch gather: one transaction for many exchanges
        self.publish_status()
        if self._deriver is not None and self._store is not None:
            with contextlib.suppress(Exception):  # the last findings and spans, then close
                self._deriver.analyse_pending()
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None

    def _prune(self) -> None:
        """`serve --retain`: once caught up, and then daily. Here, in the one process that
        writes this journal's bodies, so that no body it still uses as a dictionary goes."""
        from tapewire.maintenance import prune

        assert self._store is not None
        try:
            gone = prune(self._store, time.time() - (self.retain or 0))
        except Exception as e:  # retention's trouble must not stop ingestion
            log.warning("pruning failed, will retry in an hour: %s: %s", type(e).__name__, e)
            self._next_prune = time.time() + 3600
            return
        self._next_prune = time.time() + 86400
        self.last_prune = {"at": time.time(), **gone}
        if gone["sessions"] or gone["exchanges"]:
            log.info("pruned %d sessions, %d exchanges", gone["sessions"], gone["exchanges"])

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
        self.more = False
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
                self.more = True
                break
        if end == start:
            if not self._stale_checked:
                # Caught up with what earlier runs left: their open exchanges never end.
                store.interrupt_stale(self.recorder, self.run_id)
                self._stale_checked = True
                self._deriver_for(store).catch_up()
            # Caught up with the journal: the findings catch up with the turns.
            self._deriver_for(store).analyse_pending()
            return 0
        if len(batch):
            store.write(batch)
            if batch.ends:
                self._derive(store, [e.id for e in batch.ends])
        write_checkpoint(self.directory, end)
        self._delete_ingested(end)
        self.ingested += n
        self.last_ingest_at = time.time()
        return max(n, 1)

    def _derive(self, store: Store, ids: list[str]) -> None:
        self._deriver_for(store).derive_ids(ids)

    def _deriver_for(self, store: Store) -> Deriver:
        if self._deriver is None or self._deriver.store is not store:
            self._deriver = Deriver(store, self.prices, export=self.export)
        return self._deriver

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
        encoding = header_value(ex.request_headers, "content-encoding")
        if not encoding and self._clean_beyond_previous(ex):
            return
        body, decoded, count = self._redact(ex.request_body, encoding)
        if count:
            ex.request_body, ex.redactions = body, count
            if decoded:  # stored decoded; the headers still say how it crossed the wire
                ex.request_encoding = "identity"

    def _clean_beyond_previous(self, ex: Exchange) -> bool:
        """Agents resend the conversation every turn: when a recent body of this conversation
        held no secret, only what changed since (with a margin either side, for a secret cut
        in two) needs scanning. A 150 KB body then costs its new kilobytes, not 0.8 ms."""
        assert self.redactor is not None
        key, body = ex.conversation_key(), ex.request_body
        recent = self._clean.setdefault(key, [])
        self._clean.move_to_end(key)
        while len(self._clean) > _CLEAN_CHAINS:
            self._clean.popitem(last=False)
        # Claude Code sends its messages before the (unchanging) system prompt and tools:
        # what is new sits between a shared prefix and a shared suffix.
        start, end = 0, len(body)
        if recent:
            prefix, i = max((shared_prefix(c, body), i) for i, c in enumerate(recent))
            suffix = min(shared_suffix(recent[i], body), len(body) - prefix)
            start, end = prefix, len(body) - suffix
        start, end = max(0, start - _RESCAN_MARGIN), min(len(body), end + _RESCAN_MARGIN)
        _, count = self.redactor.redact(body[start:end] if (start, end) != (0, len(body)) else body)
        if count:
            return False
        recent.append(body)
        del recent[:-_CLEAN_PER_CHAIN]
        return True

    def _redact_response(self, end: ExchangeEnd) -> None:
        end.response_sha256 = hashlib.sha256(end.response_body).hexdigest()
        if self.redactor is None or not end.response_body:
            return
        if end.frames is not None:
            self._redact_messages(end)
            return
        body, decoded, count = self._redact(
            end.response_body, header_value(end.response_headers, "content-encoding")
        )
        if count:
            if decoded or len(body) != len(end.response_body):
                # The chunk map partitions the bytes as they crossed the wire: once the stored
                # body is shorter, longer or decoded, its offsets no longer fall on the same
                # bytes, so it goes rather than mislead a replay. A same-length redaction keeps
                # every offset, and the map with it.
                end.response_chunks = None
            end.response_body, end.redactions = body, count
            if decoded:
                end.response_encoding = "identity"

    def _redact_messages(self, end: ExchangeEnd) -> None:
        """A WebSocket reply, message by message: a secret never spans two, and each frame's
        size then still says where its message lies in the stored body."""
        assert self.redactor is not None and end.frames is not None
        pieces = iter(ws_messages(end.frames, end.response_body, "upstream"))
        frames, body, total = [], [], 0
        for f in end.frames:
            if f.source == "upstream" and not f.control:
                piece, count = self.redactor.redact(next(pieces))
                body.append(piece)
                total += count
                frames.append(replace(f, size=len(piece)) if count else f)
            else:
                frames.append(f)
        if total:
            end.frames, end.response_body, end.redactions = frames, b"".join(body), total

    def _redact(self, data: bytes, encoding: str | None) -> tuple[bytes, bool, int]:
        """(body to store, whether it had to be decoded, replacements)."""
        assert self.redactor is not None
        decoded = False
        if encoding and encoding.strip().lower() != "identity":
            # A salvaged (cut) stream is scanned too: if it held a secret it is stored decoded
            # and redacted, its undecodable tail lost, for a secret is never stored. An
            # undecodable body is scanned as it is: a false label can hide plain text.
            with contextlib.suppress(DecodeError):
                data, decoded = decode(data, encoding).data, True
        redacted, count = self.redactor.redact(data)
        return redacted, decoded, count

    # ---- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "ingested_records": self.ingested,
            "backlog_bytes": backlog_bytes(self.directory),
            "last_ingest_at": self.last_ingest_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "corrupt_skips": self.reader.corrupt_skips,
            "last_prune": self.last_prune,
        }

    def publish_status(self, every: float = 0.0) -> None:
        """For the proxy process (and `tapewire status`), which cannot ask this one."""
        now = time.monotonic()
        if now - self._published < every:
            return
        self._published = now
        path = self.directory / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(self.status()))
            tmp.replace(path)


def read_status(directory: Path) -> dict[str, Any]:
    try:
        status: dict[str, Any] = json.loads((directory / STATUS_FILE).read_text())
    except (OSError, ValueError):
        status = {"ingested_records": 0, "last_ingest_at": None, "last_error": None,
                  "last_error_at": None, "corrupt_skips": 0}  # fmt: skip
    status["backlog_bytes"] = backlog_bytes(directory)
    return status
