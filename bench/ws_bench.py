"""What tapewire adds to WebSocket traffic: against the same traffic sent straight to the fake.

    python bench/ws_bench.py [--quick] [--keep] [--rev REV] [--no-bare]
    python bench/ws_bench.py --serve-fake                   # the fake upstream alone
    python bench/ws_bench.py --serve-bare --upstream URL    # the bare relay alone

Starts, as subprocesses on 127.0.0.1, a fake Responses-over-WebSocket upstream (this file,
--serve-fake), a bare aiohttp WebSocket relay that records nothing (this file, --serve-bare)
and `tapewire serve` (a fresh SQLite store in a temporary directory, every upstream pointed
at the fake). Then, from this process, over WebSocket connections held open for a whole cell:

    ping@1     one connection, a small response.create answered by one response.completed
    stream@1   one connection, response.create answered by a stream of 200 Responses events
    ping@8     the same as ping@1 on 8 connections at once
    stream@8   the same as stream@1 on 8 connections at once

against three targets: the fake directly (`direct`), via the bare relay (`bare`) and via
tapewire (`tapewire`). Rounds alternate between the targets so that drift hits all alike.
Then it checks that tapewire's store holds one WS exchange per message sent through it (and
one per cleanly closed connection, for its close frames), with every frame. Prints a table
and writes JSON to bench/results/. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from aiohttp import WSMsgType, web

import proxy_bench as pb

T = TypeVar("T")
TARGETS = ("direct", "bare", "tapewire")
PATH = "/v1/responses"  # tapewire routes it to the openai upstream, as Codex's upgrade
HEADERS = {"Authorization": "Bearer sk-bench", "OpenAI-Beta": "responses_websockets=2026-02-06"}
COMPLETED = b'{"type":"response.completed"'  # the reply's last event, as the fake writes it
CPU_NOTE = (
    f"CPU is scarce: the client, the relay under test and the fake share {os.cpu_count()} cores;"
    " via a relay every message crosses a third busy process. Compare targets within a cell;"
    " 'srv CPU' (the answering process's own CPU time per request, workers included) is the"
    " cost least disturbed by contention."
)


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Cell:
    name: str
    conc: int  # connections at once, each sending its next message when its reply is whole
    events: int  # events per reply: 1 is a ping
    per_round: int  # messages per connection per round
    warmup: int  # per connection, unmeasured


@dataclass(frozen=True)
class Plan:
    rounds: int
    cells: tuple[Cell, ...]


FULL = Plan(  # about 20 s on 2 cores
    rounds=6,
    cells=(
        Cell("ping@1", 1, 1, 500, 100),  # 3,000 measured round trips a target
        Cell("stream@1", 1, 200, 25, 5),  # 150 replies of 200 events
        Cell("ping@8", 8, 1, 100, 20),  # 4,800
        Cell("stream@8", 8, 200, 8, 2),  # 384
    ),
)
QUICK = Plan(
    rounds=1,
    cells=(
        Cell("ping@1", 1, 1, 100, 10),
        Cell("stream@1", 1, 200, 5, 1),
        Cell("ping@8", 8, 1, 20, 2),
        Cell("stream@8", 8, 200, 2, 1),
    ),
)


# --------------------------------------------------------------------------- the fake


def _event(kind: str, seq: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "sequence_number": seq, **fields}


def _response(status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    usage = {"input_tokens": 12, "output_tokens": 40, "total_tokens": 52}
    return {"id": "resp_@RID@", "object": "response", "model": "gpt-fake", "status": status,
            "output": output, "usage": usage if status == "completed" else None}  # fmt: skip


@functools.cache
def reply_template(events: int) -> tuple[bytes, ...]:
    """A reply of `events` Responses events (1: just response.completed, the ping's answer),
    shaped like OpenAI's: created, in_progress, the item and part opened, text deltas, the part
    and item done, completed. "@RID@" stands for the reply's id; compact JSON, type first."""
    if events == 1:
        item = {"id": "msg_@RID@", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "pong", "annotations": []}]}  # fmt: skip
        last = _event("response.completed", 0, response=_response("completed", [item]))
        return (json.dumps(last, separators=(",", ":")).encode(),)
    if events < 9:
        raise ValueError("a stream has at least 9 events")
    words = ["The ", "relay ", "copies ", "each ", "frame ", "as ", "it ", "comes, "]
    deltas = [words[k % len(words)] for k in range(events - 8)]
    text = "".join(deltas)
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"id": "msg_@RID@", "type": "message", "role": "assistant", "status": "completed",
            "content": [part]}  # fmt: skip
    opened = {**item, "status": "in_progress", "content": []}
    ids = {"item_id": "msg_@RID@", "output_index": 0, "content_index": 0}
    seq = iter(range(events))
    out = [
        _event("response.created", next(seq), response=_response("in_progress", [])),
        _event("response.in_progress", next(seq), response=_response("in_progress", [])),
        _event("response.output_item.added", next(seq), output_index=0, item=opened),
        _event("response.content_part.added", next(seq), **ids, part={**part, "text": ""}),
        *(_event("response.output_text.delta", next(seq), **ids, delta=d, logprobs=[])
          for d in deltas),
        _event("response.output_text.done", next(seq), **ids, text=text, logprobs=[]),
        _event("response.content_part.done", next(seq), **ids, part=part),
        _event("response.output_item.done", next(seq), output_index=0, item=item),
        _event("response.completed", next(seq), response=_response("completed", [item])),
    ]  # fmt: skip
    return tuple(json.dumps(e, separators=(",", ":")).encode() for e in out)


