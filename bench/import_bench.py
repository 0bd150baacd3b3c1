"""Transcript import throughput: records/s and sessions/s of `tapewire import claude-code`.

Generates N synthetic Claude Code sessions (deterministic) of T turns each into a temporary
directory, in the format of tests/fixtures/transcripts/: per turn a user prompt or tool
result, then an assistant message split over three records (thinking, text, tool_use) with
the usage repeated on each, as Claude Code writes them. Then imports them into a fresh SQLite
store (timed: reading, synthesizing the exchanges, storing and deriving them).

    python bench/import_bench.py                          # 200 sessions x 100 turns
    python bench/import_bench.py --sessions 20 --turns 50 # quick
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from pathlib import Path

from tapewire.importers import import_claude_code, list_files
from tapewire.store import open_store


def _session(root: Path, n: int, turns: int, rnd: random.Random) -> int:
    sid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
    project = root / f"-home-dev-project{n % 10}"
    project.mkdir(exist_ok=True)
    base = 1_780_000_000 + n * 10_000
    records = []
    parent: str | None = None
    clock = 0

    def rec(kind: str, **fields: object) -> dict[str, object]:
        nonlocal parent, clock
        clock += rnd.randint(1, 5)
        uid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + clock)) + ".000Z"
        r = {"parentUuid": parent, "isSidechain": False, "userType": "external",
             "cwd": f"/home/dev/project{n % 10}", "sessionId": sid, "version": "2.0.14",
             "gitBranch": "main", "type": kind, "uuid": uid, "timestamp": when, **fields}  # fmt: skip
        parent = uid
        records.append(r)
        return r

    rec("user", message={"role": "user", "content": f"Task {n}: improve module {n % 7}."})
    for t in range(turns):
        mid, req = f"msg_{n:05d}{t:05d}", f"req_{n:05d}{t:05d}"
        usage = {"input_tokens": 5, "cache_creation_input_tokens": 300 + t,
                 "cache_read_input_tokens": 1000 * t, "output_tokens": 80}  # fmt: skip
        call = f"toolu_{n:05d}{t:05d}"
        blocks = [
            {
                "type": "thinking",
                "thinking": f"Step {t}: " + "reason " * rnd.randint(5, 40),
                "signature": "sig",
            },
            {"type": "text", "text": f"Reading file {t}."},
            {
                "type": "tool_use",
                "id": call,
                "name": "Read",
                "input": {"file_path": f"/home/dev/project/src/m{t}.py"},
            },
        ]
        for i, block in enumerate(blocks):
            rec("assistant", requestId=req, message={
                "id": mid, "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                "content": [block], "stop_reason": "tool_use" if i == 2 else None,
                "stop_sequence": None, "usage": usage})  # fmt: skip
        body = "\n".join(f"line {i}: " + "x" * rnd.randint(10, 80) for i in range(20))
        rec("user", message={"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call, "content": body}]},
            toolUseResult={"type": "text", "file": {"filePath": f"m{t}.py"}})  # fmt: skip
    with (project / f"{sid}.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    return len(records)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--turns", type=int, default=100)
    args = ap.parse_args()
    rnd = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "projects"
        root.mkdir()
        records = sum(_session(root, n, args.turns, rnd) for n in range(args.sessions))
        size = sum(p.stat().st_size for p in root.rglob("*.jsonl"))
        store = open_store(Path(tmp) / "bench.db")
        files = list_files("claude-code", [root])
        start = time.perf_counter()
        report = import_claude_code(store, files)
        took = time.perf_counter() - start
        again = time.perf_counter()
        import_claude_code(store, files)
        reimport = time.perf_counter() - again
        db = store.size_bytes()
        store.close()
    print(
        f"{args.sessions} sessions, {records:,} records ({size / 1e6:.1f} MB), "
        f"{report.synthesized:,} exchanges: {took:.1f} s = {records / took:,.0f} records/s, "
        f"{args.sessions / took:.1f} sessions/s, {report.synthesized / took:,.0f} turns/s; "
        f"re-import (nothing new) {reimport:.1f} s = {records / reimport:,.0f} records/s; "
        f"store {db / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    main()
