"""What recording costs: tapewire against a bare pass-through proxy and against no proxy at all.

    python bench/proxy_bench.py [--quick] [--keep] [--rev REV]

Starts, as subprocesses on 127.0.0.1, the fake provider (bench/fake_server.py), the bare
pass-through (bench/passthrough.py) and `tapewire serve` (fresh database, every upstream
pointed at the fake), then drives load from this process with an aiohttp client (keep-alive)
at concurrency 1, 8 and 32 against three targets: the fake directly, via the pass-through and
via tapewire. Rounds alternate between the targets so that drift hits all three alike. Then:
checks that tapewire stored every exchange it carried; peak memory after 10,000 small calls
and with 500 slow streams in flight at once; bytes on disk for the 17 recorded Claude turns.

Prints a table and writes everything to bench/results/ as JSON. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import importlib.metadata
import io
import itertools
import json
import math
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import aiohttp
from yarl import URL

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RECORDING = ROOT / "tests" / "fixtures" / "recordings" / "claude-20260727-019fa57e"
RESULTS = BENCH / "results"
WIRE_BYTES = 2_173_594  # request bodies + response bytes of the 17 recorded turns
STORAGE_GOAL = 0.25  # the whole store, derived layer included (issue 4; the raw layer's was 15 %)
GOAL_RATIO = 0.95
GOAL_ADDED_MS = 0.3
GOAL_CONCURRENCY = (1, 8)
TARGETS = ("direct", "pass", "tapewire")
CONCURRENCY = (1, 8, 32)
ROUND_CAP = 500_000  # requests per round, a backstop to the round's duration
CLK_TCK = os.sysconf("SC_CLK_TCK")
CPU_NOTE = (
    "CPU is scarce: the load generator, the proxy under test and the fake provider share "
    f"{os.cpu_count()} cores, so every process steals from the others. Absolute req/s are "
    "this machine's, not the proxy's; compare targets within a row group, and read "
    "'srv CPU/req' (the server's own CPU time per request, its worker processes included) "
    "for the cost per "
    "request independent of contention."
)

T = TypeVar("T")


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Plan:
    rounds: int  # rounds per workload x concurrency cell, each visiting every target once
    round_s: float  # seconds per target per round
    warmup_s: float  # per target per cell, not measured
    mem_requests: int  # small JSON calls at concurrency 8 before reading peak RSS
    slow_streams: int  # paced streams in flight at once
    slow_events: int
    slow_delay_ms: int


FULL = Plan(
    rounds=4,
    round_s=1.5,
    warmup_s=0.4,
    mem_requests=10_000,
    slow_streams=500,
    slow_events=20,
    slow_delay_ms=100,
)
QUICK = Plan(
    rounds=1,
    round_s=0.25,
    warmup_s=0.05,
    mem_requests=400,
    slow_streams=50,
    slow_events=5,
    slow_delay_ms=100,
)


# --------------------------------------------------------------------------- workloads


@dataclass
class Call:
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    expect_size: int = -1  # response bytes, learnt from the fake directly
    expect_sha256: str = ""


@dataclass
class Workload:
    name: str
    title: str
    calls: list[Call]


CHAT_BODY = json.dumps(
    {"model": "gpt-fake", "messages": [{"role": "user", "content": "Say hello."}]},
    separators=(",", ":"),
).encode()
CHAT_HEADERS = [("Content-Type", "application/json"), ("Authorization", "Bearer sk-bench")]
_DROP_RECORDED = frozenset({"content-length", "host", "connection", "transfer-encoding"})


def paced_headers(events: int, delay_ms: int) -> list[tuple[str, str]]:
    return [
        *CHAT_HEADERS,
        ("x-fake-scenario", "paced"),
        ("x-fake-delay-ms", str(delay_ms)),
        ("x-fake-events", str(events)),
    ]


def recorded_turns() -> tuple[list[Call], int]:
    """The 17 recorded Claude Code requests, and the turns' wire bytes (bodies + responses)."""
    calls: list[Call] = []
    wire = 0
    for turn in sorted(p for p in RECORDING.iterdir() if p.is_dir()):
        request = json.loads((turn / "request.json").read_text(encoding="utf-8"))
        body = base64.b64decode(request["body_b64"])
        headers = [(k, v) for k, v in request["headers"] if k.lower() not in _DROP_RECORDED]
        calls.append(Call("/v1/messages?beta=true", headers, body))
        wire += len(body) + (turn / "response.sse").stat().st_size
    return calls, wire


def workloads() -> list[Workload]:
    turns, _ = recorded_turns()
    return [
        Workload(
            "small_json",
            "small JSON chat call (POST /v1/chat/completions, not streamed)",
            [Call("/v1/chat/completions", CHAT_HEADERS, CHAT_BODY)],
        ),
        Workload(
            "sse_50",
            "SSE stream of 50 events (paced, 0 ms apart)",
            [Call("/v1/chat/completions", paced_headers(50, 0), CHAT_BODY)],
        ),
        Workload(
            "claude_turns",
            "17 recorded Claude Code turns, cycled (~126 KB bodies, gzip SSE replies)",
            turns,
        ),
    ]


# --------------------------------------------------------------------------- processes


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    db: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


class BenchError(RuntimeError):
    pass