def request_payload(events: int, rid: str) -> bytes:
    """The agent's response.create; metadata tells the fake how many events to answer with,
    and the reply's id (chosen here, so that a reply is the same bytes on every target)."""
    body = {"type": "response.create", "model": "gpt-fake", "input": f"ping {rid}",
            "metadata": {"bench_events": str(events), "bench_id": rid}}  # fmt: skip
    return json.dumps(body, separators=(",", ":")).encode()


async def serve_fake() -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(decode_text=False, max_msg_size=0, compress=False)
        await ws.prepare(request)
        async for msg in ws:  # until the agent's close, which autoclose answers
            if msg.type is not WSMsgType.TEXT:
                continue
            meta = json.loads(msg.data)["metadata"]
            rid = meta["bench_id"].encode()
            for template in reply_template(int(meta["bench_events"])):
                await ws.send_frame(template.replace(b"@RID@", rid), WSMsgType.TEXT)
        return ws

    app = web.Application()
    app.router.add_get(PATH, handle)
    await _serve(app)


async def _serve(app: web.Application) -> None:
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(f"http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()  # until killed


# --------------------------------------------------------------------------- the bare relay


async def serve_bare(upstream: str) -> None:
    """tapewire's relay (capture/websocket.py) minus the recording: the same socket settings,
    each frame forwarded as it comes, closes forwarded as frames."""
    client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def pump(src: Any, dst: Any) -> bool:
        """True when src sent a close frame (forwarded), False when it went."""
        while True:
            msg = await src.receive()
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await dst.send_frame(msg.data, msg.type)
            elif msg.type is WSMsgType.PING:
                await dst.ping(msg.data)
            elif msg.type is WSMsgType.PONG:
                await dst.pong(msg.data)
            elif msg.type is WSMsgType.CLOSE:
                code = msg.data.to_bytes(2, "big") if msg.data else b""
                await dst.send_frame(code + (msg.extra or "").encode(), WSMsgType.CLOSE)
                return True
            else:
                return False

    async def handle(request: web.Request) -> web.StreamResponse:
        up = await client.ws_connect(
            upstream + request.raw_path,
            headers={k: v for k, v in request.headers.items() if k in HEADERS},
            autoclose=False, autoping=False, decode_text=False, max_msg_size=0, compress=0,
        )  # fmt: skip
        agent = web.WebSocketResponse(autoclose=False, autoping=False, decode_text=False,
                                      max_msg_size=0, compress=False)  # fmt: skip
        await agent.prepare(request)
        pumps = [asyncio.create_task(pump(agent, up)), asyncio.create_task(pump(up, agent))]
        try:
            done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            if pending and all(t.result() for t in done):
                await asyncio.wait(pending, timeout=10.0)  # the answering close
        finally:
            for task in pumps:
                task.cancel()
            with contextlib.suppress(Exception):
                await up.close()
            if request.transport is not None:
                request.transport.close()
        return agent

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    await _serve(app)


# --------------------------------------------------------------------------- load


@dataclass
class Tally:
    """A target's measured rounds in one cell, with the CPU they cost."""

    latency: list[float] = field(default_factory=list)  # message sent -> last event read
    first: list[float] = field(default_factory=list)  # message sent -> first event read
    events: int = 0
    elapsed: float = 0.0
    server_cpu: float = 0.0
    server_loop_cpu: float = 0.0
    host_busy: int = 0
    host_total: int = 0

    def summary(self) -> dict[str, Any]:
        n = len(self.latency)
        lat, first = sorted(self.latency), sorted(self.first)
        per = 1e6 / n if n else float("nan")
        return {
            "requests": n,
            "events": self.events,
            "per_s": n / self.elapsed if self.elapsed else float("nan"),
            "events_per_s": self.events / self.elapsed if self.elapsed else float("nan"),
            "p50_ms": pb.percentile(lat, 0.5) * 1e3,
            "p99_ms": pb.percentile(lat, 0.99) * 1e3,
            "first_p50_ms": pb.percentile(first, 0.5) * 1e3,
            "first_p99_ms": pb.percentile(first, 0.99) * 1e3,
            "server_cpu_us_per_req": self.server_cpu * per,
            "server_loop_cpu_us_per_req": self.server_loop_cpu * per,
            "cores_busy": (self.host_busy / self.host_total) * (os.cpu_count() or 1)
            if self.host_total
            else float("nan"),
        }


@dataclass
class Conn:
    ws: aiohttp.ClientWebSocketResponse
    tag: str  # names the reply ids sent on it
    sent: int = 0  # messages
    events: int = 0  # events received


async def connect(session: aiohttp.ClientSession, base: str, tag: str) -> Conn:
    ws = await session.ws_connect(base + PATH, headers=HEADERS, max_msg_size=0, compress=0,
                                  decode_text=False)  # fmt: skip
    return Conn(ws, tag)


async def ask(conn: Conn, events: int) -> tuple[float, float, list[bytes]]:
    """One response.create and its reply: (to the first event, to the last, the events)."""
    payload = request_payload(events, f"{conn.tag}_{conn.sent}")
    clock = time.perf_counter
    t0 = clock()
    await conn.ws.send_frame(payload, WSMsgType.TEXT)
    conn.sent += 1
    got: list[bytes] = []
    first = 0.0
    while True:
        msg = await conn.ws.receive()
        if msg.type is not WSMsgType.TEXT:
            raise pb.BenchError(f"{conn.tag}: {msg.type.name} instead of an event: {msg.data!r}")
        if not got:
            first = clock()
        got.append(msg.data)
        if msg.data.startswith(COMPLETED):
            break
    t1 = clock()
    conn.events += len(got)
    if len(got) != events:
        raise pb.BenchError(f"{conn.tag}: {len(got)} events, want {events}")
    return first - t0, t1 - t0, got


async def drive(conns: list[Conn], events: int, count: int, tally: Tally | None) -> None:
    """Every connection sends `count` messages, each when its last reply is whole."""

    async def one(conn: Conn) -> None:
        for _ in range(count):  # an error ends the run: what follows would mean nothing
            first, last, got = await ask(conn, events)
            if tally is not None:
                tally.first.append(first)
                tally.latency.append(last)
                tally.events += len(got)

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in conns))
    if tally is not None:
        tally.elapsed += time.perf_counter() - started


