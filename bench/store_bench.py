"""PostgreSQL against SQLite: ingest throughput, and the read side at 1,000,000 messages.

**Ingest.** Two journals are recorded once, by two real `tapewire serve` processes in front of
tests/fakeprovider.py's fake (in this process, the 17 recorded Claude Code turns loaded): N
names (default 60) each send the 17 turns in order under `/s/<name>/`, the names alternating
between the two proxies, 8 names at once. Each name's conversation is its own: its first
message starts with `[run k] ` in every turn, so its nodes and request bodies are new, as
another agent's would be (the fake answers each with the recorded turn's response). The
proxies' database is a PostgreSQL URL on a closed port, so their ingest workers store nothing
and every record stays in the journals; then the proxies are stopped.

For each case, copies of the two journals are ingested into a fresh, migrated store by
`tapewire.journal.ingest.Ingester`, what the ingest worker runs (the default redaction rules,
storing, compressing, deriving, the findings once caught up), in a process of its own, timed
from its first record to caught up. The store must then hold every exchange, complete and
derived. Cases: SQLite, one ingester (both journals in turn); PostgreSQL, the same;
PostgreSQL, two ingesters at once, one per journal, as two proxies sharing a database.

**Read side.** bench/read_bench.py's synthetic store (10,000 sessions, ~1,000,000 messages: its
generator, its `write_derived` batches of 200 in time order, its generating process alongside)
written into a PostgreSQL schema instead of a SQLite file (the writer with
`synchronous_commit = off`, as read_bench's SQLite writer has `synchronous = OFF`), then
`VACUUM ANALYZE` of its tables (not timed), then read_bench's measurements on it, each in a
fresh process: the first sessions page, the page 5,000 sessions down, the 500-turn session,
search for a common word, a rare marker, and the common word ranked. The schema stays in the
database and is reused by later runs, keyed as read_bench keys its file plus a hash of the
PostgreSQL schema and of the code that indexes texts for search;
`--regenerate` builds it again.

    python bench/store_bench.py                    # ingest 1,020 exchanges; read side at 1,000,000 messages
    python bench/store_bench.py --quick            # 12 names (204 exchanges); 200 sessions, 20,000 messages
    python bench/store_bench.py --no-read          # ingest only (--no-ingest: read side only)
    python bench/store_bench.py --postgres URL     # default: $TAPEWIRE_BENCH_POSTGRES, else the test database

The PostgreSQL server is whatever URL names, with its own settings (the figures of a default
Debian PostgreSQL 15: shared_buffers 128 MB, synchronous_commit on). Everything binds or
connects to 127.0.0.1; every subprocess is stopped when the script ends, also on error or
SIGTERM/Ctrl-C. Results: a table, and JSON in bench/results/store_bench-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import inspect
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

import read_bench  # noqa: E402
from fakeprovider import (  # noqa: E402
    FakeProvider,
    Received,
    RecordedTurn,
    load_recording,
    unreachable_port,
)
from servecli import ServeProcess  # noqa: E402
from tapewire.journal.ingest import Ingester  # noqa: E402
from tapewire.journal.reader import SEGMENT_END, JournalReader  # noqa: E402
from tapewire.journal.segments import Position, backlog_bytes, journal_id  # noqa: E402
from tapewire.model import new_id  # noqa: E402
from tapewire.pricing import PriceTable  # noqa: E402
from tapewire.redact import Redactor  # noqa: E402
from tapewire.store import open_store, postgres, postgres_schema  # noqa: E402
from tapewire.store.location import DbRef  # noqa: E402
from tapewire.store.postgres import close_pools  # noqa: E402

RESULTS = HERE / "results"
RECORDING = ROOT / "tests" / "fixtures" / "recordings" / "claude-20260727-019fa57e"
DEFAULT_POSTGRES = os.environ.get(
    "TAPEWIRE_BENCH_POSTGRES",
    os.environ.get(
        "TAPEWIRE_TEST_POSTGRES", "postgresql://tapewire:tapewire@127.0.0.1:5432/tapewire_test"
    ),
)
CONCURRENCY = 8  # names sending at once while the journals are recorded


class _Forget(list[Received]):
    """A `received` list that keeps nothing (as bench/fake_server.py's)."""

    def append(self, item: Received) -> None:
        pass


def with_schema(base: str, schema: str) -> str:
    """The URL of a schema of the database `base` names (its search_path); its connections
    say `store_bench` in pg_stat_activity."""
    return (
        f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
        "&application_name=store_bench"
    )


def _admin(base: str, *statements: str) -> None:
    with psycopg.connect(base, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql.encode())


def _peak_rss_mb() -> float:
    return read_bench._peak_rss_mb()


# ---- ingest: recording the journals -----------------------------------------------------------


def _vary(body: bytes, k: int) -> bytes:
    """The request as name k's own conversation: its first message begins `[run k] `."""
    doc = json.loads(body)
    first = doc["messages"][0]
    tag = f"[run {k}] "
    if isinstance(first["content"], str):
        first["content"] = tag + first["content"]
    else:
        part = next(p for p in first["content"] if p.get("type") == "text")
        part["text"] = tag + part["text"]
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _headers(turn: RecordedTurn) -> list[tuple[str, str]]:
    return [(k, v) for k, v in turn.request_headers if k.lower() != "content-length"]


async def _send(urls: list[str], plan: list[list[tuple[bytes, RecordedTurn]]]) -> None:
    limit = asyncio.Semaphore(CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as http:

        async def name(k: int) -> None:
            async with limit:
                base = urls[k % len(urls)]
                for body, turn in plan[k]:
                    url = f"{base}/s/bench-{k}/v1/messages?beta=true"
                    async with http.post(url, headers=_headers(turn), data=body) as resp:
                        data = await resp.read()
                    if resp.status != 200 or data != turn.response_body:
                        raise RuntimeError(f"name {k}, {turn.name}: {resp.status}, {len(data)} B")

        await asyncio.gather(*(name(k) for k in range(len(plan))))


def _count_exchanges(journal: Path) -> int:
    reader = JournalReader(journal)
    return sum(
        1
        for record, _ in reader.read(Position(0, 0))
        if record is not SEGMENT_END and record.kind == "end"
    )


def record_journals(tmp: Path, names: int) -> tuple[list[Path], int, int]:
    """Two journals holding `names` x 17 exchanges; (journals, exchanges, wire bytes)."""
    turns = load_recording(RECORDING)
    plan = [[(_vary(t.request_body, k), t) for t in turns] for k in range(names)]
    wire = sum(len(body) + len(t.response_body) for bodies in plan for body, t in bodies)
    # Nothing listens there: the workers cannot store, and the journals keep every record.
    nowhere = f"postgresql://tapewire@127.0.0.1:{unreachable_port()}/nowhere"
    journals = [tmp / "journal-a", tmp / "journal-b"]
    with FakeProvider(RECORDING) as fake:
        fake.received = _Forget()
        for bodies in plan:
            for body, turn in bodies:
                fake.answer_as(body, turn)
        proxies = [
            ServeProcess(nowhere, fake.url, "--no-ui", journal=j, log=tmp / f"{j.name}.log")
            for j in journals
        ]
        with contextlib.ExitStack() as stack:
            for proxy in proxies:
                stack.enter_context(proxy)
            asyncio.run(_send([p.url for p in proxies], plan))
            for proxy in proxies:
                proxy.terminate()
    exchanges = sum(_count_exchanges(j) for j in journals)
    if exchanges != names * len(turns):
        raise RuntimeError(f"the journals hold {exchanges} exchanges, not {names * len(turns)}")
    return journals, exchanges, wire


# ---- ingest: one store -----------------------------------------------------------------------


def ingest_child(db: str, journals: list[Path]) -> dict[str, Any]:
    """In a process of its own: ingest these journals, one after the other, as the worker does."""
    failures: list[str] = []

    class Counting(Ingester):
        def _fail(self, e: BaseException) -> None:
            failures.append(f"{type(e).__name__}: {e}"[:300])
            super()._fail(e)

    target = db if db.startswith("postgres") else Path(db)
    prices, redactor = PriceTable.load(), Redactor()
    started, t0, cpu0 = time.time(), time.perf_counter(), _cpu()
    records = 0
    for journal in journals:
        ingester = Counting(
            journal,
            lambda: open_store(target),
            recorder=journal_id(journal),
            run=new_id(),
            redactor=redactor,
            prices=prices,
        )
        # Stop once the journal is empty; until then, retry what fails (as the worker does).
        ingester.run(lambda j=journal: backlog_bytes(j) == 0, poll=0.01)
        records += ingester.ingested
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": _cpu() - cpu0,
        "started_at": started,
        "ended_at": time.time(),
        "records": records,
        "failed_batches": len(failures),
        "failures": sorted(set(failures))[:5],
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def ingest_case(
    name: str, db: DbRef, journals: list[Path], parallel: bool, exchanges: int, tmp: Path
) -> dict[str, Any]:
    open_store(db).close()  # migrated before the clock starts
    copies = []
    for i, journal in enumerate(journals):
        copy = tmp / f"{name.replace(' ', '_')}-{i}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(journal, copy, ignore=shutil.ignore_patterns("serve.json", "ingest.json"))
        copies.append(copy)
    groups = [[c] for c in copies] if parallel else [copies]
    cmd = [sys.executable, __file__, "--ingest-child", str(db)]
    procs = [subprocess.Popen([*cmd, *map(str, g)], stdout=subprocess.PIPE) for g in groups]
    try:
        outs = [json.loads(p.communicate(timeout=3600)[0]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode for p in procs):
        raise RuntimeError(f"{name}: an ingest process failed")
    seconds = max(o["ended_at"] for o in outs) - min(o["started_at"] for o in outs)
    store = open_store(db, readonly=True)
    try:
        counts = store.counts()
        size = store.size_bytes()
    finally:
        store.close()
    if counts["exchanges"] != exchanges or counts["turns"] != exchanges:
        raise RuntimeError(f"{name}: stored {counts['exchanges']}, derived {counts['turns']}")
    if counts["outcomes"] != {"complete": exchanges}:
        raise RuntimeError(f"{name}: outcomes {counts['outcomes']}")
    return {
        "case": name,
        "ingesters": len(groups),
        "seconds": round(seconds, 2),
        "exchanges_per_second": round(exchanges / seconds, 1),
        "cpu_seconds": round(sum(o["cpu_seconds"] for o in outs), 2),
        "peak_rss_mb": max(o["peak_rss_mb"] for o in outs),
        "failed_batches": sum(o["failed_batches"] for o in outs),
        "failures": sorted({f for o in outs for f in o["failures"]})[:5],
        "sessions": counts["sessions"],
        "nodes": counts["nodes"],
        "store_bytes": size,
    }


def ingest_bench(pg: str, names: int, keep: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="store_bench-") as tmp_name:
        tmp = Path(tmp_name)
        t = time.perf_counter()
        journals, exchanges, wire = record_journals(tmp, names)
        print(f"  recorded {exchanges:,} exchanges in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)  # fmt: skip
        schemas: list[str] = []
        cases = []
        try:
            for name, backend, parallel in (
                ("sqlite", "sqlite", False),
                ("postgres", "postgres", False),
                ("postgres x2", "postgres", True),
            ):
                if backend == "sqlite":
                    db: DbRef = tmp / f"{name}.db"
                else:
                    schema = f"bench_ingest_{uuid.uuid4().hex[:10]}"
                    _admin(pg, f"CREATE SCHEMA {schema}")
                    schemas.append(schema)
                    db = with_schema(pg, schema)
                print(f"  ingesting: {name} ...", file=sys.stderr)
                cases.append(ingest_case(name, db, journals, parallel, exchanges, tmp))
        finally:
            close_pools()
            if not keep:
                _admin(pg, *(f"DROP SCHEMA IF EXISTS {s} CASCADE" for s in schemas))
    return {"names": names, "exchanges": exchanges, "wire_bytes": wire, "cases": cases}


# ---- read side on PostgreSQL ---------------------------------------------------------------


def _pg_schema_hash() -> str:
    """Of the schema and of how the backend indexes texts for search (what a query reads may
    change without a rebuild)."""
    indexing = [postgres._words, postgres._index_text, postgres.PostgresStore._add_search_row]
    code = "".join(sql for _, sql in postgres_schema.MIGRATIONS) + "".join(
        inspect.getsource(f) for f in indexing
    )
    return hashlib.sha256(f"{code}{postgres.SEARCH_CHARS}".encode()).hexdigest()[:8]


def build_pg(pg: str, schema: str, seed: int, sessions: int, messages: int) -> dict[str, Any]:
    """read_bench's store, written into `schema` (through a temporary schema: a build cut
    short is never mistaken for a cached one)."""
    t0 = time.perf_counter()
    tmp = f"{schema}_tmp"
    _admin(pg, f"DROP SCHEMA IF EXISTS {tmp} CASCADE", f"CREATE SCHEMA {tmp}")
    store = open_store(with_schema(pg, tmp))
    store.conn.execute("SET synchronous_commit = off")  # type: ignore[attr-defined]
    try:
        summary, turns, write_s, wait_s = read_bench.fill(store, seed, sessions, messages, t0)
    finally:
        store.close()
        close_pools()
    built = time.perf_counter() - t0
    _admin(pg, f"DROP SCHEMA IF EXISTS {schema} CASCADE", f"ALTER SCHEMA {tmp} RENAME TO {schema}")
    t = time.perf_counter()
    with psycopg.connect(pg, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = %s AND table_type = 'BASE TABLE'",
                (schema,),
            )
        ]
        for table in tables:
            conn.execute(f"VACUUM (ANALYZE) {schema}.{table}".encode())
    return {
        "sessions": sessions, "messages_target": messages, "seed": seed, "turns": turns,
        **summary, "generate_seconds": round(built, 1), "write_derived_seconds": round(write_s, 1),
        "writer_waiting_seconds": round(wait_s, 1),
        "vacuum_analyze_seconds": round(time.perf_counter() - t, 1),
    }  # fmt: skip


def describe_pg(url: str) -> dict[str, Any]:
    """What the store holds (counted once, after the build; not timed)."""
    with psycopg.connect(url) as conn:

        def one(sql: str, *args: Any) -> Any:
            row = conn.execute(sql.encode(), args).fetchone()
            return row[0] if row else None

        hits = "SELECT count(*) FROM search_rows WHERE tsv @@ websearch_to_tsquery('simple', %s)"
        sizes = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'r' ORDER BY 2 DESC LIMIT 12"
        ).fetchall()
        return {
            "db_bytes": sum(int(s) for _, s in sizes),
            "rows": {t: one(f"SELECT count(*) FROM {t}") for t in read_bench.TABLES},
            "tool_errors": one("SELECT count(*) FROM tool_calls WHERE is_error = 1"),
            "harnesses": dict(
                conn.execute("SELECT harness, count(*) FROM sessions GROUP BY 1").fetchall()
            ),
            "search_hits": {w: one(hits, w) for w in (read_bench.COMMON, *read_bench.MARKERS)},
            "table_bytes": {name: int(s) for name, s in sizes},
        }


def cached_pg_store(
    pg: str, sessions: int, messages: int, seed: int, regenerate: bool
) -> tuple[str, dict[str, Any], bool]:
    """The schema holding read_bench's store for these parameters (built if missing)."""
    RESULTS.mkdir(exist_ok=True)
    stem = (
        f"read_bench_{sessions}s_{messages}m_seed{seed}_g{read_bench.GEN_VERSION}"
        f"_{_pg_schema_hash()}"
    )
    meta_path = RESULTS / f"{stem}-postgres.json"
    url = with_schema(pg, stem)
    with psycopg.connect(pg) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (f"{stem}.turns",)).fetchone()
    exists = row is not None and row[0] is not None
    if regenerate or not exists or not meta_path.exists():
        print(f"generating schema {stem} ...", file=sys.stderr)
        meta = build_pg(pg, stem, seed, sessions, messages)
        meta |= describe_pg(url)
        meta_path.write_text(json.dumps(meta, indent=2))
        return url, meta, False
    return url, json.loads(meta_path.read_text()), True


def read_side(pg: str, args: argparse.Namespace) -> dict[str, Any]:
    url, meta, cached = cached_pg_store(
        pg, args.sessions, args.messages, args.seed, args.regenerate
    )
    cases = []
    for name in read_bench.GOALS_MS:
        out = subprocess.run(
            [sys.executable, __file__, "--reps", str(args.reps), "--measure", url, name,
             meta["big_session"], *(["--profile"] if args.profile else [])],
            check=True, capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
        sys.stderr.write(out.stderr)
        cases.append(json.loads(out.stdout))
    return {"store_cached": cached, "generation": meta, "cases": cases}


# ---- the report ------------------------------------------------------------------------------


def _print_ingest(result: dict[str, Any]) -> None:
    print(f"\nIngest: {result['exchanges']:,} exchanges ({result['names']} names x 17 recorded"
          f" Claude Code turns, {result['wire_bytes'] / 2**20:,.1f} MiB on the wire)")  # fmt: skip
    print(f"{'case':<14}{'ingesters':>10}{'seconds':>9}{'exch/s':>9}{'MiB/s':>8}{'CPU s':>8}"
          f"{'peak RSS':>10}{'retries':>9}{'store':>10}")  # fmt: skip
    for c in result["cases"]:
        mib_s = result["wire_bytes"] / 2**20 / c["seconds"]
        print(f"{c['case']:<14}{c['ingesters']:>10}{c['seconds']:>9.2f}"
              f"{c['exchanges_per_second']:>9.1f}{mib_s:>8.1f}{c['cpu_seconds']:>8.1f}"
              f"{c['peak_rss_mb']:>8.1f}MB{c['failed_batches']:>9}"
              f"{c['store_bytes'] / 2**20:>8.1f}MB")  # fmt: skip
        for failure in c["failures"]:
            print(f"{'':<14}retried after: {failure[:150]}")


def _print_read(result: dict[str, Any]) -> None:
    meta = result["generation"]
    print(f"\nRead side on PostgreSQL: {meta['sessions']:,} sessions, {meta['turns']:,} turns,"
          f" {meta['messages_made']:,} messages, {meta['db_bytes'] / 2**20:,.0f} MiB; generated"
          f" in {meta['generate_seconds']} s"
          f"{' (cached)' if result['store_cached'] else ''}")  # fmt: skip
    print(f"{'case':<20}{'p50 ms':>9}{'p95 ms':>9}{'first ms':>10}{'peak RSS':>10}"
          f"{'goal':>8}  result")  # fmt: skip
    for c in result["cases"]:
        if "skipped" in c:
            print(f"{c['name']:<20}{'':>46}  {c['skipped']}")
            continue
        verdict = "met" if c["met"] else "MISSED"
        print(f"{c['name']:<20}{c['p50_ms']:>9.1f}{c['p95_ms']:>9.1f}{c['first_ms']:>10.1f}"
              f"{c['peak_rss_mb']:>8.1f}MB{c['goal_ms']:>6}ms  {verdict}  ({c['calls']})")  # fmt: skip


def _server(pg: str) -> dict[str, Any]:
    with psycopg.connect(pg) as conn:
        return {
            name: conn.execute(f"SHOW {name}".encode()).fetchone()[0]  # type: ignore[index]
            for name in ("server_version", "shared_buffers", "synchronous_commit", "work_mem")
        }


def main() -> None:
    parser = read_bench.store_parser(__doc__, reps=30)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="a database to work in")
    parser.add_argument("--names", type=int, default=60, help="ingest: names x 17 exchanges")
    parser.add_argument("--no-ingest", action="store_true")
    parser.add_argument("--no-read", action="store_true")
    parser.add_argument("--regenerate", action="store_true", help="build the read store again")
    parser.add_argument("--profile", action="store_true", help="cProfile each read case")
    parser.add_argument("--keep", action="store_true", help="keep the ingest cases' schemas")
    parser.add_argument("--ingest-child", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument(
        "--measure", nargs=3, metavar=("URL", "CASE", "BIG"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.ingest_child:
        db, *journals = args.ingest_child
        print(json.dumps(ingest_child(db, [Path(j) for j in journals])))
        return
    if args.measure:
        url, case, big = args.measure
        # measure() hands its first argument to open_store, which takes a URL as well.
        print(json.dumps(read_bench.measure(url, case, args.reps, big, args.profile)))
        return
    if args.quick:
        args.sessions, args.messages, args.names = 200, 20_000, 12
    # SIGTERM as Ctrl-C: the finally clauses stop the servers and drop the schemas.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    pg = args.postgres
    result: dict[str, Any] = {**read_bench._git(), "postgres": _server(pg),
                              "cpus": os.cpu_count()}  # fmt: skip
    if not args.no_ingest:
        result["ingest"] = ingest_bench(pg, args.names, args.keep)
    if not args.no_read:
        result["read"] = read_side(pg, args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"store_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"\n{result['commit']}{' (src dirty)' if result['src_dirty'] else ''};"
          f" PostgreSQL {result['postgres']['server_version']}; {result['cpus']} CPUs")  # fmt: skip
    if "ingest" in result:
        _print_ingest(result["ingest"])
    if "read" in result:
        _print_read(result["read"])
    print(f"\nJSON: {out}")


if __name__ == "__main__":
    main()
