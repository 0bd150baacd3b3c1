"""Reads records from a checkpoint onwards, whether the writer is live or long dead."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from tapewire.journal.format import HEAD_SIZE, MAGIC, Corrupt, Record, Torn, decode_at, resync
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

    def read(
        self, start: Position, chunk: int = 4 * 1024 * 1024
    ) -> Iterator[tuple[Record, Position]]:
        """Records after start, each with the position just past it. Lazy, and read in
        chunks: a caller that stops early has read little, however large the backlog."""
        for seq in list_segments(self.directory):
            if seq < start.segment:
                continue
            offset = start.offset if seq == start.segment else 0
            live = seq == self.live_segment()  # asked before reading: a rotation may follow
            try:
                f = segment_path(self.directory, seq).open("rb")
            except FileNotFoundError:
                continue
            with f:
                f.seek(offset)
                data, pos, eof = b"", 0, False
                while True:
                    try:
                        record, end = decode_at(data, pos)
                    except Torn:
                        if eof:
                            break
                        more = f.read(max(chunk, _wanted(data, pos)))
                        eof = not more
                        offset += pos
                        data, pos = data[pos:] + more, 0
                        continue
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


def _wanted(data: bytes, pos: int) -> int:
    """Bytes still missing for the record that starts at pos, when its header says."""
    if len(data) - pos >= HEAD_SIZE and data[pos : pos + 4] == MAGIC:
        length: int = struct.unpack_from("<I", data, pos + 4)[0]
        return HEAD_SIZE + length - (len(data) - pos)
    return 0