@dataclass
class Bench:
    runner: asyncio.Runner
    servers: dict[str, pb.Server]  # target -> the process answering it (direct: the fake)
    plan: Plan
    session: aiohttp.ClientSession
    via_tapewire: dict[str, int] = field(
        default_factory=lambda: {"messages": 0, "events": 0, "connections": 0}
    )

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def open(self, target: str, n: int, tag: str) -> list[Conn]:
        base = self.servers[target].url
        conns = [self.run(connect(self.session, base, f"{tag}_c{k}")) for k in range(n)]
        if target == "tapewire":
            self.via_tapewire["connections"] += n
        return conns

    def close(self, target: str, conns: list[Conn]) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(c.ws.close() for c in conns))

        self.run(close_all())
        if target == "tapewire":
            self.via_tapewire["messages"] += sum(c.sent for c in conns)
            self.via_tapewire["events"] += sum(c.events for c in conns)

    def measured(self, target: str, tally: Tally, conns: list[Conn], cell: Cell) -> None:
        pid = self.servers[target].pid
        cpu0, loop0 = pb.cpu_seconds(pid)
        busy0, total0 = pb.host_cpu()
        self.run(drive(conns, cell.events, cell.per_round, tally))
        busy1, total1 = pb.host_cpu()
        cpu1, loop1 = pb.cpu_seconds(pid)
        tally.server_cpu += cpu1 - cpu0
        tally.server_loop_cpu += loop1 - loop0
        tally.host_busy += busy1 - busy0
        tally.host_total += total1 - total0

    def check_alive(self) -> None:
        for server in self.servers.values():
            code = server.proc.poll()
            if code is not None:
                raise pb.BenchError(f"{server.name} (pid {server.pid}) exited with {code}\n"
                                    f"{pb.tail(server.log)}")  # fmt: skip

    def cell(self, cell: Cell) -> dict[str, Any]:
        targets = [t for t in TARGETS if t in self.servers]
        conns = {t: self.open(t, cell.conc, f"{cell.name.replace('@', '')}_{t}") for t in targets}
        try:
            for t in targets:  # warm-up: the connections' first frames, tapewire's ingester
                self.run(drive(conns[t], cell.events, cell.warmup, None))
            tallies = {t: Tally() for t in targets}
            for _ in range(self.plan.rounds):
                for t in targets:
                    self.measured(t, tallies[t], conns[t], cell)
                self.check_alive()
        finally:
            for t in targets:
                self.close(t, conns[t])
        result: dict[str, Any] = {t: tallies[t].summary() for t in targets}
        for t in targets:
            for k in ("p50_ms", "first_p50_ms"):
                result[t][f"added_{k}"] = result[t][k] - result["direct"][k]
        return result

    def transparency(self) -> dict[str, bool]:
        """A ping and a 200-event reply on a fresh connection per target: every event must be
        the bytes the fake sent directly (the reply ids are the client's, the same on every
        target)."""
        seen: dict[str, str] = {}
        for target in self.servers:
            (conn,) = self.open(target, 1, "transparency")
            digest = hashlib.sha256()
            for events in (1, 200):
                for event in self.run(ask(conn, events))[2]:
                    digest.update(len(event).to_bytes(4, "big") + event)
            self.close(target, [conn])
            seen[target] = digest.hexdigest()
        return {t: seen[t] == seen["direct"] for t in self.servers if t != "direct"}


