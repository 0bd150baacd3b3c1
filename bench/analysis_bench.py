"""What analysis costs: live, as turns are derived, and over a whole store.

Live: derive_bench's synthetic Claude-Code-shaped session (N turns, default 2,000, its
context growing to ~150 KB) is written raw to a store, copied, and derived twice, with and
without the analysis of the touched sessions after each batch (`Deriver(analyze=...)`), in
batches of B exchanges: B=1 is a live agent (each turn its own batch, the worst case: the
whole session is analysed again after every turn), B=128 the ingester catching up on a
backlog. Reported: turns/s each way and the slowdown. Goal (issue 8): live analysis slows
ingestion by no more than 10 %.

Store: `query.findings` (what `tapewire analyze --since` runs) over every session of
read_bench's 10,000-session, 1,000,000-message store (built and cached by read_bench.py).

    python bench/analysis_bench.py                     # both
    python bench/analysis_bench.py --turns 500 --quick  # small
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from derive_bench import build as build_session
from read_bench import cached_store
from tapewire import query
from tapewire.analysis import Thresholds
from tapewire.derive import Deriver
from tapewire.store import open_store


def derive_in_batches(path: Path, batch: int, analyze: bool) -> dict[str, Any]:
    store = open_store(path)
    order = store.derive_order()
    deriver = Deriver(store, analyze=analyze)
    start = time.perf_counter()
    for i in range(0, len(order), batch):
        deriver.derive_ids(order[i : i + batch])
    deriver.analyse_pending()  # as the ingester does once it has caught up
    elapsed = time.perf_counter() - start
    found = len(store.finding_rows())
    store.close()
    return {"turns": len(order), "seconds": round(elapsed, 2),
            "turns_per_second": round(len(order) / elapsed, 1), "findings": found,
            "errors": deriver.errors}  # fmt: skip


def live(turns: int, batches: list[int]) -> list[dict[str, Any]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.db"
        build_session(raw, turns, 150_000)
        for batch in batches:
            runs = {}
            for analyze in (False, True):
                copy = Path(tmp) / f"b{batch}-{analyze}.db"
                shutil.copy(raw, copy)
                runs[analyze] = derive_in_batches(copy, batch, analyze)
            slowdown = runs[False]["turns_per_second"] / runs[True]["turns_per_second"] - 1
            out.append({"batch": batch, "without": runs[False], "with": runs[True],
                        "slowdown": round(slowdown, 3), "goal_met": slowdown <= 0.10})  # fmt: skip
    return out


def whole_store(sessions: int, messages: int) -> dict[str, Any]:
    db, _, _ = cached_store(sessions, messages, seed=1)
    store = open_store(db, readonly=True)
    try:
        start = time.perf_counter()
        history = query.analysis_history(store)
        history_s = time.perf_counter() - start
        ids = [r["id"] for r in store.session_rows()]
        found = query.findings(store, ids, Thresholds(), history)
        elapsed = time.perf_counter() - start
    finally:
        store.close()
    kinds = Counter(f["kind"] for fs in found.values() for f in fs)
    severities = Counter(f["severity"] for fs in found.values() for f in fs)
    return {"sessions": len(ids), "seconds": round(elapsed, 1),
            "history_seconds": round(history_s, 2),
            "ms_per_session": round(elapsed / max(len(ids), 1) * 1000, 2),
            "findings": sum(kinds.values()), "by_kind": dict(kinds.most_common()),
            "by_severity": dict(severities)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--batches", default="1,128", help="derive batch sizes to try")
    parser.add_argument("--quick", action="store_true", help="the 200-session store")
    parser.add_argument("--no-store", action="store_true", help="skip the whole-store part")
    args = parser.parse_args()
    result: dict[str, Any] = {"live": live(args.turns, [int(b) for b in args.batches.split(",")])}
    if not args.no_store:
        sessions, messages = (200, 20_000) if args.quick else (10_000, 1_000_000)
        result["store"] = whole_store(sessions, messages)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
