"""Appends records to the current segment from the proxy's event loop; fsyncs on its own thread.

A write is one os.writev into the page cache (tens of microseconds), so once it returns the
record survives a kill -9 of tapewire; the fsync thread makes it survive a power cut within
the interval. Nothing here awaits.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tapewire.journal.format import encode
from tapewire.journal.segments import list_segments, read_checkpoint, segment_path

SEGMENT_BYTES = 64 * 1024 * 1024


class JournalWriter:
    def __init__(
        self,
        directory: Path,
        *,
        fsync_interval: float = 1.0,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.directory = directory
        self.fsync_interval = fsync_interval
        self.segment_bytes = segment_bytes
        self._fd = -1
        self._seq = 0
        self._size = 0
        self._dirty = False
        self._retired: list[int] = []  # fds rotated out, still to be fsynced and closed
        self._lock = threading.Lock()  # guards _retired and the fd swap against the fsync thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fsync_loop, name="tapewire-fsync", daemon=True)
        self.records_written = 0
        self.bytes_written = 0

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._open_segment()
        self._thread.start()

    def _open_segment(self) -> None:
        # A new run never appends to an old segment: its tail may be torn by a kill. Nor does
        # it reuse the number of one the ingester finished and deleted: the checkpoint still
        # points into it, and the new segment's first bytes would be skipped as read.
        existing = list_segments(self.directory)
        done = read_checkpoint(self.directory).segment
        self._seq = max([self._seq, done, *existing]) + 1
        fd = os.open(
            segment_path(self.directory, self._seq),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
            0o600,
        )
        with self._lock:
            if self._fd >= 0:
                self._retired.append(self._fd)
            self._fd = fd
            self._size = 0

    def append(self, meta: dict[str, Any], sections: Sequence[bytes] = ()) -> None:
        """Write one record; raises OSError (disk full, I/O error) with the segment left clean."""
        buffers = encode(meta, sections)
        length = sum(len(b) for b in buffers)
        if self._size and self._size + length > self.segment_bytes:
            self._open_segment()
        try:
            written = os.writev(self._fd, buffers)
        except OSError:
            self._undo_partial()
            raise
        if written != length:
            self._undo_partial()
            raise OSError(f"journal: short write ({written} of {length} bytes)")
        self._size += length
        self._dirty = True
        self.records_written += 1
        self.bytes_written += length

    def _undo_partial(self) -> None:
        """Cut a half-written record off so later records stay aligned; else move on."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            with contextlib.suppress(OSError):
                self._open_segment()

    @property
    def segment(self) -> int:
        return self._seq

    def sync(self) -> None:
        with self._lock:
            fd, retired, self._retired = self._fd, self._retired, []
            dirty, self._dirty = self._dirty, False
        for old in retired:
            with contextlib.suppress(OSError):
                os.fsync(old)
            os.close(old)
        if dirty and fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(fd)

    def _fsync_loop(self) -> None:
        while not self._stop.wait(self.fsync_interval):
            self.sync()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sync()
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