class Processes:
    """Every subprocess the benchmark starts; all of them end when it does."""

    def __init__(self, workdir: Path, tapewire_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.tapewire_env = tapewire_env  # how tapewire processes find the code under test
        self.servers: list[Server] = []

    def _spawn(
        self, name: str, argv: list[str], stdout: int | None, env: dict[str, str] | None = None
    ) -> tuple[Any, Path]:
        log = self.workdir / f"{name}-{len(self.servers)}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(argv, stdout=stdout, stderr=err, cwd=self.workdir, env=env)
        return proc, log

    def start_printing(self, name: str, argv: list[str], timeout: float = 30.0) -> Server:
        """A server that prints its URL as its first line on stdout."""
        proc, log = self._spawn(name, argv, subprocess.PIPE)
        server = Server(name, proc, "", log)
        self.servers.append(server)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("http://127.0.0.1:"):
            raise BenchError(f"{name} did not start: {line!r}\n{tail(log)}")
        server.url = line
        return server

    def tapewire_status(self, db: Path) -> dict[str, Any]:
        """`tapewire status --db DB --json`, with the code under test."""
        out = subprocess.run(
            [sys.executable, "-m", "tapewire", "status", "--db", str(db), "--json"],
            capture_output=True,
            check=True,
            cwd=self.workdir,
            env=self.tapewire_env,
            timeout=60,
        )
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc

    def verify_recorded(self, db: Path, sent: int, timeout: float = 180.0) -> dict[str, Any]:
        """Wait for the journal backlog to reach 0, then compare the store with what was sent."""
        started = time.monotonic()
        doc: dict[str, Any] = {}
        while time.monotonic() - started < timeout:
            doc = self.tapewire_status(db)
            stored = doc.get("store", {}).get("exchanges", 0)
            if doc.get("journal_backlog_bytes") == 0 and stored >= sent:
                break
            time.sleep(0.5)
        store = doc.get("store", {})
        outcomes = store.get("outcomes", {})
        ok = (
            doc.get("journal_backlog_bytes") == 0
            and store.get("exchanges") == sent
            and outcomes == {"complete": sent}
            and not doc.get("drops")
        )
        return {
            "ok": ok,
            "sent_via_tapewire": sent,
            "stored_exchanges": store.get("exchanges"),
            "outcomes": outcomes,
            "drops": doc.get("drops"),
            "journal_backlog_bytes": doc.get("journal_backlog_bytes"),
            "store_size_bytes": store.get("size_bytes"),
            "waited_s": round(time.monotonic() - started, 2),
        }

    def start_fake(self) -> Server:
        return self.start_printing("fake", [sys.executable, str(BENCH / "fake_server.py")])

    def start_pass(self, upstream: str) -> Server:
        argv = [sys.executable, str(BENCH / "passthrough.py"), "--listen", "127.0.0.1:0"]
        return self.start_printing("pass", [*argv, "--upstream", upstream])

    def start_tapewire(
        self,
        db: Path,
        upstream: str,
        timeout: float = 30.0,
        command: list[str] | None = None,
        name: str = "tapewire",
    ) -> Server:
        """`tapewire serve` on a free port (command: how to invoke tapewire's CLI)."""
        argv = [*(command or [sys.executable, "-m", "tapewire"]), "serve"]
        argv += ["--listen", "127.0.0.1:0", "--db", str(db)]
        for provider in ("anthropic", "openai", "ollama"):
            argv += ["--upstream", f"{provider}={upstream}"]
        proc, log = self._spawn(name, argv, subprocess.DEVNULL, self.tapewire_env)
        server = Server(name, proc, "", log, db)
        self.servers.append(server)
        state_file = Path(str(db) + ".journal") / "serve.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"tapewire exited with {proc.returncode}\n{tail(log)}")
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(state_file.read_text())
                if state.get("pid") == proc.pid:
                    server.url = str(state["url"])
                    return server
            time.sleep(0.05)
        raise BenchError(f"tapewire did not write {state_file} in {timeout} s\n{tail(log)}")

    def stop(self, server: Server, timeout: float = 60.0) -> tuple[int | None, float]:
        """SIGTERM and wait; SIGKILL past the timeout. Returns (exit code, seconds taken)."""
        started = time.monotonic()
        proc = server.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                if server in self.servers:
                    self.servers.remove(server)
                return None, time.monotonic() - started
        if proc.stdout is not None:
            proc.stdout.close()
        if server in self.servers:
            self.servers.remove(server)
        return proc.returncode, time.monotonic() - started

    def close(self) -> None:
        for server in list(reversed(self.servers)):
            with contextlib.suppress(Exception):
                self.stop(server, timeout=10.0)


def tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- /proc


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def _stat_fields(path: str) -> list[str]:
    text = Path(path).read_text()
    return text[text.rindex(")") + 2 :].split()  # from field 3 (state) on


def descendants(pid: int) -> list[int]:
    """Every process below pid (tapewire may run its ingester in a worker process)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(f"/proc/{entry.name}/stat")[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(the process and its descendants, its main thread) CPU seconds, user + system.
    In a proxy the main thread runs the event loop; in tapewire the rest is the journal's
    fsync thread and the ingester (a thread, or a worker process)."""
    try:
        fields = _stat_fields(f"/proc/{pid}/stat")
        # utime + stime, + cutime + cstime of children already exited and reaped
        total = sum(int(fields[i]) for i in (11, 12, 13, 14))
        main = _stat_fields(f"/proc/{pid}/task/{pid}/stat")
        loop = int(main[11]) + int(main[12])
    except (OSError, ValueError, IndexError):
        return math.nan, math.nan
    for child in descendants(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            f = _stat_fields(f"/proc/{child}/stat")
            total += int(f[11]) + int(f[12])
    return total / CLK_TCK, loop / CLK_TCK


def tree_memory(pid: int) -> dict[str, int]:
    """The process's VmRSS and VmHWM, and the sums of its descendants' (KiB)."""
    mem = proc_memory(pid)
    mem["children"] = 0
    mem["children_VmRSS"] = mem["children_VmHWM"] = 0
    for child in descendants(pid):
        with contextlib.suppress(OSError):
            m = proc_memory(child)
            mem["children"] += 1
            mem["children_VmRSS"] += m.get("VmRSS", 0)
            mem["children_VmHWM"] += m.get("VmHWM", 0)
    return mem


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def open_fds(pid: int) -> int:
    try:
        return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return -1


# --------------------------------------------------------------------------- load


def new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=300),
        auto_decompress=False,  # bytes as they come; the client does not pay for gunzip
        timeout=aiohttp.ClientTimeout(total=300),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


@dataclass
class Run:
    """One stretch of load against one target."""

    sent: int = 0
    ok: int = 0
    errors: int = 0
    last_error: str = ""
    elapsed: float = 0.0
    latency: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)


