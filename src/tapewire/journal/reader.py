"""Reads records from a checkpoint onwards, whether the writer is live or long dead."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from tapewire.journal.format import Corrupt, Record, Torn, decode_at, resync
from tapewire.journal.segments import Position, list_segments, segment_path

# Yielded when a finished segment has been read to its end, so a checkpoint can move past it
# even when it ended in debris.
SEGMENT_END = Record({"kind": "segment-end"}, [])


class JournalReader:
    def __init__(
        self, directory: Path, live_segment: Callable[[], int | None] = lambda: None
    ) -> None:
        """live_segment: the one a writer in this process still appends to (its tail may be
        mid-write); every other segment is finished, so a torn tail there is debris."""
        self.directory = directory
        self.live_segment = live_segment
        self.corrupt_skips = 0

    def read(self, start: Position) -> Iterator[tuple[Record, Position]]:
        """Records after start, each with the position just past it. Lazy: a caller that
        stops consuming reads no further segments."""
        for seq in list_segments(self.directory):
            if seq < start.segment:
                continue
            offset = start.offset if seq == start.segment else 0
            live = seq == self.live_segment()  # asked before reading: a rotation may follow
            try:
                with segment_path(self.directory, seq).open("rb") as f:
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:
                continue
            pos = 0
            while pos < len(data):
                try:
                    record, end = decode_at(data, pos)
                except Torn:
                    break
                except Corrupt:
                    self.corrupt_skips += 1
                    pos = resync(data, pos)
                    continue
                pos = end
                yield record, Position(seq, offset + pos)
            if live:
                return  # its torn tail is a record still being written
            if pos < len(data):
                self.corrupt_skips += 1  # a finished segment's torn tail: cut off by a kill
            yield SEGMENT_END, Position(seq + 1, 0)
