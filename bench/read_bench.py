"""Read-side latency and peak memory on a synthetic store of 10,000 sessions.

A generator builds a store of N sessions (default 10,000) holding ~M message nodes (default
1,000,000): Claude Code (Anthropic Messages, with thinking, a title side call and now and then
a `Task` subagent), Codex (OpenAI Responses) and unknown (OpenAI Chat) sessions, spread over
90 days, most of 20-200 messages, and one main-thread session of exactly 500 turns (499 turns
and its title call, ~1,000 messages). Each assistant message has text and 0-3 tool calls (12
Claude Code tools with realistic JSON arguments, Codex's shell/apply_patch, a few Chat
functions), each answered by the next request's tool results (some `is_error`). Texts are
windows over a seeded Zipf-distributed word stream, so full-text search sees realistic term
frequencies, and three rare marker words are sprinkled in. Usage grows with the context; cost
is priced from the packaged price table.

The generator builds the derived layer's records (`Derived`: sessions, threads, turns, nodes
with their real content-addressed ids, tool calls and results, search rows) directly and writes
them with `store.write_derived`, 200 exchanges a transaction, in time order across sessions
as a live proxy would; a second process makes the records while this one writes (about 4
minutes at full size on 2 cores, nearly all of it in `write_derived`). It never goes through
the codecs or the raw exchanges: the reads measured here touch only the derived layer. The
store is cached in `bench/results/` (gitignored), keyed by the parameters, the generator's
version and the schema; `--regenerate` builds it again.

Then each measurement runs in a fresh process that opens the store read-only, calls once to
warm up (reported as `first_ms`) and then `--reps` times, and reports p50/p95 and its peak RSS
(`VmHWM`):

- `sessions_first`: `tapewire.query.sessions(store, limit=50)`, the first page;
- `sessions_later`: the page 5,000 sessions down, where `sessions` takes a `before` cursor;
- `detail_500`: `tapewire.query.session_detail(store, <the 500-turn session>)`;
- `search_common`, `search_rare`: `tapewire.query.search(store, q, limit=20)` for a common word
  (in a third of all indexed texts) and a rare marker (`store.search_nodes(q, 20)` where
  `query.search` does not exist yet); `search_common_rank`: the common word with `rank=True`
  (most relevant first, bm25), where `search` has that option.

    python bench/read_bench.py                   # 10,000 sessions, 1,000,000 messages
    python bench/read_bench.py --quick           # 200 sessions, 20,000 messages
    python bench/read_bench.py --regenerate      # build the store again
    python bench/read_bench.py --profile         # cProfile of each measurement, to stderr

Goals (issue): p50 under 50 ms for a sessions page, 300 ms for `show` of a 500-turn session,
100 ms for a full-text search, on SQLite, with peak memory reported.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import heapq
import inspect
import itertools
import json
import multiprocessing
import os
import queue
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from tapewire.derive import search_rows
from tapewire.derive.nodes import node_id
from tapewire.derive.sessions import derived_id
from tapewire.model import Part, Usage
from tapewire.pricing import PriceTable, cost
from tapewire.store import Store, open_store
from tapewire.store.derived import (
    Derived,
    NodeRow,
    SessionRow,
    ThreadRow,
    ToolCallRow,
    ToolResultRow,
    TurnRow,
)
from tapewire.store.migrations import MIGRATIONS

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GEN_VERSION = 3  # bump when the generator changes what it writes
T_END = 1_795_478_400.0  # 2026-11-24 00:00 UTC: sessions fall in the 90 days before
DAYS = 90
BIG_TURNS = 500  # the `show` session: 499 main turns and its title call
BATCH = 200
COMMON = "file"  # about the 10th most frequent word
MARKERS = {"zyxquokka": 10, "plumbagolith": 100, "vexillarium": 1000}  # texts in a store, about
RARE = "zyxquokka"
GOALS_MS = {"sessions_first": 50, "sessions_later": 50, "detail_500": 300,
            "search_common": 100, "search_rare": 100, "search_common_rank": 100}  # fmt: skip

# ---- text --------------------------------------------------------------------------------

_HEAD = (
    "the to and of a in is it that for this you with on i be we not are as file test can if "
    "function error will should have from or but use so at now let me code an by all run "
    "fix need check add all line value return see what update change this one new data "
    "path type tests make which was there like just import class config when into call "
    "read output then method use case more default name its also only want after instead "
    "because string list get set first other no do my time module user request response "
    "here issue build server client first look version missing handle need before result "
    "args option each work current field key passing failing expected actual found support "
    "object index loop async await parse format message log debug warning branch commit "
    "merge diff patch review docs example local remote cache memory query table schema column "
    "row database migration session token auth login password api endpoint route handler "
    "component state props render style layout button form input event hook context provider "
    "store action reducer effect callback promise stream buffer socket thread process signal "
    "timeout retry queue worker job task schedule deploy release package dependency install"
)
HEAD = list(dict.fromkeys(_HEAD.split()))
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vi", "zo", "pe", "shi", "dra", "gul",
             "tor", "mek", "sar", "fin", "bel", "quo", "xen", "yar", "wun", "plo", "chi")  # fmt: skip
TAIL = 30_000


class Text:
    """Seeded text: windows over one Zipf-distributed word stream (so terms have the
    frequencies of prose, rank r drawn with weight 1/r), code lines, paths."""

    def __init__(self, seed: int, marker_rate: float) -> None:
        rng = random.Random(seed)
        tail: list[str] = []
        seen = set(HEAD)
        while len(tail) < TAIL:
            w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
            if w not in seen:
                seen.add(w)
                tail.append(w)
        vocab = HEAD + tail
        cum = list(itertools.accumulate(1.0 / (r + 1) for r in range(len(vocab))))
        self.stream = rng.choices(vocab, cum_weights=cum, k=2_000_000)
        self.idents = [w for w in vocab[:2000] if w.isidentifier()]
        self.code_lines = [self._code_line(rng) for _ in range(50_000)]
        self.projects = [
            f"/home/dev/{rng.choice(self.idents)}-{rng.choice(self.idents)}" for _ in range(300)
        ]
        self.markers = [(w, n * marker_rate) for w, n in MARKERS.items()]

    def _code_line(self, rng: random.Random) -> str:
        a, b, c = (rng.choice(self.idents) for _ in range(3))
        return rng.choice((
            f"def {a}_{b}(self, {c}):", f"    return {a}.{b}({c})", f"import {a}",
            f"from {a}.{b} import {c}", f"    {a} = {b}.get('{c}')", f"class {a.title()}{b.title()}:",
            f"    if not {a}:", f"        raise ValueError('{a} {b} {c}')", f"    # {a} {b} {c}",
            f"    for {a} in {b}:", f"        {a}.{b}({c}=True)", "", f"    assert {a} == {b}",
        ))  # fmt: skip

    def words(self, rng: random.Random, lo: int, hi: int) -> str:
        n = rng.randint(lo, hi)
        start = rng.randrange(len(self.stream) - n)
        out = self.stream[start : start + n]
        for word, rate in self.markers:
            if rng.random() < rate:
                out[rng.randrange(n)] = word
        return " ".join(out)

    def code(self, rng: random.Random, lo: int, hi: int, numbered: bool = False) -> str:
        n = rng.randint(lo, hi)
        start = rng.randrange(len(self.code_lines) - n)
        lines = self.code_lines[start : start + n]
        if numbered:
            first = rng.randint(1, 400)
            return "\n".join(f"{first + i:>6}\t{line}" for i, line in enumerate(lines))
        return "\n".join(lines)

    def path(self, rng: random.Random, project: str) -> str:
        ext = rng.choice((".py", ".py", ".py", ".ts", ".tsx", ".md", ".toml", ".rs"))
        return f"{project}/{rng.choice(('src', 'tests', 'lib', 'app'))}/{rng.choice(self.idents)}/{rng.choice(self.idents)}{ext}"


# ---- tool calls --------------------------------------------------------------------------

CLAUDE_TOOLS = {"Bash": 25, "Read": 25, "Edit": 15, "Grep": 8, "TodoWrite": 6, "Write": 5,
                "Glob": 4, "MultiEdit": 3, "WebFetch": 2, "WebSearch": 2, "Task": 2,
                "NotebookEdit": 1}  # fmt: skip
CODEX_TOOLS = {"shell": 65, "apply_patch": 25, "update_plan": 8, "view_image": 2}
CHAT_TOOLS = {"run_shell": 40, "read_file": 35, "search_code": 15, "write_file": 10}
COMMANDS = ("pytest {f} -q", "git status", "git diff --stat", "ruff check {d}", "npm test",
            "ls -la {d}", "grep -rn {w} {d}", "make build", "python -m {w}", "cargo test {w}",
            "git log --oneline -20", "cat {f}")  # fmt: skip


def tool_call(
    t: Text, rng: random.Random, name: str, project: str
) -> tuple[dict[str, Any], str, bool]:
    """(arguments, result text, is_error) of one call."""
    f = t.path(rng, project)
    d = f.rsplit("/", 1)[0]
    w = rng.choice(t.idents)
    cmd = rng.choice(COMMANDS).format(f=f, d=d, w=w)
    err = rng.random()
    if name in ("Bash", "shell", "run_shell"):
        if name == "Bash":
            args: dict[str, Any] = {"command": cmd, "description": t.words(rng, 3, 8)}
        elif name == "shell":
            args = {"command": ["bash", "-lc", cmd], "workdir": project, "timeout_ms": 120000}
        else:
            args = {"cmd": cmd}
        out = "\n".join(t.words(rng, 3, 14) for _ in range(rng.randint(1, 25)))
        if err < 0.12:
            return args, f"Exit code 1\n{out}\nError: {t.words(rng, 4, 12)}", True
        if name == "shell":
            out = f"Exit code: 0\nWall time: {rng.uniform(0.1, 30):.1f} seconds\nOutput:\n{out}"
        return args, out, False
    if name in ("Read", "read_file", "view_image"):
        args = {"file_path": f} if name == "Read" else {"path": f}
        if name == "Read" and rng.random() < 0.2:
            args |= {"offset": rng.randint(1, 400), "limit": rng.choice((50, 100, 200))}
        if err < 0.04:
            return args, "File does not exist.", True
        return args, t.code(rng, 20, 200, numbered=name == "Read"), False
    if name in ("Edit", "MultiEdit", "apply_patch", "NotebookEdit"):
        old, new = t.code(rng, 1, 8), t.code(rng, 1, 10)
        if name == "Edit":
            args = {"file_path": f, "old_string": old, "new_string": new}
        elif name == "MultiEdit":
            args = {"file_path": f, "edits": [{"old_string": t.code(rng, 1, 5),
                                                "new_string": t.code(rng, 1, 6)}
                                               for _ in range(rng.randint(2, 4))]}  # fmt: skip
        elif name == "NotebookEdit":
            args = {"notebook_path": f.rsplit(".", 1)[0] + ".ipynb",
                    "cell_id": f"cell-{rng.randint(1, 40)}", "new_source": new}  # fmt: skip
        else:
            body = (
                "\n".join(f"-{x}" for x in old.split("\n"))
                + "\n"
                + "\n".join(f"+{x}" for x in new.split("\n"))
            )
            args = {"input": f"*** Begin Patch\n*** Update File: {f}\n@@\n{body}\n*** End Patch"}
        if err < 0.08:
            return (
                args,
                f"<tool_use_error>String to replace not found in file.\nString: {old}</tool_use_error>",
                True,
            )
        if name == "apply_patch":
            return args, f"Success. Updated the following files:\nM {f}", False
        return args, (f"The file {f} has been updated. Here's the result of running `cat -n` on"
                      f" a snippet of the edited file:\n{t.code(rng, 5, 15, numbered=True)}"), False  # fmt: skip
    if name in ("Write", "write_file"):
        args = {"file_path" if name == "Write" else "path": f, "content": t.code(rng, 10, 80)}
        return args, f"File created successfully at: {f}", False
    if name in ("Grep", "search_code"):
        args = ({"pattern": w, "path": d, "output_mode": "content", "-n": True} if name == "Grep"
                else {"query": w})  # fmt: skip
        hits = "\n".join(
            f"{t.path(rng, project)}:{rng.randint(1, 900)}:{rng.choice(t.code_lines)}"
            for _ in range(rng.randint(0, 40))
        )
        return args, hits or "No matches found", False
    if name == "Glob":
        args = {"pattern": rng.choice(("**/*.py", "src/**/*.ts", "tests/**/test_*.py"))}
        return args, "\n".join(t.path(rng, project) for _ in range(rng.randint(1, 40))), False
    if name in ("TodoWrite", "update_plan"):
        items = [{"content": t.words(rng, 3, 10), "status": rng.choice(("pending", "in_progress", "completed")),
                  "activeForm": t.words(rng, 3, 8)} for _ in range(rng.randint(2, 6))]  # fmt: skip
        args = {"todos": items} if name == "TodoWrite" else {"plan": items}
        return args, ("Todos have been modified successfully. Ensure that you continue to use the"
                      " todo list to track your progress."), False  # fmt: skip
    if name == "WebFetch":
        args = {
            "url": f"https://docs.{w}.dev/{rng.choice(t.idents)}",
            "prompt": t.words(rng, 5, 15),
        }
        if err < 0.1:
            return args, "Request failed with status code 404", True
        return args, t.words(rng, 50, 300), False
    if name == "WebSearch":
        return {"query": t.words(rng, 3, 8)}, t.words(rng, 50, 250), False
    raise ValueError(name)


# ---- sessions ----------------------------------------------------------------------------

HARNESSES = {  # api, provider, result role, models (weighted), share of sessions
    "claude-code": ("anthropic.messages", "anthropic", "user",
                    {"claude-sonnet-4-5": 6, "claude-opus-4-5": 2, "claude-sonnet-4-6": 2}, 0.6),
    "codex": ("openai.responses", "openai", "tool", {"gpt-5-codex": 3, "gpt-5": 1}, 0.25),
    "unknown": ("openai.chat", "openai", "tool", {"gpt-4o": 2, "gpt-4.1": 1, "gpt-4o-mini": 1}, 0.15),
}  # fmt: skip
TOOLS_DOC = {h: hashlib.sha256(h.encode()).hexdigest() for h in HARNESSES}
TITLE_SYSTEM = ("Summarize this coding conversation in a 5-10 word title. Return JSON with a"
                " single 'title' field.")  # fmt: skip


def _uuid7(ts: float, rng: random.Random) -> str:
    rand = rng.getrandbits(74)
    value = (int(ts * 1000) << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62)
    h = f"{value | (rand & ((1 << 62) - 1)):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


class Session:
    """One session's exchanges in time order, as the `Derived` records derivation makes."""

    def __init__(self, gen: StoreGen, index: int, harness: str, start: float, budget: int,
                 big: bool = False) -> None:  # fmt: skip
        self.g, self.t = gen, gen.text
        self.rng = random.Random(gen.seed * 1_000_003 + index)
        self.harness, self.start, self.budget, self.big = harness, start, budget, big
        self.api, self.provider, self.result_role, models, _ = HARNESSES[harness]
        self.model = _pick(self.rng, models)
        self.project = self.rng.choice(self.t.projects)
        self.hsid = _uuid7(start, self.rng) if harness != "unknown" else None
        self.key = ""
        self.id = ""
        self.nodes = 0  # message nodes made for this session
        self.turns = 0

    def _node(self, d: Derived, parent: str | None, depth: int, role: str,
              parts: list[Part]) -> str:  # fmt: skip
        content = [p.canonical() for p in parts]
        nid = node_id(parent, role, content)
        d.nodes.append(NodeRow(nid, parent, role, content, depth, d.turn.exchange))
        d.search.extend(search_rows(nid, role, parts))
        self.nodes += 1
        return nid

    def _request(self, d: Derived, tip: str | None, depth: int,
                 pending: list[tuple[str, list[Part]]]) -> tuple[str | None, int]:  # fmt: skip
        """The request's new messages as nodes, and the tool results they carry."""
        thread = d.thread.id if d.thread else None
        for role, parts in pending:
            tip = self._node(d, tip, depth, role, parts)
            depth += 1
            d.turn.input_nodes.append(tip)
            d.tool_results += [
                ToolResultRow(self.id, thread, p.id or "", p.is_error, d.turn.exchange, tip,
                              d.turn.started_at)
                for p in parts if p.type == "tool_result"
            ]  # fmt: skip
        d.turn.request_node = tip
        return tip, depth

    def _system(self, kind: str) -> list[Part]:
        """The system prompt, shared by the sessions of one harness in one project."""
        rng = random.Random(f"{self.harness}|{self.project}|{kind}")
        if kind == "main":
            head = f"You are {self.harness}. Working directory: {self.project}\n"
            return [Part("text", text=head + self.t.words(rng, 600, 1500))]
        return [Part("text", text=self.t.words(rng, 100, 300))]

    def _derived(self, started: float, ended: float, thread: ThreadRow | None, kind: str,
                 model: str) -> Derived:  # fmt: skip
        ex = _uuid7(started, self.rng)
        key: str | None = None
        if not self.id:
            self.key = f"{self.harness}:{self.hsid}" if self.hsid else f"chain:{ex}"
            self.id = derived_id("session", self.key)
            key = self.key
        elif self.hsid:
            key = self.key  # the harness's id names every exchange; continuity names none
        session = SessionRow(self.id, key, self.harness, self.hsid, None, started, ended)
        turn = TurnRow(
            exchange=ex, session=self.id, thread=thread.id if thread else None, kind=kind,
            api=self.api, model=model, response_model=model, response_id=None, started_at=started,
            duration_ms=round((ended - started) * 1000, 3),
            ttfb_ms=round(min(ended - started, self.rng.uniform(0.4, 3)) * 1000, 3), status=200,
            outcome="complete", stop_reason=None, error=None, request_node=None, response_nodes=[],
            input_nodes=[], tools_doc=TOOLS_DOC[self.harness] if kind != "side" else None,
            params={"max_tokens": 32000}, usage=Usage(), cost_usd=None, stream=True,
        )  # fmt: skip
        self.turns += 1
        return Derived(turn, session, thread)

    def _respond(self, d: Derived, tip: str | None, depth: int, parts: list[Part], model: str,
                 ctx: int, prev_ctx: int) -> str:  # fmt: skip
        rid = self._node(d, tip, depth, "assistant", parts)
        d.turn.response_nodes = [rid]
        calls = [p for p in parts if p.type == "tool_call"]
        d.turn.stop_reason = "tool_use" if calls else "end_turn"
        ended = d.turn.started_at + (d.turn.duration_ms or 0) / 1000
        d.tool_calls = [
            ToolCallRow(self.id, d.thread.id if d.thread else None, p.id or "", p.name,
                        p.arguments, d.turn.exchange, rid, ended)
            for p in calls
        ]  # fmt: skip
        out_chars = sum(len(p.text or "") + len(json.dumps(p.arguments or "")) for p in parts)
        rng = self.rng
        out = max(1, out_chars // 4 + rng.randint(20, 400))
        if self.api == "anthropic.messages":
            u = Usage(ctx, out, prev_ctx, ctx - prev_ctx, 0, None)
        elif self.api == "openai.responses":
            u = Usage(ctx, out, prev_ctx // 128 * 128, 0, None, rng.randint(0, out))
        else:
            u = Usage(ctx, out, prev_ctx // 128 * 128 if rng.random() < 0.7 else 0, 0, None, None)
        d.turn.usage = u
        d.turn.cost_usd = cost(u, self.g.price(model, self.provider))
        return rid

    def _call_id(self) -> str:
        tail = "".join(self.rng.choices(ALPHABET, k=24))
        return f"toolu_01{tail[:22]}" if self.api == "anthropic.messages" else f"call_{tail}"

    def _results(self, calls: list[tuple[str, str, bool]]) -> list[tuple[str, list[Part]]]:
        """The next request's message(s) answering `calls` (call id, output, is_error)."""

        def part(cid: str, out: str, err: bool) -> Part:
            # Only Anthropic's wire says whether a result is an error.
            is_error = err if self.api == "anthropic.messages" else None
            return Part("tool_result", id=cid, content=[Part("text", text=out)], is_error=is_error)

        if self.api == "openai.chat":  # one tool message per result
            return [("tool", [part(*c)]) for c in calls]
        return [(self.result_role, [part(*c) for c in calls])]

    def exchanges(self) -> Iterator[Derived]:
        rng, t = self.rng, self.t
        tools = {"claude-code": CLAUDE_TOOLS, "codex": CODEX_TOOLS}.get(self.harness, CHAT_TOOLS)
        if self.big:
            tools = {k: v for k, v in tools.items() if k != "Task"}
        thread = ThreadRow("", "", "main", None, self.start)
        ask = t.words(rng, 8, 60)
        pending = [("system", self._system("main")), ("user", [Part("text", text=ask)])]
        tip: str | None = None
        depth = ctx = prev_ctx = answered = 0
        titled = self.big or (self.harness == "claude-code" and rng.random() < 0.85)
        now = self.start
        while True:
            dur = min(rng.lognormvariate(2.0, 0.7), 120.0)
            d = self._derived(now, now + dur, thread, "main", self.model)
            if not thread.id:
                thread.id, thread.session = derived_id("thread", self.id, "main"), self.id
            ctx += sum(len(str(p[1][0].canonical())) for p in pending) // 4
            tip, depth = self._request(d, tip, depth, pending)
            pending = []
            if (
                not self.big and rng.random() < 0.005
            ):  # overloaded: no answer; the agent resends the request
                d.turn.status, d.turn.error, d.turn.stop_reason = 529, "overloaded_error", None
                d.turn.duration_ms = round(rng.uniform(200, 2000), 3)
                d.session.ended_at = now + d.turn.duration_ms / 1000
                now += rng.uniform(1, 10)
                yield d
                continue
            answered += 1
            last = answered >= BIG_TURNS - 1 if self.big else self.nodes >= self.budget
            parts: list[Part] = []
            if self.api == "anthropic.messages" and rng.random() < 0.4:
                parts.append(Part("thinking", text=t.words(rng, 20, 200), signature="sig"))
            parts.append(Part("text", text=t.words(rng, 10, 120)))
            calls: list[tuple[str, str, bool]] = []
            spawns: list[tuple[int, str, str]] = []
            for _ in range(0 if last else rng.choices((0, 1, 2, 3), (25, 50, 15, 10))[0]):
                name, cid = _pick(rng, tools), self._call_id()
                if name == "Task":
                    args: dict[str, Any] = {"description": t.words(rng, 3, 5),
                                            "prompt": t.words(rng, 30, 100),
                                            "subagent_type": "general-purpose"}  # fmt: skip
                    spawns.append((len(calls), cid, args["prompt"]))
                    out, err = "", False
                else:
                    args, out, err = tool_call(t, rng, name, self.project)
                calls.append((cid, out, err))
                parts.append(Part("tool_call", id=cid, name=name, arguments=args))
            tip = self._respond(d, tip, depth, parts, self.model, ctx, prev_ctx)
            depth += 1
            prev_ctx, ctx = ctx, ctx + d.turn.usage.output_tokens  # type: ignore[operator]
            now += dur
            yield d
            if titled and answered == 1:  # the title call, beside the conversation
                yield self._title(now + rng.uniform(0.1, 2), ask)
            if last:
                return
            if not calls:  # the user asks the next thing
                now += rng.uniform(15, 900)
                pending = [("user", [Part("text", text=t.words(rng, 5, 80))])]
                continue
            for i, cid, prompt in spawns:  # a subagent runs while its Task call waits
                now, answer = yield from self._subagent(now, cid, prompt)
                calls[i] = (cid, answer, False)
            now += rng.uniform(0.2, 15)
            pending = self._results(calls)

    def _title(self, at: float, ask: str) -> Derived:
        rng = self.rng
        d = self._derived(at, at + rng.uniform(0.5, 2), None, "side", "claude-haiku-4-5")
        d.turn.params = {"max_tokens": 512}
        pending = [
            ("system", [Part("text", text=TITLE_SYSTEM)]),
            ("user", [Part("text", text=ask)]),
        ]
        tip, depth = self._request(d, None, 0, pending)
        title = self.t.words(rng, 3, 8).capitalize()
        reply = [Part("text", text=json.dumps({"title": title}))]
        self._respond(d, tip, depth, reply, "claude-haiku-4-5", len(ask) // 4 + 40, 0)
        d.session.title = title
        return d

    def _subagent(self, now: float, spawned_by: str,
                  prompt: str) -> Generator[Derived, None, tuple[float, str]]:  # fmt: skip
        rng, t = self.rng, self.t
        agent = f"a{rng.getrandbits(64):016x}"
        thread = ThreadRow(derived_id("thread", self.id, "agent", agent), self.id, "subagent",
                           agent, now, spawned_by)  # fmt: skip
        pending = [("system", self._system("agent")), ("user", [Part("text", text=prompt)])]
        tip: str | None = None
        depth, answer = 0, ""
        n = rng.randint(3, 12)
        for i in range(n):
            now += rng.uniform(0.2, 3)
            dur = min(rng.lognormvariate(1.5, 0.6), 60.0)
            d = self._derived(now, now + dur, thread, "subagent", "claude-haiku-4-5")
            tip, depth = self._request(d, tip, depth, pending)
            answer = t.words(rng, 30, 200)
            parts = [Part("text", text=answer)]
            calls = []
            for _ in range(rng.randint(1, 3) if i < n - 1 else 0):
                cid, name = (
                    self._call_id(),
                    _pick(rng, {"Read": 5, "Grep": 3, "Glob": 1, "Bash": 2}),
                )
                args, out, err = tool_call(t, rng, name, self.project)
                parts.append(Part("tool_call", id=cid, name=name, arguments=args))
                calls.append((cid, out, err))
            tip = self._respond(d, tip, depth, parts, "claude-haiku-4-5", 2000 + depth * 300,
                                1500 + depth * 300)  # fmt: skip
            depth += 1
            now += dur
            pending = self._results(calls)
            yield d
        return now, answer


class StoreGen:
    def __init__(self, seed: int, sessions: int, messages: int) -> None:
        self.seed, self.sessions, self.messages = seed, sessions, messages
        self.text = Text(seed, 1 / (3 * messages))  # about 3 runs of words a message
        self.prices = PriceTable.load()
        self._price: dict[tuple[str, str], Any] = {}

    def price(self, model: str, provider: str) -> Any:
        key = (model, provider)
        if key not in self._price:
            self._price[key] = self.prices.lookup(model, provider=provider)
        return self._price[key]

    def plan(self) -> list[Session]:
        """Sessions with their message budgets (log-normal, most 20-200) and start times."""
        rng = random.Random(self.seed)
        raw = [rng.lognormvariate(0, 0.6) for _ in range(self.sessions - 1)]
        scale = max(self.messages - 2 * BIG_TURNS, 6 * self.sessions) / sum(raw)
        shares = [h for h, v in HARNESSES.items() for _ in range(round(v[4] * 100))]
        big_at = rng.randrange(self.sessions)
        out = []
        for i in range(self.sessions):
            if i == big_at:
                out.append(Session(self, i, "claude-code", T_END - 3 * 86400, 0, big=True))
                continue
            budget = max(6, min(round(raw.pop() * scale), 2000))
            span = budget * 60.0  # about a minute a message: stay inside the window
            start = rng.uniform(T_END - DAYS * 86400, T_END - span)
            out.append(Session(self, i, rng.choice(shares), start, budget))
        return out


ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _produce(seed: int, sessions: int, messages: int, out: Any) -> None:
    """In a process of its own, so that making records and writing them overlap: the records
    in time order, in batches, then a summary."""
    plan = StoreGen(seed, sessions, messages).plan()
    batch: list[Derived] = []
    for d in heapq.merge(*(s.exchanges() for s in plan), key=lambda d: d.turn.started_at):
        batch.append(d)
        if len(batch) >= BATCH:
            out.put(batch)
            batch = []
    out.put(batch)
    big = next(s for s in plan if s.big)
    out.put({"messages_made": sum(s.nodes for s in plan), "big_session": big.id,
             "big_session_turns": big.turns})  # fmt: skip


def fill(
    store: Store, seed: int, sessions: int, messages: int, t0: float
) -> tuple[dict[str, Any], int, float, float]:
    """Write the synthetic store's records into `store` as a process of their own makes them:
    (the generator's summary, turns written, seconds writing, seconds waiting for records)."""
    records: Any = multiprocessing.Queue(maxsize=16)
    producer = multiprocessing.Process(
        target=_produce, args=(seed, sessions, messages, records), daemon=True
    )
    producer.start()
    turns, write_s, wait_s, shown = 0, 0.0, 0.0, time.perf_counter()
    try:
        while True:
            w = time.perf_counter()
            try:
                batch = records.get(timeout=5)
            except queue.Empty:
                if not producer.is_alive():
                    raise RuntimeError("the generating process died") from None
                continue
            finally:
                wait_s += time.perf_counter() - w
            if isinstance(batch, dict):
                return batch, turns, write_s, wait_s
            w = time.perf_counter()
            store.write_derived(batch)
            write_s += time.perf_counter() - w
            turns += len(batch)
            if time.perf_counter() - shown > 15:
                shown = time.perf_counter()
                print(f"  ... {turns:,} turns, {shown - t0:.0f} s", file=sys.stderr)
    finally:
        producer.join(timeout=10)
        if producer.is_alive():
            producer.terminate()


def build(path: Path, seed: int, sessions: int, messages: int) -> dict[str, Any]:
    """Write the synthetic store to `path` (through a temporary name: a build cut short is
    never mistaken for a cached store)."""
    t0 = time.perf_counter()
    tmp = path.with_name(path.name + ".tmp")
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    store = open_store(tmp)
    # This writer's own settings, not the file's: a bigger cache, no fsync and a checkpoint
    # every 400 MB rather than every 4 MB of WAL (together ~30 % faster).
    for pragma in ("cache_size = -262144", "synchronous = OFF", "wal_autocheckpoint = 100000"):
        store.conn.execute(f"PRAGMA {pragma}")  # type: ignore[attr-defined]
    try:
        summary, turns, write_s, wait_s = fill(store, seed, sessions, messages, t0)
    finally:
        store.close()
    tmp.rename(path)
    return {
        "sessions": sessions, "messages_target": messages, "seed": seed, "turns": turns,
        **summary, "generate_seconds": round(time.perf_counter() - t0, 1),
        "write_derived_seconds": round(write_s, 1),
        "writer_waiting_seconds": round(wait_s, 1),  # for the generating process
    }  # fmt: skip


TABLES = ("sessions", "threads", "turns", "nodes", "tool_calls", "search_rows")
_HITS = "SELECT count(*) FROM search WHERE search MATCH ?"


def describe(path: Path) -> dict[str, Any]:
    """What the store holds (counted once, after the build; not timed)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)

    def one(sql: str, *args: Any) -> Any:
        return conn.execute(sql, args).fetchone()[0]

    out: dict[str, Any] = {
        "db_bytes": path.stat().st_size,
        "rows": {t: one(f"SELECT count(*) FROM {t}") for t in TABLES},
        "tool_errors": one("SELECT count(*) FROM tool_calls WHERE is_error = 1"),
        "harnesses": dict(conn.execute("SELECT harness, count(*) FROM sessions GROUP BY 1")),
        "search_hits": {w: one(_HITS, w) for w in (COMMON, *MARKERS)},
    }
    with contextlib.suppress(sqlite3.OperationalError):  # SQLite built without dbstat
        out["table_bytes"] = dict(conn.execute(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 12"))  # fmt: skip
    per = [r[0] for r in conn.execute("SELECT count(*) FROM nodes GROUP BY exchange")]
    out["messages_per_session"] = _quantiles([
        r[0] for r in conn.execute(
            "SELECT count(*) FROM nodes n JOIN turns t ON t.exchange = n.exchange GROUP BY t.session")
    ])  # fmt: skip
    out["new_messages_per_turn_mean"] = round(statistics.fmean(per), 2) if per else 0
    conn.close()
    return out


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    s = sorted(values)
    at = {f"p{round(p * 100)}": s[min(len(s) - 1, int(p * len(s)))] for p in (0.1, 0.5, 0.9)}
    return {"min": s[0], **at, "max": s[-1]}


# ---- measuring ---------------------------------------------------------------------------


def _case(store: Any, name: str, big: str) -> tuple[Any, str]:
    """The call to time, and a note on what it calls."""
    from tapewire import query

    if name == "sessions_first":
        return lambda: query.sessions(store, limit=50), "query.sessions(limit=50)"
    if name == "sessions_later":
        params = inspect.signature(query.sessions).parameters
        if "before" not in params:
            return None, "query.sessions takes no `before` cursor yet: skipped"
        total = store.conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
        skip = max(50, min(5000, (total - 50) // 50 * 50))
        row = store.conn.execute("SELECT started_at, id FROM sessions ORDER BY started_at DESC,"
                                 " id LIMIT 1 OFFSET ?", (skip - 1,)).fetchone()  # fmt: skip
        before = (row[0], row[1])
        note = f"query.sessions(limit=50, before=<the {skip:,}th session>)"
        return lambda: query.sessions(store, limit=50, before=before), note
    if name == "detail_500":
        return lambda: query.session_detail(store, big), "query.session_detail(<500 turns>)"
    word = RARE if name == "search_rare" else COMMON
    search = getattr(query, "search", None)
    if search is None:
        if name.endswith("_rank"):
            return None, "query.search does not exist yet: skipped"
        return lambda: store.search_nodes(word, 20), (
            f"store.search_nodes({word!r}, 20): query.search does not exist yet"
        )
    if name.endswith("_rank"):  # most relevant first (bm25), where search offers it
        if "rank" not in inspect.signature(search).parameters:
            return None, "query.search has no `rank` option: skipped"
        return lambda: search(store, word, limit=20, rank=True), (
            f"query.search({word!r}, limit=20, rank=True)"
        )
    return lambda: search(store, word, limit=20), f"query.search({word!r}, limit=20)"


def _size(result: Any) -> int:
    if isinstance(result, dict):
        return len(result.get("turns") or result.get("results") or result.get("hits") or [])
    return len(result) if hasattr(result, "__len__") else 0


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve,
    so a child would report its parent's peak (the generator's) when that was higher."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(path: Path, name: str, reps: int, big: str, profile: bool) -> dict[str, Any]:
    rss_start = _peak_rss_mb()
    store = open_store(path, readonly=True)
    call, note = _case(store, name, big)
    if call is None:
        return {"name": name, "skipped": note}
    t = time.perf_counter()
    result = call()
    first = (time.perf_counter() - t) * 1000
    times = []
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    for _ in range(reps):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000)
    if prof is not None:
        import io
        import pstats

        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
        print(f"==== {name}: {note}\n{buf.getvalue()}", file=sys.stderr)
    times.sort()
    out: dict[str, Any] = {
        "name": name, "calls": note, "reps": reps,
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 2),
        "min_ms": round(times[0], 2), "first_ms": round(first, 2), "rows": _size(result),
        "json_bytes": len(json.dumps(result, default=str)),
        "rss_before_store_mb": round(rss_start, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }  # fmt: skip
    store.close()
    goal = GOALS_MS[name]
    out |= {"goal_ms": goal, "met": out["p50_ms"] < goal}
    return out


def _git() -> dict[str, Any]:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=HERE, env=env, capture_output=True, text=True,
                              check=False)  # fmt: skip

    head = run("rev-parse", "--short", "HEAD").stdout.strip()
    dirty = run("diff", "--quiet", "HEAD", "--", "../src").returncode != 0
    return {"commit": head, "src_dirty": dirty}


def cached_store(
    sessions: int, messages: int, seed: int, regenerate: bool = False
) -> tuple[Path, dict[str, Any], bool]:
    """The generated store for these parameters (built if missing): path, description, and
    whether it came from the cache. bench/ui_bench.py measures the web UI on the same store."""
    RESULTS.mkdir(exist_ok=True)
    schema = hashlib.sha256("".join(sql for _, sql in MIGRATIONS).encode()).hexdigest()[:8]
    stem = f"read_bench-{sessions}s-{messages}m-seed{seed}-g{GEN_VERSION}-{schema}"
    db, meta_path = RESULTS / f"{stem}.db", RESULTS / f"{stem}.json"
    if regenerate or not db.exists() or not meta_path.exists():
        db.unlink(missing_ok=True)
        print(f"generating {db.name} ...", file=sys.stderr)
        meta = build(db, seed, sessions, messages)
        meta |= describe(db)
        meta_path.write_text(json.dumps(meta, indent=2))
        return db, meta, False
    return db, json.loads(meta_path.read_text()), True


def store_parser(doc: str | None, reps: int) -> argparse.ArgumentParser:
    """The options that pick the generated store (and the repetitions), for this bench and
    bench/ui_bench.py."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="200 sessions, 20,000 messages")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reps", type=int, default=reps)
    return parser


def main() -> None:
    parser = store_parser(__doc__, reps=30)
    parser.add_argument("--regenerate", action="store_true", help="build the store again")
    parser.add_argument("--profile", action="store_true", help="cProfile each case, to stderr")
    parser.add_argument("--measure", nargs=3, metavar=("DB", "CASE", "BIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        db, case, big = args.measure
        print(json.dumps(measure(Path(db), case, args.reps, big, args.profile)))
        return
    if args.quick:
        args.sessions, args.messages = 200, 20_000
    db, meta, cached = cached_store(args.sessions, args.messages, args.seed, args.regenerate)
    cases = []
    for name in GOALS_MS:
        out = subprocess.run(
            [sys.executable, __file__, "--reps", str(args.reps), "--measure", str(db), name,
             meta["big_session"], *(["--profile"] if args.profile else [])],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        sys.stderr.write(out.stderr)
        cases.append(json.loads(out.stdout))
    result = {"store": str(db), "store_cached": cached, **_git(), "generation": meta,
              "cases": cases}  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"read_bench-{stamp}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"\n{meta['sessions']:,} sessions, {meta['turns']:,} turns, {meta['messages_made']:,}"
          f" messages, {meta['db_bytes'] / 2**20:,.0f} MiB; generated in"
          f" {meta['generate_seconds']} s{' (cached)' if cached else ''}")  # fmt: skip
    print(f"{'case':<20}{'p50 ms':>9}{'p95 ms':>9}{'first ms':>10}{'peak RSS':>10}"
          f"{'goal':>8}  result")  # fmt: skip
    for c in cases:
        if "skipped" in c:
            print(f"{c['name']:<20}{'':>46}  {c['skipped']}")
            continue
        verdict = "met" if c["met"] else "MISSED"
        print(f"{c['name']:<20}{c['p50_ms']:>9.1f}{c['p95_ms']:>9.1f}{c['first_ms']:>10.1f}"
              f"{c['peak_rss_mb']:>8.1f}MB{c['goal_ms']:>6}ms  {verdict}  ({c['calls']})")  # fmt: skip


if __name__ == "__main__":
    main()