async def fetch(session: aiohttp.ClientSession, url: URL, call: Call) -> tuple[int, bytes]:
    async with session.post(url, headers=call.headers, data=call.body) as resp:
        return resp.status, await resp.read()


async def drive(
    session: aiohttp.ClientSession,
    base: str,
    calls: list[Call],
    concurrency: int,
    duration: float,
    cap: int = ROUND_CAP,
) -> Run:
    """`concurrency` workers, each sending one call after another (cycling through `calls`),
    until `duration` seconds have passed or `cap` calls have been sent."""
    run = Run()
    urls = [URL(base + c.path, encoded=True) for c in calls]
    counter = itertools.count()
    clock = time.perf_counter
    deadline = clock() + duration

    async def worker() -> None:
        while clock() < deadline:
            i = next(counter)
            if i >= cap:
                return
            call = calls[i % len(calls)]
            run.sent += 1
            t0 = clock()
            first = 0.0
            size = 0
            try:
                async with session.post(
                    urls[i % len(urls)], headers=call.headers, data=call.body
                ) as resp:
                    status = resp.status
                    async for chunk in resp.content.iter_any():
                        if not size:
                            first = clock()
                        size += len(chunk)
            except (aiohttp.ClientError, TimeoutError) as e:
                run.errors += 1
                run.last_error = repr(e)
                continue
            t1 = clock()
            if status != 200 or (call.expect_size >= 0 and size != call.expect_size):
                run.errors += 1
                run.last_error = f"status {status}, {size} bytes (want {call.expect_size})"
                continue
            run.ok += 1
            run.latency.append(t1 - t0)
            run.ttfb.append((first or t1) - t0)

    start = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.elapsed = clock() - start
    return run


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Tally:
    """A target's runs in one workload x concurrency cell, with the CPU they cost."""

    runs: list[Run] = field(default_factory=list)
    server_cpu: float = 0.0
    server_loop_cpu: float = 0.0
    client_cpu: float = 0.0
    host_busy: int = 0
    host_total: int = 0

    def summary(self) -> dict[str, Any]:
        ok = sum(r.ok for r in self.runs)
        elapsed = sum(r.elapsed for r in self.runs)
        latency = sorted(x for r in self.runs for x in r.latency)
        ttfb = sorted(x for r in self.runs for x in r.ttfb)
        per_req = 1e6 / ok if ok else math.nan
        return {
            "requests": ok,
            "errors": sum(r.errors for r in self.runs),
            "last_error": next((r.last_error for r in self.runs if r.last_error), ""),
            "rps": ok / elapsed if elapsed else math.nan,
            "round_rps": [r.ok / r.elapsed if r.elapsed else math.nan for r in self.runs],
            "p50_ms": percentile(latency, 0.50) * 1e3,
            "p99_ms": percentile(latency, 0.99) * 1e3,
            "ttfb_p50_ms": percentile(ttfb, 0.50) * 1e3,
            "server_cpu_us_per_req": self.server_cpu * per_req,
            "server_loop_cpu_us_per_req": self.server_loop_cpu * per_req,
            "client_cpu_us_per_req": self.client_cpu * per_req,
            "cores_busy": (
                (self.host_busy / self.host_total) * (os.cpu_count() or 1)
                if self.host_total
                else math.nan
            ),
        }


