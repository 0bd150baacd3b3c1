"""Where the journal lives on disk: numbered segment files, a checkpoint, an owner lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from tapewire.model import new_id

SEGMENT_SUFFIX = ".twj"


@dataclass(frozen=True, order=True)
class Position:
    """How far the ingester has got: everything before (segment, offset) is in the store."""

    segment: int
    offset: int


def segment_path(directory: Path, seq: int) -> Path:
    return directory / f"seg-{seq:016d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    seqs = []
    for p in directory.glob(f"seg-*{SEGMENT_SUFFIX}"):
        with contextlib.suppress(ValueError):
            seqs.append(int(p.stem[4:]))
    return sorted(seqs)


_CHECKPOINT_WIDTH = 64  # one fixed-width line, rewritten in place: one sector, no rename


def read_checkpoint(directory: Path) -> Position:
    try:
        segment, offset = (directory / "checkpoint").read_text().split()
        return Position(int(segment), int(offset))
    except (OSError, ValueError):
        return Position(0, 0)


def write_checkpoint(directory: Path, pos: Position) -> None:
    """Rewritten in place: a rename per batch costs a data flush on ext4. A torn write (a
    power cut) reads as no checkpoint, and re-ingesting is harmless: the store is idempotent."""
    line = f"{pos.segment} {pos.offset}".ljust(_CHECKPOINT_WIDTH - 1) + "\n"
    fd = os.open(directory / "checkpoint", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, line.encode(), 0)
    finally:
        os.close(fd)


def backlog_bytes(directory: Path) -> int:
    """Journal bytes not yet in the store."""
    pos = read_checkpoint(directory)
    total = 0
    for seq in list_segments(directory):
        if seq < pos.segment:
            continue
        try:
            size = segment_path(directory, seq).stat().st_size
        except OSError:
            continue
        total += size - pos.offset if seq == pos.segment else size
    return max(total, 0)


def journal_id(directory: Path) -> str:
    """A stable id for this journal, so a store shared by many proxies can tell their records apart."""
    path = directory / "journal-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        ident = new_id()
        path.write_text(ident)
        return ident


class JournalLocked(RuntimeError):
    pass


class OwnerLock:
    """One live writer per journal directory; the lock dies with the process, even on kill -9."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalLocked(
                f"journal {self.path.parent} is in use by another tapewire process"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
