"""The web UI's pages against their JSON twins, on read_bench's synthetic store (10,000
sessions, 1,000,000 messages, one main-thread session of 500 turns; built and cached in
bench/results/ by bench/read_bench.py's generator).

`tapewire ui` runs as its own process on a free loopback port, as a user runs it; this process
asks over HTTP (httpx, one keep-alive connection), once to warm up and then `--reps` times per
case, each page right after its API twin so that both see the same machine. Reported: p50 and
p95 wall time of the whole response, its size, and the server's peak RSS (`VmHWM`) at the end.

Cases (the page, then the API answer it is rendered from):
- `sessions`: `/sessions` (100 rows) and `/api/sessions?limit=100`;
- `session_500`: `/sessions/<the 500-turn session>` (timeline, charts) and
  `/api/sessions/<it>/timeline`;
- `turn_full`: one turn with nothing cut short, `/sessions/<it>/turns/250`, against the timeline;
- `search`: `/search?q=file` (50 hits of a word in a third of all texts) and
  `/api/search?q=file&limit=50`;
- `diff`: `/diff?a=<500-turn>&b=<another>` and `/api/diff`.

    python bench/ui_bench.py            # the 10,000-session store
    python bench/ui_bench.py --quick    # 200 sessions, 20,000 messages

Goals (issue 6, set here): the sessions page and a search page under 100 ms p50, the 500-turn
session page under 1 s p50.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from read_bench import COMMON, RESULTS, cached_store, store_parser

GOALS_MS = {"sessions": 100, "session_500": 1000, "search": 100}


def _serve(db: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapewire", "ui", "--db", str(db), "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        if m := re.search(r"UI: (http://\S+)/ ", line):
            return proc, m.group(1)
    raise RuntimeError("tapewire ui did not start")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _time(client: httpx.Client, url: str) -> tuple[float, int]:
    start = time.perf_counter()
    response = client.get(url)
    elapsed = (time.perf_counter() - start) * 1000
    response.raise_for_status()
    return elapsed, len(response.content)


def _quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, round(0.95 * len(ordered)) - 1)]


def main() -> None:
    args = store_parser(__doc__, reps=20).parse_args()
    if args.quick:
        args.sessions, args.messages = 200, 20_000
    db, meta, _ = cached_store(args.sessions, args.messages, args.seed)
    big = meta["big_session"]
    proc, base = _serve(db)
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            other = next(
                s["id"]
                for s in client.get("/api/sessions", params={"limit": 5}).json()["sessions"]
                if s["id"] != big
            )
            cases = {
                "sessions": ("/sessions", "/api/sessions?limit=100"),
                "session_500": (f"/sessions/{big}", f"/api/sessions/{big}/timeline"),
                "turn_full": (f"/sessions/{big}/turns/250", f"/api/sessions/{big}/timeline"),
                "search": (f"/search?q={COMMON}", f"/api/search?q={COMMON}&limit=50"),
                "diff": (f"/diff?a={big}&b={other}", f"/api/diff?a={big}&b={other}"),
            }
            results = []
            for name, (page, api) in cases.items():
                _time(client, page), _time(client, api)  # warm up
                pages, apis = [], []
                for _ in range(args.reps):
                    pages.append(_time(client, page))
                    apis.append(_time(client, api))
                p50, p95 = _quantiles([t for t, _ in pages])
                a50, a95 = _quantiles([t for t, _ in apis])
                goal = GOALS_MS.get(name)
                results.append({
                    "name": name, "page": page, "api": api,
                    "page_p50_ms": round(p50, 1), "page_p95_ms": round(p95, 1),
                    "page_bytes": pages[-1][1],
                    "api_p50_ms": round(a50, 1), "api_p95_ms": round(a95, 1),
                    "api_bytes": apis[-1][1],
                    "goal_ms": goal, "met": None if goal is None else p50 < goal,
                })  # fmt: skip
        rss = _peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    out = {"store": str(db), "sessions": meta["sessions"], "reps": args.reps,
           "server_peak_rss_mb": round(rss, 1), "cases": results}  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"ui_bench-{stamp}.json").write_text(json.dumps(out, indent=2))
    print(f"{meta['sessions']:,} sessions; tapewire ui peak RSS {rss:.0f} MB")
    print(f"{'case':<13}{'page p50':>10}{'p95':>8}{'size':>10}{'api p50':>10}{'p95':>8}"
          f"{'size':>10}  goal")  # fmt: skip
    for c in results:
        goal = (
            ""
            if c["goal_ms"] is None
            else (f"< {c['goal_ms']} ms: {'met' if c['met'] else 'MISSED'}")
        )
        print(f"{c['name']:<13}{c['page_p50_ms']:>8.1f}ms{c['page_p95_ms']:>6.1f}ms"
              f"{c['page_bytes'] / 1024:>8.0f}KB{c['api_p50_ms']:>8.1f}ms{c['api_p95_ms']:>6.1f}ms"
              f"{c['api_bytes'] / 1024:>8.0f}KB  {goal}")  # fmt: skip


if __name__ == "__main__":
    main()