@dataclass
class Bench:
    runner: asyncio.Runner
    servers: dict[str, Server]  # target -> the process that answers it (direct: the fake)
    urls: dict[str, str]
    sessions: dict[str, aiohttp.ClientSession]
    plan: Plan
    sent_via_tapewire: int = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def check_alive(self) -> None:
        """A server that died mid-run (or was killed from outside) makes every figure after
        it meaningless: stop there, and say which and how."""
        for server in self.servers.values():
            code = server.proc.poll()
            if code is not None:
                how = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
                raise BenchError(f"{server.name} (pid {server.pid}) {how}\n{tail(server.log)}")

    def measured(self, target: str, tally: Tally, calls: list[Call], concurrency: int) -> Run:
        pid = self.servers[target].pid
        cpu0, loop0 = cpu_seconds(pid)
        busy0, total0 = host_cpu()
        client0 = time.process_time()
        run = self.run(
            drive(self.sessions[target], self.urls[target], calls, concurrency, self.plan.round_s)
        )
        tally.client_cpu += time.process_time() - client0
        busy1, total1 = host_cpu()
        cpu1, loop1 = cpu_seconds(pid)
        tally.server_cpu += cpu1 - cpu0
        tally.server_loop_cpu += loop1 - loop0
        tally.host_busy += busy1 - busy0
        tally.host_total += total1 - total0
        tally.runs.append(run)
        if target == "tapewire":
            self.sent_via_tapewire += run.sent
        return run

    def cell(self, workload: Workload, concurrency: int) -> dict[str, Any]:
        for target in TARGETS:  # warm-up: connections, caches, the ingester's first batch
            run = self.run(
                drive(
                    self.sessions[target],
                    self.urls[target],
                    workload.calls,
                    concurrency,
                    self.plan.warmup_s,
                )
            )
            if target == "tapewire":
                self.sent_via_tapewire += run.sent
        tallies = {t: Tally() for t in TARGETS}
        for _ in range(self.plan.rounds):
            for target in TARGETS:
                self.measured(target, tallies[target], workload.calls, concurrency)
            self.check_alive()
        result = {t: tallies[t].summary() for t in TARGETS}
        direct = result["direct"]["p50_ms"]
        for t in TARGETS:
            result[t]["added_p50_ms"] = result[t]["p50_ms"] - direct
        tw, ps = result["tapewire"], result["pass"]
        ratios = [a / b for a, b in zip(tw["round_rps"], ps["round_rps"], strict=True) if b]
        result["tapewire_over_pass"] = {
            "rps_ratio": tw["rps"] / ps["rps"] if ps["rps"] else math.nan,
            "round_ratios": ratios,
            "added_p50_ms": tw["p50_ms"] - ps["p50_ms"],
            "cpu_ratio": tw["server_cpu_us_per_req"] / ps["server_cpu_us_per_req"]
            if ps["server_cpu_us_per_req"]
            else math.nan,
        }
        return result


async def open_sessions() -> dict[str, aiohttp.ClientSession]:
    return {t: new_session() for t in TARGETS}


async def close_sessions(sessions: dict[str, aiohttp.ClientSession]) -> None:
    for s in sessions.values():
        await s.close()


async def probe(base: str, calls: list[Call]) -> list[tuple[int, bytes]]:
    async with new_session() as session:
        return [await fetch(session, URL(base + c.path, encoded=True), c) for c in calls]


def learn_expectations(direct: str, wls: list[Workload], runner: asyncio.Runner) -> None:
    for wl in wls:
        for call, (status, body) in zip(wl.calls, runner.run(probe(direct, wl.calls)), strict=True):
            if status != 200:
                raise BenchError(f"{wl.name}: the fake answered {status}: {body[:200]!r}")
            call.expect_size = len(body)
            call.expect_sha256 = hashlib.sha256(body).hexdigest()


def check_transparent(url: str, wls: list[Workload], runner: asyncio.Runner) -> dict[str, Any]:
    """Each call once through a proxy: the body must be byte-identical to the fake's."""
    checked = mismatched = 0
    for wl in wls:
        for call, (status, body) in zip(wl.calls, runner.run(probe(url, wl.calls)), strict=True):
            checked += 1
            if status != 200 or hashlib.sha256(body).hexdigest() != call.expect_sha256:
                mismatched += 1
    return {"checked": checked, "mismatched": mismatched}


# --------------------------------------------------------------------------- memory


async def slow_streams(
    base: str, n: int, events: int, delay_ms: int, pid: int, status_url: str | None
) -> dict[str, Any]:
    """n paced streams at once, then the server is sampled every 100 ms until all have ended:
    the most streams open at once (as the client sees them, and as tapewire counts them), its
    RSS and open file descriptors.

    First n short streams (2 events 300 ms apart) open n keep-alive connections on both hops
    (client to proxy, proxy to fake), so that the measured streams need no connects: n connects
    in one burst overflow the servers' 128-deep listen backlogs, and the dropped SYNs are
    retried after a second, which would stagger the streams. Then all n start within ~0.2 s."""
    headers = paced_headers(events, delay_ms)
    url = URL(base + "/v1/chat/completions")
    expect = len(b"".join(f"data: {json.dumps({'i': k})}\n\n".encode() for k in range(events)))
    open_now = 0
    most: dict[str, int] = {"open_streams": 0, "VmRSS": 0, "open_fds": 0}
    started = time.perf_counter()
    async with new_session() as session:

        async def one() -> tuple[int, int]:
            nonlocal open_now
            async with session.post(url, headers=headers, data=CHAT_BODY) as resp:
                open_now += 1
                most["open_streams"] = max(most["open_streams"], open_now)
                try:
                    return resp.status, len(await resp.read())
                finally:
                    open_now -= 1

        async def short() -> None:
            async with session.post(url, headers=paced_headers(2, 300), data=CHAT_BODY) as resp:
                await resp.read()

        warm = [asyncio.create_task(short()) for _ in range(n)]
        await asyncio.gather(*warm, return_exceptions=True)
        warm_s = time.perf_counter() - started
        most["VmRSS"] = (await asyncio.to_thread(proc_memory, pid))["VmRSS"]
        started = time.perf_counter()
        tasks: list[asyncio.Task[tuple[int, int]]] = []
        for k in range(0, n, 25):
            tasks += [asyncio.create_task(one()) for _ in range(min(25, n - k))]
            await asyncio.sleep(0.01)
        ramp_s = time.perf_counter() - started
        while not all(t.done() for t in tasks):
            mem = await asyncio.to_thread(proc_memory, pid)
            most["VmRSS"] = max(most["VmRSS"], mem["VmRSS"])
            most["open_fds"] = max(most["open_fds"], await asyncio.to_thread(open_fds, pid))
            if status_url is not None:
                async with session.get(status_url) as resp:
                    in_flight = int((await resp.json())["capture"]["in_flight"])
                most["in_flight"] = max(most.get("in_flight", 0), in_flight)
            await asyncio.wait(tasks, timeout=0.1)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    good = sum(1 for r in results if isinstance(r, tuple) and r == (200, expect))
    errors = [repr(r) for r in results if isinstance(r, BaseException)][:3]
    return {
        "streams": n,
        "complete": good,
        "errors": errors,
        "warm_up_s": round(warm_s, 2),
        "ramp_s": round(ramp_s, 2),
        "wall_s": round(time.perf_counter() - started, 2),
        "stream_s": round((events - 1) * delay_ms / 1000, 2),
        "most_at_once": most,
    }