# --------------------------------------------------------------------------- the record


STORE_PROBE = """
import collections, json, sys
from tapewire.store import open_store
store = open_store(sys.argv[1], readonly=True)
methods, frames = collections.Counter(), collections.Counter()
for row in store.exchanges(limit=10**9):
    methods[row.method] += 1
    for f in row.ws_frames or []:
        frames[f"{f.source} {f.opcode}"] += 1
print(json.dumps({"counts": store.counts(), "methods": methods, "frames": frames}))
"""


def verify_record(procs: pb.Processes, db: Path, via: dict[str, int]) -> dict[str, Any]:
    """Wait for the journal to drain, then compare the store with what went through tapewire:
    an exchange per message, plus one per connection for its close handshake (frames after a
    reply's end open an exchange of their own), all complete; every frame listed."""
    expected = via["messages"] + via["connections"]
    status = procs.verify_recorded(db, expected)
    out = subprocess.run(
        [sys.executable, "-c", STORE_PROBE, str(db)],
        capture_output=True, check=True, cwd=procs.workdir, env=procs.tapewire_env, timeout=300,
    )  # fmt: skip
    probe = json.loads(out.stdout)
    frames = probe["frames"]
    want_frames = {
        "agent 1": via["messages"],
        "upstream 1": via["events"],
        "agent 8": via["connections"],
        "upstream 8": via["connections"],
    }
    ok = status["ok"] and probe["methods"] == {"WS": expected} and frames == want_frames
    return {
        **status,
        "ok": ok,
        "expected": expected,
        "via_tapewire": via,
        "methods": probe["methods"],
        "frames": frames,
        "frames_expected": want_frames,
        "sessions": probe["counts"]["sessions"],
        "turns": probe["counts"]["turns"],
    }


