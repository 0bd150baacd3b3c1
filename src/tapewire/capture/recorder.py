"""The tee's far side: turns exchanges into journal records, within a memory budget, and never
lets a recording problem reach the agent's traffic."""

from __future__ import annotations

import logging
import time
from array import array
from collections import Counter
from typing import Any

from tapewire.journal.records import begin_record, drops_record, end_record
from tapewire.journal.writer import JournalWriter
from tapewire.model import ChunkMap, Exchange, Outcome

log = logging.getLogger("tapewire.capture")

EXCHANGE_CAP = 64 * 1024 * 1024
INFLIGHT_CAP = 512 * 1024 * 1024
# Entries in a response's chunk map. Each costs 16 bytes in flight (two C arrays) and about
# 14 in the journal's JSON, so one response holds at most 1 MiB of map (and 2.7 ms to journal
# it) however it arrives: an upstream dribbling a 64 MiB body a byte per read would otherwise
# need 1 GiB. Real streams stay far below it (a long Claude turn is a few thousand reads).
CHUNK_CAP = 65_536


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

    def joined(self) -> bytes:
        """The chunks held so far as one bytes object, kept as the single chunk."""
        if len(self.chunks) > 1:
            self.chunks = [b"".join(self.chunks)]
        return self.chunks[0] if self.chunks else b""

    def take(self) -> bytes:
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self._recorder.inflight_bytes -= self.kept
        self.chunks, self.kept = [], 0
        return body


class Pacing:
    """Where a response's reads from the upstream broke and when each arrived (for a replay
    to serve the same chunking and pacing). On the hot path: two appends to C arrays per
    chunk; the arrival time is kept relative to the first chunk, in ms rounded to 0.1."""

    __slots__ = ("ms", "sizes", "t0")

    def __init__(self) -> None:
        self.sizes = array("q")
        self.ms = array("d")
        self.t0 = 0.0

    def add(self, n: int, at: float) -> None:
        """A chunk of n bytes arrived at `at` (time.perf_counter())."""
        sizes = self.sizes
        if len(sizes) < CHUNK_CAP:
            if not sizes:
                self.t0 = at
            sizes.append(n)
            self.ms.append(round((at - self.t0) * 1000.0, 1))
        else:  # past the cap: the last entry takes the rest, so the sizes still sum up
            sizes[-1] += n

    def map(self) -> ChunkMap:
        return ChunkMap(self.sizes.tolist(), self.ms.tolist())


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
        self.open: dict[str, Flight] = {}  # not yet ended: written as interrupted at stop
        self.exchanges = 0
        self.drops: Counter[str] = Counter()
        self._unjournaled: Counter[str] = Counter()
        self.last_drop: dict[str, Any] | None = None

    def flight(self, ex: Exchange) -> Flight:
        flight = Flight(self, ex)
        self.open[ex.id] = flight
        return flight

    def drop(self, reason: str, detail: str) -> None:
        self.drops[reason] += 1
        self._unjournaled[reason] += 1
        self.last_drop = {"reason": reason, "detail": detail, "at": time.time()}

    def write(self, meta: dict[str, Any], sections: list[bytes]) -> bool:
        """Any other record (a run's context), in order with the exchanges."""
        return self._append(meta, sections)

    def _begin(self, ex: Exchange) -> None:
        self._append(*begin_record(ex))

    def _end(self, ex: Exchange) -> None:
        self.open.pop(ex.id, None)
        self.exchanges += 1
        if self._append(*end_record(ex)) and self._unjournaled:
            pending, self._unjournaled = dict(self._unjournaled), Counter()
            if not self._append(*drops_record(pending)):
                self._unjournaled.update(pending)

    def interrupt_open(self, reason: str) -> int:
        """At stop: every exchange still open is ended as interrupted, with what it has."""
        pending = list(self.open.values())
        for flight in pending:
            flight.finish(Outcome.INTERRUPTED, reason)
        return len(pending)

    def _append(self, meta: dict[str, Any], sections: list[bytes]) -> bool:
        try:
            self.journal.append(meta, sections)
        except OSError as e:
            # The agent's traffic goes on; the record is lost, counted and said.
            self.drop("journal_write_failed", str(e))
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


class Flight:
    """One exchange on its way: its two tees and the begin/end records, each written once."""

    __slots__ = ("begun", "done", "ex", "pacing", "recorder", "request", "response")

    def __init__(self, recorder: Recorder, ex: Exchange) -> None:
        self.recorder = recorder
        self.ex = ex
        self.request = Tee(recorder)
        self.response = Tee(recorder)
        self.pacing = Pacing()  # the response's chunks, as they arrived
        self.begun = False
        self.done = False

    def begin(self) -> None:
        """The request is complete (or will never be): journal it."""
        if self.begun:
            return
        self.begun = True
        ex = self.ex
        ex.request_end_at = time.time()
        ex.request_size = self.request.size
        ex.request_truncated = self.request.truncated
        ex.request_body = self.request.take()
        self.recorder._begin(ex)
        ex.request_body = b""  # journaled; the end record does not carry it again

    def finish(self, outcome: Outcome, error: str | None = None) -> None:
        """The exchange is over: journal its response half, with what arrived."""
        if self.done:
            return
        self.begin()
        self.done = True
        ex = self.ex
        ex.outcome = outcome
        ex.error = error
        ex.response_size = self.response.size
        ex.response_truncated = self.response.truncated
        ex.response_body = self.response.take()
        # A WebSocket exchange's frames say how its response arrived.
        ex.response_chunks = self.pacing.map() if ex.frames is None else None
        self.recorder._end(ex)