def memory_phase(procs: Processes, bench: Bench, fake: str, work: Path) -> dict[str, Any]:
    plan = bench.plan
    small = next(w for w in WORKLOADS if w.name == "small_json").calls
    out: dict[str, Any] = {}
    for kind in ("pass", "tapewire"):
        entry: dict[str, Any] = {}
        # 1. many small calls
        server = start_kind(procs, kind, fake, work / f"mem-{kind}-small.db")
        idle = tree_memory(server.pid)
        session_run = bench.run(drive_fresh(server.url, small, 8, plan.mem_requests))
        mem = tree_memory(server.pid)
        entry["small_json"] = {
            "requests": plan.mem_requests,
            "ok": session_run.ok,
            "errors": session_run.errors,
            "idle_rss_kib": idle["VmRSS"],
            "rss_after_kib": mem["VmRSS"],
            "peak_rss_kib": mem["VmHWM"],
        }
        if kind == "tapewire":
            assert server.db is not None
            entry["small_json"]["recorded"] = procs.verify_recorded(server.db, session_run.sent)
        entry["small_json"].update(children_peaks(server.pid))
        procs.stop(server)
        # 2. slow streams in flight at once
        server = start_kind(procs, kind, fake, work / f"mem-{kind}-slow.db")
        idle = tree_memory(server.pid)
        status_url = server.url + "/_tapewire/status" if kind == "tapewire" else None
        streams = bench.run(
            slow_streams(
                server.url,
                plan.slow_streams,
                plan.slow_events,
                plan.slow_delay_ms,
                server.pid,
                status_url,
            )
        )
        mem = tree_memory(server.pid)
        streams.update(idle_rss_kib=idle["VmRSS"], peak_rss_kib=mem["VmHWM"])
        if kind == "tapewire":
            assert server.db is not None
            streams["recorded"] = procs.verify_recorded(server.db, 2 * plan.slow_streams)
        streams.update(children_peaks(server.pid))
        procs.stop(server)
        entry["slow_streams"] = streams
        out[kind] = entry
    return out


def children_peaks(pid: int) -> dict[str, int]:
    """Peak RSS of the server's worker processes, read once they have done their work."""
    mem = tree_memory(pid)
    return {"worker_processes": mem["children"], "workers_peak_rss_kib": mem["children_VmHWM"]}


def start_kind(procs: Processes, kind: str, fake: str, db: Path) -> Server:
    if kind == "pass":
        return procs.start_pass(fake)
    return procs.start_tapewire(db, fake)


async def drive_fresh(base: str, calls: list[Call], concurrency: int, total: int) -> Run:
    async with new_session() as session:
        return await drive(session, base, calls, concurrency, duration=600.0, cap=total)


# --------------------------------------------------------------------------- storage


def dir_bytes(path: Path) -> tuple[int, dict[str, int]]:
    files = {
        str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()
    }
    return sum(files.values()), files


async def send_once(base: str, calls: list[Call]) -> list[bool]:
    async with new_session() as session:
        return [
            (status, len(body)) == (200, c.expect_size)
            for c in calls
            for status, body in [await fetch(session, URL(base + c.path, encoded=True), c)]
        ]


