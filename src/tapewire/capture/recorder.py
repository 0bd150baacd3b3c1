"""The tee's far side: turns exchanges into journal records, within a memory budget, and never
lets a recording problem reach the agent's traffic."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from tapewire.journal.records import begin_record, drops_record, end_record
from tapewire.journal.writer import JournalWriter
from tapewire.model import Exchange, Outcome

log = logging.getLogger("tapewire.capture")

EXCHANGE_CAP = 64 * 1024 * 1024
INFLIGHT_CAP = 512 * 1024 * 1024


class Tee:
    """Collects one body's chunks for the record while they are forwarded."""

    __slots__ = ("_recorder", "chunks", "kept", "size", "truncated")

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self.chunks: list[bytes] = []
        self.size = 0  # bytes that crossed the wire
        self.kept = 0  # bytes held for the record
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        n = len(chunk)
        self.size += n
        if self.truncated:
            return
        rec = self._recorder
        if self.kept + n > rec.exchange_cap or rec.inflight_bytes + n > rec.inflight_cap:
            self.truncated = True
            rec.drop("truncated", "body over the capture cap; forwarded in full, recorded in part")
            return
        self.chunks.append(chunk)
        self.kept += n
        rec.inflight_bytes += n

    def take(self) -> bytes:
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self._recorder.inflight_bytes -= self.kept
        self.chunks, self.kept = [], 0
        return body


class Recorder:
    def __init__(
        self,
        journal: JournalWriter,
        *,
        exchange_cap: int = EXCHANGE_CAP,
        inflight_cap: int = INFLIGHT_CAP,
    ) -> None:
        self.journal = journal
        self.exchange_cap = exchange_cap
        self.inflight_cap = inflight_cap
        self.inflight_bytes = 0
        self.open: dict[str, Exchange] = {}  # begun, not yet ended: written as interrupted at stop
        self.exchanges = 0
        self.drops: Counter[str] = Counter()
        self._unjournaled: Counter[str] = Counter()
        self.last_drop: dict[str, Any] | None = None

    def tee(self) -> Tee:
        return Tee(self)

    def drop(self, reason: str, detail: str) -> None:
        self.drops[reason] += 1
        self._unjournaled[reason] += 1
        self.last_drop = {"reason": reason, "detail": detail, "at": time.time()}

    def begin(self, ex: Exchange) -> None:
        self.open[ex.id] = ex
        self._append(*begin_record(ex))

    def end(self, ex: Exchange) -> None:
        if self.open.pop(ex.id, None) is None:
            return  # already ended (e.g. written as interrupted at stop)
        self.exchanges += 1
        if self._append(*end_record(ex)) and self._unjournaled:
            pending, self._unjournaled = dict(self._unjournaled), Counter()
            if not self._append(*drops_record(pending)):
                self._unjournaled.update(pending)

    def interrupt_open(self, reason: str) -> int:
        """At stop: every exchange still open is ended as interrupted, with what it has."""
        pending = list(self.open.values())
        for ex in pending:
            ex.outcome = Outcome.INTERRUPTED
            ex.error = reason
            self.end(ex)
        return len(pending)

    def _append(self, meta: dict[str, Any], sections: list[bytes]) -> bool:
        try:
            self.journal.append(meta, sections)
        except OSError as e:
            # The agent's traffic goes on; the record is lost, counted and said.
            self.drops["journal_write_failed"] += 1
            self._unjournaled["journal_write_failed"] += 1
            self.last_drop = {"reason": "journal_write_failed", "detail": str(e), "at": time.time()}
            log.error("journal write failed, exchange not recorded: %s", e)
            return False
        return True

    def status(self) -> dict[str, Any]:
        return {
            "exchanges": self.exchanges,
            "in_flight": len(self.open),
            "in_flight_bytes": self.inflight_bytes,
            "drops": dict(self.drops),
            "last_drop": self.last_drop,
        }
