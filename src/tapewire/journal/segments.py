"""Where the journal lives on disk: numbered segment files, a checkpoint, an owner lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
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


def read_checkpoint(directory: Path) -> Position:
    try:
        data = json.loads((directory / "checkpoint").read_text())
        return Position(int(data["segment"]), int(data["offset"]))
    except (OSError, ValueError, KeyError, TypeError):
        return Position(0, 0)


def write_checkpoint(directory: Path, pos: Position) -> None:
    tmp = directory / "checkpoint.tmp"
    tmp.write_text(json.dumps({"segment": pos.segment, "offset": pos.offset}))
    tmp.replace(directory / "checkpoint")


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