def storage_phase(procs: Processes, bench: Bench, fake: str, work: Path) -> dict[str, Any]:
    calls = next(w for w in WORKLOADS if w.name == "claude_turns").calls
    _, wire = recorded_turns()
    db = work / "storage" / "tapewire.db"
    db.parent.mkdir()
    server = procs.start_tapewire(db, fake)
    oks = bench.run(send_once(server.url, calls))
    code, took = procs.stop(server)
    journal = Path(str(db) + ".journal")
    sizes = {
        "db": db.stat().st_size if db.exists() else 0,
        "wal": Path(str(db) + "-wal").stat().st_size if Path(str(db) + "-wal").exists() else 0,
        "shm": Path(str(db) + "-shm").stat().st_size if Path(str(db) + "-shm").exists() else 0,
    }
    sizes["journal"], journal_files = dir_bytes(journal)
    checkpoint: Any = None
    with contextlib.suppress(OSError, ValueError):
        checkpoint = json.loads((journal / "checkpoint").read_text())
    total = sum(sizes.values())
    store_only = sizes["db"] + sizes["wal"] + sizes["shm"]
    doc = procs.tapewire_status(db)  # after measuring: opening the store may create -wal/-shm again
    store = doc.get("store", {})
    return {
        "turns_sent": len(calls),
        "turns_ok": sum(oks),
        "exit_code": code,
        "stop_s": round(took, 2),
        "wire_bytes": wire,
        "wire_bytes_expected": WIRE_BYTES,
        "bytes": sizes,
        "journal_files": journal_files,
        "journal_checkpoint": checkpoint,
        "total_bytes": total,
        "percent_of_wire": 100.0 * total / wire,
        "store_only_bytes": store_only,
        "store_only_percent_of_wire": 100.0 * store_only / wire,
        "goal_percent": 100 * STORAGE_GOAL,
        "stored_exchanges": store.get("exchanges"),
        "outcomes": store.get("outcomes"),
        "body_bytes": store.get("body_bytes"),
        "body_bytes_stored": store.get("body_bytes_stored"),
    }


WORKLOADS: list[Workload] = []


# --------------------------------------------------------------------------- report


def render_table(cells: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{'workload':<13}{'conc':>5} {'target':<9}{'req/s':>8} {'rounds min-max':>15}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'ttfb50':>8}{'+p50 ms':>9}"
        f"{'srv CPU/req':>12}{'loop CPU':>9}{'cli CPU/req':>12}{'cores':>6}{'tw/pass':>9}"
    )
    lines = [head, "-" * len(head)]
    for key, cell in cells.items():
        name, conc = key.rsplit("@", 1)
        for t in TARGETS:
            s = cell[t]
            rounds = [r for r in s["round_rps"] if not math.isnan(r)]
            spread = f"{min(rounds):.0f}-{max(rounds):.0f}" if rounds else "-"
            cpu = f"{s['server_cpu_us_per_req']:.0f} µs"
            loop = "" if t == "direct" else f"{s['server_loop_cpu_us_per_req']:.0f} µs"
            ratio = ""
            if t == "tapewire":
                ratio = f"{cell['tapewire_over_pass']['rps_ratio']:.3f}"
            added = "" if t == "direct" else f"{s['added_p50_ms']:+.3f}"
            errors = f"  ({s['errors']} errors: {s['last_error']})" if s["errors"] else ""
            lines.append(
                f"{name:<13}{conc:>5} {t:<9}{s['rps']:>8.0f} {spread:>15}"
                f"{s['p50_ms']:>8.3f}{s['p99_ms']:>8.3f}{s['ttfb_p50_ms']:>8.3f}{added:>9}"
                f"{cpu:>12}{loop:>9}{s['client_cpu_us_per_req']:>9.0f} µs{s['cores_busy']:>6.2f}{ratio:>9}"
                f"{errors}"
            )
        lines.append("")
    return "\n".join(lines)


