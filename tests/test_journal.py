"""The journal: records survive as written, a torn or corrupt stretch is skipped, not fatal,
and the ingester resumes from its checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tapewire.journal.format import MAGIC, decode_at, encode
from tapewire.journal.reader import SEGMENT_END, JournalReader
from tapewire.journal.segments import (
    JournalLocked,
    OwnerLock,
    Position,
    backlog_bytes,
    list_segments,
    segment_path,
    write_checkpoint,
)
from tapewire.journal.writer import JournalWriter


def _records(directory: Path, live: int | None = None) -> list[dict[str, object]]:
    reader = JournalReader(directory, lambda: live)
    return [r.meta for r, _ in reader.read(Position(0, 0)) if r is not SEGMENT_END]


def test_round_trip_with_binary_sections(tmp_path: Path) -> None:
    body = bytes(range(256)) * 100
    buf = b"".join(encode({"kind": "begin", "id": "x", "h": [["é", "ü"]]}, [body, b""]))
    rec, end = decode_at(buf, 0)
    assert end == len(buf)
    assert rec.meta["h"] == [["é", "ü"]]
    assert rec.sections == [body, b""]


def test_a_new_writer_never_appends_to_an_old_segment(tmp_path: Path) -> None:
    for i in range(2):
        w = JournalWriter(tmp_path)
        w.open()
        w.append({"kind": "x", "i": i})
        w.close()
    assert list_segments(tmp_path) == [1, 2]
    assert [m["i"] for m in _records(tmp_path)] == [0, 1]


def test_a_new_writer_never_reuses_a_consumed_segments_number(tmp_path: Path) -> None:
    """The ingester deletes a segment it has finished, leaving the checkpoint inside it. A new
    run that numbered its segment 1 again would have its first records skipped as read."""
    w = JournalWriter(tmp_path)
    w.open()
    w.append({"kind": "x", "i": 0}, [b"y" * 4096])
    w.close()
    size = segment_path(tmp_path, 1).stat().st_size
    write_checkpoint(tmp_path, Position(1, size))
    segment_path(tmp_path, 1).unlink()  # consumed
    w = JournalWriter(tmp_path)
    w.open()
    w.append({"kind": "x", "i": 1})
    w.close()
    assert list_segments(tmp_path) == [2]
    assert backlog_bytes(tmp_path) == segment_path(tmp_path, 2).stat().st_size
    reader = JournalReader(tmp_path, lambda: None)
    fresh = [r.meta for r, _ in reader.read(Position(1, size)) if r is not SEGMENT_END]
    assert [m["i"] for m in fresh] == [1]


def test_torn_tail_of_a_dead_writer_is_skipped(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path)
    w.open()
    w.append({"kind": "x", "i": 1})
    w.close()
    path = segment_path(tmp_path, 1)
    whole = b"".join(encode({"kind": "x", "i": 2}, [b"y" * 100]))
    with path.open("ab") as f:
        f.write(whole[: len(whole) // 2])  # killed mid-write
    reader = JournalReader(tmp_path)
    got = list(reader.read(Position(0, 0)))
    assert [r.meta.get("i") for r, _ in got if r is not SEGMENT_END] == [1]
    assert got[-1] == (SEGMENT_END, Position(2, 0))
    assert reader.corrupt_skips == 1


def test_torn_tail_of_the_live_segment_waits(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path)
    w.open()
    w.append({"kind": "x", "i": 1})
    whole = b"".join(encode({"kind": "x", "i": 2}))
    with segment_path(tmp_path, 1).open("ab") as f:
        f.write(whole[:5])
    reader = JournalReader(tmp_path, lambda: w.segment)
    got = list(reader.read(Position(0, 0)))
    assert [r.meta["i"] for r, _ in got] == [1]  # no SEGMENT_END: more may come
    assert reader.corrupt_skips == 0
    w.close()


def test_corrupt_bytes_in_the_middle_are_skipped(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path)
    w.open()
    for i in range(3):
        w.append({"kind": "x", "i": i}, [b"body-%d" % i])
    w.close()
    path = segment_path(tmp_path, 1)
    data = bytearray(path.read_bytes())
    second = data.find(MAGIC, 1)
    data[second + 20] ^= 0xFF  # flip a byte inside record 1
    path.write_bytes(bytes(data))
    assert [m["i"] for m in _records(tmp_path)] == [0, 2]


def test_write_failure_leaves_the_segment_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = JournalWriter(tmp_path)
    w.open()
    w.append({"kind": "x", "i": 1})
    real = os.writev

    def short(fd: int, buffers: list[bytes]) -> int:
        return real(fd, [b"".join(buffers)[:7]])  # the disk filled mid-record

    monkeypatch.setattr(os, "writev", short)
    with pytest.raises(OSError, match="short write"):
        w.append({"kind": "x", "i": 2})
    monkeypatch.setattr(os, "writev", real)
    w.append({"kind": "x", "i": 3})
    w.close()
    assert [m["i"] for m in _records(tmp_path)] == [1, 3]


def test_rotation(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path, segment_bytes=300)
    w.open()
    for i in range(10):
        w.append({"kind": "x", "i": i}, [b"z" * 100])
    w.close()
    assert len(list_segments(tmp_path)) > 3
    assert [m["i"] for m in _records(tmp_path)] == list(range(10))


def test_one_writer_per_journal(tmp_path: Path) -> None:
    a, b = OwnerLock(tmp_path), OwnerLock(tmp_path)
    a.acquire()
    with pytest.raises(JournalLocked, match="in use"):
        b.acquire()
    a.release()
    b.acquire()
    b.release()


def test_reading_in_small_chunks_sees_every_record(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path)
    w.open()
    for i in range(50):
        w.append({"kind": "x", "i": i}, [bytes([i]) * (i * 97)])
    w.close()
    path = segment_path(tmp_path, 1)
    data = bytearray(path.read_bytes())
    data[data.find(MAGIC, 2000) + 30] ^= 0xFF  # and one corrupt record among them
    path.write_bytes(bytes(data))
    reader = JournalReader(tmp_path)
    got = [r for r, _ in reader.read(Position(0, 0), chunk=64) if r is not SEGMENT_END]
    assert len(got) == 49
    assert all(r.sections[0] == bytes([r.meta["i"]]) * (r.meta["i"] * 97) for r in got)
    assert reader.corrupt_skips >= 1


def test_reading_from_a_checkpoint_mid_segment(tmp_path: Path) -> None:
    w = JournalWriter(tmp_path)
    w.open()
    for i in range(5):
        w.append({"kind": "x", "i": i})
    w.close()
    positions = [p for r, p in JournalReader(tmp_path).read(Position(0, 0)) if r is not SEGMENT_END]
    rest = JournalReader(tmp_path).read(positions[1], chunk=16)
    assert [r.meta["i"] for r, _ in rest if r is not SEGMENT_END] == [2, 3, 4]
