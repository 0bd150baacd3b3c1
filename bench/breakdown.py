"""Where tapewire's cost over a bare pass-through goes: a diagnostic, not a benchmark.

    python bench/breakdown.py [--quick] [--cells small_json@1,small_json@8,claude_turns@1]

Runs the pass-through and `tapewire serve` processes side by side, each with one part switched
off by monkeypatching tapewire's internals (so this is tied to the code's shape; a variant
that does not apply to the code under test is skipped):

    full        tapewire as it is
    no_wake     the journal writer does not wake the ingester thread on each write (it then
                polls every 0.5 s); only where the ingester is a thread woken per write
    no_ingest   the ingester (thread or worker process) never starts: the journal is
                written, nothing reaches SQLite
    no_journal  journal appends are skipped (every record is still built)

and drives the same alternating rounds as proxy_bench.py. no_journal - pass is the proxy's own
per-request bookkeeping; no_ingest - no_journal the journal appends on the event loop;
full - no_ingest what the in-process ingester costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import proxy_bench as pb

VARIANTS = ("full", "no_wake", "no_ingest", "no_journal")
SERVE_FLAG = "--serve-variant"


NOT_APPLICABLE = "does not apply to this tapewire"


def serve_variant(variant: str, args: list[str]) -> None:
    """Run tapewire's CLI with one part switched off."""
    import importlib

    import tapewire.cli

    def nothing(*_: Any, **__: Any) -> None:
        return None

    def switch_off(module: str, cls: str, method: str) -> bool:
        try:
            owner = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            return False
        if not hasattr(owner, method):
            return False
        setattr(owner, method, nothing)
        return True

    if variant == "no_wake":
        applies = switch_off("tapewire.service", "Service", "_wake_ingester")
    elif variant == "no_ingest":
        applies = switch_off("tapewire.journal.worker", "IngestWorker", "start") or (
            switch_off("tapewire.journal.ingest", "Ingester", "start")
        )
    elif variant == "no_journal":
        applies = switch_off("tapewire.journal.writer", "JournalWriter", "append")
    elif variant == "full":
        applies = True
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    if not applies:
        raise SystemExit(f"variant {variant} {NOT_APPLICABLE}")
    sys.argv = ["tapewire", *args]
    tapewire.cli.main()


def measure(
    runner: asyncio.Runner,
    servers: dict[str, pb.Server],
    calls: list[pb.Call],
    concurrency: int,
    plan: pb.Plan,
) -> dict[str, dict[str, Any]]:
    sessions = runner.run(_sessions(list(servers)))
    try:
        for name, server in servers.items():
            runner.run(pb.drive(sessions[name], server.url, calls, concurrency, plan.warmup_s))
        tallies = {name: pb.Tally() for name in servers}
        for _ in range(plan.rounds):
            for name, server in servers.items():
                cpu0, loop0 = pb.cpu_seconds(server.pid)
                run = runner.run(
                    pb.drive(sessions[name], server.url, calls, concurrency, plan.round_s)
                )
                cpu1, loop1 = pb.cpu_seconds(server.pid)
                tally = tallies[name]
                tally.runs.append(run)
                tally.server_cpu += cpu1 - cpu0
                tally.server_loop_cpu += loop1 - loop0
    finally:
        runner.run(_close(sessions))
    return {name: t.summary() for name, t in tallies.items()}


async def _sessions(names: list[str]) -> dict[str, Any]:
    return {n: pb.new_session() for n in names}


async def _close(sessions: dict[str, Any]) -> None:
    for s in sessions.values():
        await s.close()


def render(cell: str, result: dict[str, dict[str, Any]]) -> str:
    base = result["pass"]
    lines = [
        f"{cell}",
        f"  {'':<11}{'req/s':>8}{'x pass':>8}{'p50 ms':>9}{'+p50':>8}{'p99 ms':>9}"
        f"{'CPU/req':>10}{'loop':>8}{'other':>8}",
    ]
    for name, s in result.items():
        other = s["server_cpu_us_per_req"] - s["server_loop_cpu_us_per_req"]
        lines.append(
            f"  {name:<11}{s['rps']:>8.0f}{s['rps'] / base['rps']:>8.3f}{s['p50_ms']:>9.3f}"
            f"{s['p50_ms'] - base['p50_ms']:>+8.3f}{s['p99_ms']:>9.3f}"
            f"{s['server_cpu_us_per_req']:>7.0f} µs{s['server_loop_cpu_us_per_req']:>5.0f} µs"
            f"{other:>5.0f} µs" + (f"  ({s['errors']} errors)" if s["errors"] else "")
        )
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == SERVE_FLAG:
        serve_variant(sys.argv[2], sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cells", default="small_json@1,small_json@8,claude_turns@1")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rev", help="tapewire as committed at this git revision")
    args = parser.parse_args()
    plan = pb.QUICK if args.quick else pb.FULL
    cells = [(w, int(c)) for w, _, c in (x.partition("@") for x in args.cells.split(","))]
    work = Path(tempfile.mkdtemp(prefix="tapewire-breakdown-"))
    env, source = pb.snapshot_tapewire(work, args.rev)
    procs = pb.Processes(work, env)
    results: dict[str, Any] = {
        "environment": pb.environment(),
        "tapewire_source": source,
        "plan": plan.__dict__,
    }
    try:
        fake = procs.start_fake()
        servers = {"pass": procs.start_pass(fake.url)}
        for v in args.variants.split(","):
            command = [sys.executable, str(Path(__file__).resolve()), SERVE_FLAG, v]
            try:
                servers[v] = procs.start_tapewire(
                    work / f"{v}.db", fake.url, command=command, name=v
                )
            except pb.BenchError as e:
                if NOT_APPLICABLE not in str(e):
                    raise
                print(f"skipped: variant {v} {NOT_APPLICABLE}")
        wls = {w.name: w for w in pb.workloads()}
        print(f"tapewire under test: {source}")
        print(pb.CPU_NOTE)
        print("CPU/req = the proxy process's CPU per request; loop = its main thread (the event")
        print("loop); other = the rest: its other threads and its worker processes (tapewire:")
        print("the fsync thread, and the ingester, a thread or a worker process).")
        with asyncio.Runner(loop_factory=pb.loop_factory()) as runner:
            pb.learn_expectations(fake.url, list(wls.values()), runner)
            for name, conc in cells:
                cell = f"{name}@{conc}"
                print(f"measuring {cell}", file=sys.stderr, flush=True)
                results[cell] = measure(runner, servers, wls[name].calls, conc, plan)
                print(render(cell, results[cell]), flush=True)
    finally:
        procs.close()
        shutil.rmtree(work, ignore_errors=True)
    pb.RESULTS.mkdir(exist_ok=True)
    out = pb.RESULTS / f"breakdown-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