def render_goals(cells: dict[str, dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    lines = [
        f"Goals at concurrency {', '.join(map(str, GOAL_CONCURRENCY))}: tapewire >= "
        f"{GOAL_RATIO}x the pass-through's req/s, and <= {GOAL_ADDED_MS} ms more p50 than it"
    ]
    verdicts: list[dict[str, Any]] = []
    for key, cell in cells.items():
        name, conc = key.rsplit("@", 1)
        if int(conc) not in GOAL_CONCURRENCY:
            continue
        twp = cell["tapewire_over_pass"]
        ratio_ok = twp["rps_ratio"] >= GOAL_RATIO
        added_ok = twp["added_p50_ms"] <= GOAL_ADDED_MS
        rr = twp["round_ratios"] or [math.nan]
        lines.append(
            f"  {name:<13} c={conc:<3} req/s {twp['rps_ratio']:.3f}x "
            f"(rounds {min(rr):.3f}-{max(rr):.3f}) {'met' if ratio_ok else 'MISSED'};"
            f"  p50 {twp['added_p50_ms']:+.3f} ms {'met' if added_ok else 'MISSED'};"
            f"  server CPU/req {twp['cpu_ratio']:.2f}x the pass-through's"
        )
        verdicts.append(
            {
                "cell": key,
                "rps_ratio": twp["rps_ratio"],
                "rps_ratio_met": ratio_ok,
                "added_p50_ms": twp["added_p50_ms"],
                "added_p50_met": added_ok,
            }
        )
    return "\n".join(lines), verdicts


def render_memory(mem: dict[str, Any]) -> str:
    lines = [
        "Memory (peak RSS = VmHWM of the server process, a fresh one per measurement; worker"
        " processes it started, if any, are reported apart):"
    ]
    for kind, entry in mem.items():
        s = entry["small_json"]
        lines.append(
            f"  {kind:<9} {s['requests']} small JSON calls at c=8: peak {s['peak_rss_kib'] / 1024:.1f} MiB"
            f" (idle {s['idle_rss_kib'] / 1024:.1f} MiB, after {s['rss_after_kib'] / 1024:.1f} MiB;"
            f" {s['ok']} ok, {s['errors']} errors)"
            + _workers(s)
            + (f"; recorded: {_rec(s['recorded'])}" if "recorded" in s else "")
        )
        t = entry["slow_streams"]
        most = t["most_at_once"]
        in_flight = f", tapewire in_flight {most['in_flight']}" if "in_flight" in most else ""
        lines.append(
            f"  {kind:<9} {t['streams']} slow streams at once: peak {t['peak_rss_kib'] / 1024:.1f} MiB"
            f" (idle {t['idle_rss_kib'] / 1024:.1f} MiB; at most {most['open_streams']} streams open"
            f" at once{in_flight}, {most['open_fds']} fds; {t['complete']}/{t['streams']} complete"
            f" in {t['wall_s']} s, started over {t['ramp_s']} s, each stream {t['stream_s']} s;"
            f" after {t['streams']} short warm-up streams)"
            + _workers(t)
            + (f"; recorded: {_rec(t['recorded'])}" if "recorded" in t else "")
        )
    return "\n".join(lines)


def _workers(m: dict[str, Any]) -> str:
    n = m.get("worker_processes", 0)
    if not n:
        return ""
    return f"; + {n} worker process{'es' if n > 1 else ''}, peak {m['workers_peak_rss_kib'] / 1024:.1f} MiB"


def _rec(r: dict[str, Any]) -> str:
    verdict = "all" if r["ok"] else "MISMATCH"
    return f"{verdict} ({r['stored_exchanges']} stored of {r['sent_via_tapewire']} sent, {r['outcomes']})"


def render_storage(st: dict[str, Any]) -> str:
    b = st["bytes"]
    return "\n".join(
        [
            f"Storage ({st['turns_ok']}/{st['turns_sent']} recorded turns sent once; tapewire stopped"
            f" with SIGTERM, exit {st['exit_code']} in {st['stop_s']} s):",
            f"  db {b['db']:,} + wal {b['wal']:,} + shm {b['shm']:,} + journal {b['journal']:,}"
            f" = {st['total_bytes']:,} bytes on disk",
            f"  against {st['wire_bytes']:,} wire bytes: {st['percent_of_wire']:.2f}%"
            f" (goal <= {st['goal_percent']:.0f}%: {'met' if st['percent_of_wire'] <= st['goal_percent'] else 'MISSED'})",
            f"  without the journal directory: {st['store_only_bytes']:,} bytes,"
            f" {st['store_only_percent_of_wire']:.2f}% of the wire bytes",
            f"  store: {st['stored_exchanges']} exchanges {st['outcomes']}; bodies"
            f" {st['body_bytes']:,} bytes kept in {st['body_bytes_stored']:,}",
            f"  journal files left: {st['journal_files']}; checkpoint {st['journal_checkpoint']}",
        ]
    )


# --------------------------------------------------------------------------- main


def environment() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        loop = f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        loop = "asyncio"
    return {
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "loop": loop,
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "loadavg_at_start": os.getloadavg(),
        "note": CPU_NOTE,
    }


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], capture_output=True, check=True, cwd=ROOT)
    return out.stdout.decode().strip()