# --------------------------------------------------------------------------- report


def render_table(cells: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{'cell':<10}{'target':<10}{'replies':>8}{'per s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'+p50 ms':>9}{'first50':>9}{'+first50':>9}{'srv CPU/reply':>15}{'loop CPU':>10}"
        f"{'cores':>7}"
    )
    lines = [head, "-" * len(head)]
    for name, cell in cells.items():
        for t, s in cell.items():
            added = "" if t == "direct" else f"{s['added_p50_ms']:+.3f}"
            added_first = "" if t == "direct" else f"{s['added_first_p50_ms']:+.3f}"
            loop = "" if t == "direct" else f"{s['server_loop_cpu_us_per_req']:.0f} µs"
            lines.append(
                f"{name:<10}{t:<10}{s['requests']:>8}{s['per_s']:>8.0f}{s['p50_ms']:>8.3f}"
                f"{s['p99_ms']:>8.3f}{added:>9}{s['first_p50_ms']:>9.3f}{added_first:>9}"
                f"{s['server_cpu_us_per_req']:>12.0f} µs{loop:>10}{s['cores_busy']:>7.2f}"
            )
        lines.append("")
    return "\n".join(lines)


def render_record(rec: dict[str, Any]) -> str:
    via = rec["via_tapewire"]
    verdict = "as expected" if rec["ok"] else "MISMATCH"
    return (
        f"Recorded ({verdict}): {rec['stored_exchanges']} exchanges stored, {rec['methods']},"
        f" outcomes {rec['outcomes']}; expected {rec['expected']} = {via['messages']} messages"
        f" sent through tapewire + {via['connections']} connections' close handshakes."
        f" Frames listed {rec['frames']} (want {rec['frames_expected']}; source opcode:"
        f" 1 text, 8 close). Derived: {rec['turns']} turns in {rec['sessions']} sessions."
        f" Journal backlog {rec['journal_backlog_bytes']} after {rec['waited_s']} s;"
        f" drops {rec['drops']}; store {rec['store_size_bytes']:,} bytes."
    )


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few seconds: checks the script")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--rev", help="tapewire as committed at this revision (default: src/)")
    parser.add_argument("--no-bare", action="store_true", help="leave out the bare relay")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake or args.serve_bare:
        with asyncio.Runner(loop_factory=pb.loop_factory()) as runner:
            runner.run(serve_bare(args.upstream) if args.serve_bare else serve_fake())
        return 0

    plan = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, pb.on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="tapewire-ws-bench-"))
    try:
        env, source = pb.snapshot_tapewire(work, args.rev)
    except (pb.BenchError, subprocess.CalledProcessError) as e:
        shutil.rmtree(work, ignore_errors=True)
        pb.progress(f"cannot take the code under test: {e}")
        return 2
    pb.progress(f"tapewire under test: {source}")
    procs = pb.Processes(work, env)
    started = time.time()
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "mode": "quick" if args.quick else "full",
        "plan": {"rounds": plan.rounds, "cells": [c.__dict__ for c in plan.cells]},
        "environment": {**pb.environment(), "note": CPU_NOTE},
        "tapewire_source": source,
    }
    failed, interrupted = True, False
    try:
        with asyncio.Runner(loop_factory=pb.loop_factory()) as runner:
            failed = run_all(procs, runner, plan, work, results, bare=not args.no_bare)
    except KeyboardInterrupt:
        interrupted = True
        results["interrupted"] = True
        pb.progress("interrupted: stopping the servers")
    finally:
        procs.close()
        results["duration_s"] = round(time.time() - started, 1)
        pb.RESULTS.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = pb.RESULTS / f"ws_bench-{stamp}{'-quick' if args.quick else ''}.json"
        out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        pb.progress(f"results: {out} ({results['duration_s']} s)")
        if args.keep or failed:
            pb.progress(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if interrupted:
        return 130
    return 1 if failed else 0


def run_all(
    procs: pb.Processes,
    runner: asyncio.Runner,
    plan: Plan,
    work: Path,
    results: dict[str, Any],
    bare: bool,
) -> bool:
    me = [sys.executable, str(Path(__file__).resolve())]
    fake = procs.start_printing("fake", [*me, "--serve-fake"])
    servers = {"direct": fake}
    if bare:
        servers["bare"] = procs.start_printing(
            "bare", [*me, "--serve-bare", "--upstream", fake.url]
        )
    tapewire = procs.start_tapewire(work / "tapewire.db", fake.url)
    servers["tapewire"] = tapewire
    pb.progress(", ".join(f"{t} {s.url}" for t, s in servers.items()))
    idle = {t: pb.tree_memory(s.pid) for t, s in servers.items()}
    tw_cpu0, tw_loop0 = pb.cpu_seconds(tapewire.pid)

    session = runner.run(_session())
    bench = Bench(runner, servers, plan, session)
    try:
        results["transparency"] = bench.transparency()
        cells: dict[str, dict[str, Any]] = {}
        for cell in plan.cells:
            pb.progress(f"{cell.name}: {cell.conc} connection(s), {cell.events} event(s) a reply")
            cells[cell.name] = bench.cell(cell)
        results["cells"] = cells
    finally:
        runner.run(session.close())

    tw_cpu1, tw_loop1 = pb.cpu_seconds(tapewire.pid)
    memory = {t: pb.tree_memory(s.pid) for t, s in servers.items()}
    results["memory_kib"] = {"idle": idle, "end": memory}
    results["tapewire_cpu_s"] = {"total": tw_cpu1 - tw_cpu0, "loop": tw_loop1 - tw_loop0}
    pb.progress("verifying tapewire's record")
    assert tapewire.db is not None
    rec = verify_record(procs, tapewire.db, bench.via_tapewire)
    code, took = procs.stop(tapewire)
    rec.update(exit_code=code, stop_s=round(took, 2))
    results["recorded"] = rec

    src = results["tapewire_source"]
    print()
    print(f"tapewire WebSocket benchmark ({results['mode']}), {results['environment']['cpu']}")
    print(
        f"tapewire under test: {src['source']}, commit {src.get('commit', '?')}"
        f"{' + uncommitted changes in src/' if src.get('dirty') else ''}"
        f" (files {src['files_sha256']})"
    )
    print(CPU_NOTE)
    print(
        "Cells: ping = a small response.create answered by one response.completed event;"
        " stream = answered by 200 events. @N: N connections at once, each sending its next"
        f" message when its reply is whole; {plan.rounds} rounds alternating the targets."
        " Columns: replies measured and per second; p50/p99 = message sent to last event read;"
        " first50 = to the first event; + = minus direct's; srv CPU/reply = CPU time of the"
        " answering process and its workers per reply (direct: the fake's); loop CPU = its"
        " main thread's (tapewire's event loop); cores = host cores busy (of"
        f" {os.cpu_count()})."
    )
    print()
    print(render_table(cells))
    added = [
        f"{name} {c['tapewire']['p50_ms'] - c['bare']['p50_ms']:+.3f} ms"
        for name, c in cells.items()
        if "bare" in c
    ]
    if added:
        print("tapewire p50 minus the bare relay's: " + ", ".join(added))
    tp = results["transparency"]
    print(
        "Transparency (a ping and a 200-event reply on a fresh connection, every event"
        " byte-identical to the fake's): "
        + ", ".join(f"{t} {'yes' if same else 'NO'}" for t, same in tp.items())
    )
    tw = memory["tapewire"]
    print(
        f"tapewire process: {results['tapewire_cpu_s']['total']:.1f} s CPU over the run"
        f" ({results['tapewire_cpu_s']['loop']:.1f} s on its event loop), peak RSS"
        f" {mib(tw['VmHWM'])} (idle {mib(idle['tapewire']['VmRSS'])}); {tw['children']} worker"
        f" process(es), peak {mib(tw['children_VmHWM'])}"
        + (
            f". Bare relay peak RSS {mib(memory['bare']['VmHWM'])}"
            f" (idle {mib(idle['bare']['VmRSS'])})"
            if "bare" in memory
            else ""
        )
    )
    print(render_record(rec))
    return not (rec["ok"] and all(tp.values()))


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


if __name__ == "__main__":
    sys.exit(main())