def snapshot_tapewire(work: Path, rev: str | None) -> tuple[dict[str, str], dict[str, Any]]:
    """A private copy of the code under test, so that edits made to src/ while the benchmark
    runs cannot change it half-way: src/tapewire as committed at rev, or (rev None) as the
    working tree has it now. Returns the environment that makes tapewire processes import
    it (PYTHONPATH comes before the editable install's path), and what was copied."""
    dest = work / "tapewire-src"
    dest.mkdir()
    info: dict[str, Any] = {}
    if rev is not None:
        commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit, "src/tapewire"],
            capture_output=True,
            check=True,
            cwd=ROOT,
        )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(dest, filter="data")
        info.update(source=f"git {rev}", commit=commit[:12], dirty=False)
    else:
        shutil.copytree(
            ROOT / "src" / "tapewire",
            dest / "src" / "tapewire",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        info.update(source="working tree")
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            info["commit"] = _git("rev-parse", "--short=12", "HEAD")
            info["dirty"] = bool(_git("status", "--porcelain", "src"))
    digest = hashlib.sha256()
    for f in sorted((dest / "src").rglob("*.py")):
        digest.update(str(f.relative_to(dest)).encode() + b"\0" + f.read_bytes())
    info["files_sha256"] = digest.hexdigest()[:16]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(dest / "src"), os.environ.get("PYTHONPATH", "")) if p
    )
    found = subprocess.run(
        [sys.executable, "-c", "import tapewire; print(tapewire.__file__)"],
        capture_output=True,
        check=True,
        cwd=work,
        env=env,
    )
    if not found.stdout.decode().strip().startswith(str(dest)):
        raise BenchError(f"tapewire is not imported from the snapshot: {found.stdout!r}")
    return env, info


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return asyncio.new_event_loop


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as Ctrl-C: asyncio.Runner then cancels the load cleanly, and the finally
    blocks stop the subprocesses."""
    signal.raise_signal(signal.SIGINT)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny phases: checks the script works")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--rev",
        help="benchmark tapewire as committed at this git revision"
        " (default: src/tapewire as the working tree has it when the benchmark starts)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="tapewire-bench-"))
    try:
        env, source = snapshot_tapewire(work, args.rev)
    except (BenchError, subprocess.CalledProcessError) as e:
        shutil.rmtree(work, ignore_errors=True)
        detail = e.stderr.decode() if isinstance(e, subprocess.CalledProcessError) else ""
        progress(f"cannot take the code under test: {e} {detail}")
        return 2
    progress(f"tapewire under test: {source}")
    procs = Processes(work, env)
    started = time.time()
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "mode": "quick" if args.quick else "full",
        "plan": plan.__dict__,
        "environment": environment(),
        "tapewire_source": source,
    }
    failed = True
    interrupted = False
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            failed = run_all(procs, runner, plan, work, results)
    except KeyboardInterrupt:
        interrupted = True
        results["interrupted"] = True
        progress("interrupted: stopping the servers")
    finally:
        procs.close()
        results["duration_s"] = round(time.time() - started, 1)
        RESULTS.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = RESULTS / f"proxy_bench-{stamp}{'-quick' if args.quick else ''}.json"
        out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        progress(f"results: {out} ({results['duration_s']} s)")
        if args.keep or failed:
            progress(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if interrupted:
        return 130
    return 1 if failed else 0


def run_all(
    procs: Processes, runner: asyncio.Runner, plan: Plan, work: Path, results: dict[str, Any]
) -> bool:
    WORKLOADS[:] = workloads()
    fake = procs.start_fake()
    passthrough = procs.start_pass(fake.url)
    tapewire = procs.start_tapewire(work / "tapewire.db", fake.url)
    progress(f"fake {fake.url}, pass-through {passthrough.url}, tapewire {tapewire.url}")
    progress(CPU_NOTE)
    learn_expectations(fake.url, WORKLOADS, runner)
    results["transparency"] = {
        "pass": check_transparent(passthrough.url, WORKLOADS, runner),
        "tapewire": check_transparent(tapewire.url, WORKLOADS, runner),
    }
    sessions = runner.run(open_sessions())
    bench = Bench(
        runner,
        {"direct": fake, "pass": passthrough, "tapewire": tapewire},
        {"direct": fake.url, "pass": passthrough.url, "tapewire": tapewire.url},
        sessions,
        plan,
    )
    bench.sent_via_tapewire = sum(len(w.calls) for w in WORKLOADS)  # the transparency check
    cells: dict[str, dict[str, Any]] = {}
    try:
        for wl in WORKLOADS:
            for conc in CONCURRENCY:
                progress(f"throughput: {wl.name} at concurrency {conc}")
                cells[f"{wl.name}@{conc}"] = bench.cell(wl, conc)
    finally:
        runner.run(close_sessions(sessions))
    results["workloads"] = {w.name: w.title for w in WORKLOADS}
    results["throughput"] = cells
    table = render_table(cells)
    goals, verdicts = render_goals(cells)
    results["goals"] = verdicts

    progress("verifying that tapewire stored every exchange")
    assert tapewire.db is not None
    results["recorded"] = procs.verify_recorded(tapewire.db, bench.sent_via_tapewire)
    code, took = procs.stop(tapewire)
    results["recorded"].update(exit_code=code, stop_s=round(took, 2))
    procs.stop(passthrough)

    progress("memory")
    results["memory"] = memory_phase(procs, bench, fake.url, work)
    progress("storage")
    results["storage"] = storage_phase(procs, bench, fake.url, work)

    rec = results["recorded"]
    print()
    print(f"tapewire proxy benchmark ({results['mode']}), {results['environment']['cpu']}")
    src = results["tapewire_source"]
    print(
        f"tapewire under test: {src['source']}, commit {src.get('commit', '?')}"
        f"{' + uncommitted changes in src/' if src.get('dirty') else ''}"
        f" (files {src['files_sha256']})"
    )
    print(CPU_NOTE)
    print(
        "Columns: req/s over all rounds (and the per-round range); latency = request sent to"
        " last byte read; ttfb50 = to first body byte; +p50 = p50 minus direct's; srv CPU/req ="
        " CPU time of the answering process and its worker processes (direct: the fake) per"
        " request; loop CPU = the part of it on the proxy's main thread, its event loop (in"
        " tapewire the rest is the journal's fsync thread and the ingester, a thread or a"
        " worker process); cli CPU/req = the load generator's; cores = host cores busy during"
        " the rounds (of"
        f" {os.cpu_count()}); tw/pass = tapewire req/s / pass-through req/s."
    )
    print()
    for w in WORKLOADS:
        print(f"  {w.name}: {w.title}")
    print()
    print(table)
    print(goals)
    print()
    tp = results["transparency"]
    print(
        f"Transparency: responses byte-identical to the fake's: pass-through"
        f" {tp['pass']['checked'] - tp['pass']['mismatched']}/{tp['pass']['checked']},"
        f" tapewire {tp['tapewire']['checked'] - tp['tapewire']['mismatched']}/{tp['tapewire']['checked']}"
    )
    print(
        f"Recorded: {_rec(rec)}; drops {rec['drops']}; backlog {rec['journal_backlog_bytes']}"
        f" after {rec['waited_s']} s; stopped with exit {rec['exit_code']} in {rec['stop_s']} s"
    )
    print()
    print(render_memory(results["memory"]))
    print()
    print(render_storage(results["storage"]))
    ok = rec["ok"] and all(
        e[k].get("recorded", {"ok": True})["ok"]
        for e in results["memory"].values()
        for k in ("small_json", "slow_streams")
    )
    return not ok


if __name__ == "__main__":
    sys.exit(main())
