"""`tapewire.analysis.diff`: two runs side by side. Hand-built `session_detail` results for each
kind of difference, then the recorded Claude Code session replayed three times through a real
proxy: twice as recorded (identical), once with one tool's result changed."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import RECORDING, settings_for, stored
from fakeprovider import FakeProvider, RecordedTurn, load_recording
from servecli import cli
from tapewire.analysis.diff import RESULT_CHARS, diff_sessions
from tapewire.query import resolve_session, session_detail
from tapewire.service import ServiceThread
from tapewire.store.location import DbRef

# --------------------------------------------------------------------------- hand-built runs


@dataclass
class Call:
    name: str
    arguments: dict[str, Any]
    result: str
    is_error: bool = False


@dataclass
class Step:
    """One main-thread turn: the model says `text` and makes `calls`."""

    text: str = ""
    calls: list[Call] = field(default_factory=list)
    cost_usd: float | None = 0.01


def _node(parent: str | None, role: str, parts: list[dict[str, Any]]) -> str:
    doc = json.dumps({"parent": parent, "role": role, "content": parts}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def build(
    name: str, steps: list[Step], *, prompt: str = "fix the bug", id_prefix: str = "toolu_"
) -> dict[str, Any]:
    """A session_detail result: a title side call, then one main turn per step, each turn's
    input the user message carrying the previous turn's tool results."""
    t0 = 1_700_000_000.0
    turns: list[dict[str, Any]] = [
        {
            "exchange_id": f"{name}-title",
            "thread": None,
            "kind": "side",
            "model": "m",
            "started_at": t0,
            "duration_ms": 100.0,
            "input": [{"role": "user", "node": _node(None, "user", []), "parts": []}],
            "output": [{"type": "text", "text": '{"title": "Fix the bug"}'}],
            "response_node": None,
            "tool_calls": [],
            "usage": {"input_tokens": 10, "output_tokens": 5},
            "cost_usd": 0.001,
        }
    ]
    parent: str | None = None
    pending: list[tuple[str, Call]] = []
    n = 0
    for i, step in enumerate(steps, 1):
        if pending:
            parts = [
                {
                    "type": "tool_result",
                    "id": cid,
                    "content": [{"type": "text", "text": c.result}],
                    **({"is_error": True} if c.is_error else {}),
                }
                for cid, c in pending
            ]
        else:
            parts = [{"type": "text", "text": prompt}]
        node = _node(parent, "user", parts)
        made = []
        for c in step.calls:
            n += 1
            made.append((f"{id_prefix}{n:03d}", c))
        output = ([{"type": "text", "text": step.text}] if step.text else []) + [
            {"type": "tool_call", "id": cid, "name": c.name, "arguments": c.arguments}
            for cid, c in made
        ]
        response = _node(node, "assistant", output)
        turns.append({
            "exchange_id": f"{name}-{i}",
            "thread": f"{name}-main",
            "kind": "main",
            "model": "m",
            "started_at": t0 + 10 * i,
            "duration_ms": 1000.0,
            "error": None,
            "input": [{"role": "user", "node": node, "parts": parts}],
            "output": output,
            "response_node": response,
            "tool_calls": [
                {
                    "id": cid,
                    "name": c.name,
                    "arguments": c.arguments,
                    # The last turn's calls were never answered: the run stopped there.
                    "result": c.result if i < len(steps) else None,
                    "is_error": c.is_error if i < len(steps) else None,
                    "answered": i < len(steps),
                    "latency_ms": 5.0,
                }
                for cid, c in made
            ],
            "usage": {"input_tokens": 100 * i, "output_tokens": 10 * i},
            "cost_usd": step.cost_usd,
        })  # fmt: skip
        parent, pending = response, made
    calls = [c for t in turns for c in t["tool_calls"]]
    costs = [t["cost_usd"] for t in turns]
    session = {
        "id": f"id-{name}",
        "name": name,
        "title": "Fix the bug",
        "harness": "claude-code",
        "started_at": t0,
        "ended_at": t0 + 10 * len(steps) + 1,
        "turns": len(turns),
        "tool_calls": len(calls),
        "tool_errors": sum(c["is_error"] is True for c in calls),
        "input_tokens": sum(t["usage"]["input_tokens"] for t in turns),
        "output_tokens": sum(t["usage"]["output_tokens"] for t in turns),
        "cost_usd": None if None in costs else sum(costs),
    }
    return {"session": session, "threads": [], "turns": turns}


def script(*, third: str = "2 passed", extra: bool = False, pattern: str = "def f") -> list[Step]:
    second = [Call("Grep", {"pattern": pattern}, "a.py:3: def f():")]
    if extra:
        second.append(Call("Read", {"file_path": "README.md"}, "# project"))
    return [
        Step("Looking.", [Call("Read", {"file_path": "a.py"}, "def f():\n    return 1\n")]),
        Step("", second),
        Step("Testing.", [Call("Bash", {"command": "pytest -q"}, third, third != "2 passed")]),
        Step("Editing.", [Call("Edit", {"file_path": "a.py", "old": "1", "new": "2"}, "ok")]),
        Step("Done."),
    ]


def _no_call_changes(diff: dict[str, Any]) -> bool:
    return not any(diff["tool_calls"].values())


def test_identical_runs() -> None:
    a, b = build("a", script()), build("b", script())
    diff = diff_sessions(a, b)
    assert diff["identical"] is True
    assert diff["first_divergence"] is None
    assert diff["tool_calls"] == {
        "added": [],
        "removed": [],
        "arguments_differ": [],
        "results_differ": [],
    }
    assert diff["deltas"] == {
        "turns": 0,
        "tool_calls": 0,
        "tool_errors": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "duration_s": 0.0,
    }
    assert diff["a"] == {
        "id": "id-a",
        "title": "Fix the bug",
        "harness": "claude-code",
        "turns": 6,
        "started_at": 1_700_000_000.0,
    }
    assert list(diff) == ["a", "b", "identical", "first_divergence", "tool_calls", "deltas"]
    # JSON all the way down, and the same bytes every time.
    assert json.dumps(diff) == json.dumps(diff_sessions(a, b))


def test_fresh_call_ids_are_no_difference() -> None:
    """Two real runs get different tool call ids from the provider (so different node ids):
    the same calls in the same places are still the same run."""
    a, b = build("a", script()), build("b", script(), id_prefix="toolu_other_")
    assert a["turns"][2]["input"][0]["node"] != b["turns"][2]["input"][0]["node"]
    diff = diff_sessions(a, b)
    assert diff["identical"] is True


def test_one_tool_result_differs() -> None:
    a, b = build("a", script()), build("b", script(third="1 failed, 1 passed"))
    diff = diff_sessions(a, b)
    assert diff["identical"] is False
    # Turn 3 asked for it; turn 4's request carries the result.
    div = diff["first_divergence"]
    assert div["turn"] == 4 and div["reason"] == "input"
    assert (div["a_exchange"], div["b_exchange"]) == ("a-4", "b-4")
    assert (div["a_turn"], div["b_turn"]) == (5, 5)  # the title side call is turn 1
    assert "Bash" in div["detail"] and "toolu_003" in div["detail"]
    assert "2 passed" in div["detail"] and "1 failed, 1 passed" in div["detail"]
    assert diff["tool_calls"]["results_differ"] == [
        {
            "a": {
                "id": "toolu_003",
                "name": "Bash",
                "arguments": {"command": "pytest -q"},
                "result": "2 passed",
                "is_error": False,
                "turn": 4,
                "exchange_id": "a-3",
            },
            "b": {
                "id": "toolu_003",
                "name": "Bash",
                "arguments": {"command": "pytest -q"},
                "result": "1 failed, 1 passed",
                "is_error": True,
                "turn": 4,
                "exchange_id": "b-3",
            },
        }
    ]
    tc = diff["tool_calls"]
    assert tc["added"] == tc["removed"] == tc["arguments_differ"] == []
    assert diff["deltas"]["tool_errors"] == 1


def test_extra_tool_call_in_b() -> None:
    diff = diff_sessions(build("a", script()), build("b", script(extra=True)))
    div = diff["first_divergence"]
    assert (div["turn"], div["reason"]) == (2, "output")
    assert "only b has" in div["detail"] and "Read" in div["detail"]
    tc = diff["tool_calls"]
    assert [(c["name"], c["arguments"], c["turn"]) for c in tc["added"]] == [
        ("Read", {"file_path": "README.md"}, 3)
    ]
    assert tc["removed"] == tc["arguments_differ"] == tc["results_differ"] == []
    assert diff["deltas"]["tool_calls"] == 1


def test_run_cut_short() -> None:
    a, b = build("a", script()), build("b", script()[:3])
    diff = diff_sessions(a, b)
    assert diff["first_divergence"] == {
        "turn": 4,
        "a_exchange": "a-4",
        "b_exchange": None,
        "a_turn": 5,
        "b_turn": None,
        "reason": "missing_in_b",
        "detail": "b ends after 3 main-thread turns, a goes on to 5",
    }
    # The Bash call of turn 3 was answered in a only: its result differs; Edit never ran.
    tc = diff["tool_calls"]
    assert [c["name"] for c in tc["removed"]] == ["Edit"]
    assert [(p["a"]["result"], p["b"]["result"]) for p in tc["results_differ"]] == [
        ("2 passed", None)
    ]
    assert tc["added"] == tc["arguments_differ"] == []
    assert diff["deltas"]["turns"] == -2
    assert diff["deltas"]["duration_s"] == -20.0

    back = diff_sessions(b, a)["first_divergence"]
    assert (back["reason"], back["a_exchange"], back["b_exchange"]) == ("missing_in_a", None, "a-4")
    assert [c["name"] for c in diff_sessions(b, a)["tool_calls"]["added"]] == ["Edit"]


def test_different_arguments() -> None:
    diff = diff_sessions(build("a", script()), build("b", script(pattern="class F")))
    div = diff["first_divergence"]
    assert (div["turn"], div["reason"]) == (2, "output")
    assert "Grep" in div["detail"] and "def f" in div["detail"] and "class F" in div["detail"]
    pairs = diff["tool_calls"]["arguments_differ"]
    assert [(p["a"]["arguments"], p["b"]["arguments"]) for p in pairs] == [
        ({"pattern": "def f"}, {"pattern": "class F"})
    ]
    assert diff["tool_calls"]["added"] == diff["tool_calls"]["removed"] == []
    assert diff["identical"] is False


def test_cost_null_when_either_side_is_unpriced() -> None:
    priced = build("a", script())
    unpriced_steps = script()
    unpriced_steps[1].cost_usd = None
    unpriced = build("b", unpriced_steps)
    assert unpriced["session"]["cost_usd"] is None
    assert diff_sessions(priced, unpriced)["deltas"]["cost_usd"] is None
    assert diff_sessions(unpriced, priced)["deltas"]["cost_usd"] is None
    dear_steps = script()
    dear_steps[0].cost_usd = 0.1
    dear = build("b", dear_steps)
    assert diff_sessions(priced, dear)["deltas"]["cost_usd"] == pytest.approx(0.09)
    # Cost is no difference between runs: they are still identical.
    assert diff_sessions(priced, unpriced)["identical"] is True


def test_long_results_are_shortened() -> None:
    long = "x" * 2000
    diff = diff_sessions(build("a", script()), build("b", script(third=long)))
    b_call = diff["tool_calls"]["results_differ"][0]["b"]
    assert len(b_call["result"]) == RESULT_CHARS and b_call["result"].endswith("…")
    assert len(diff["first_divergence"]["detail"]) < 600


# --------------------------------------------------------------------------- the recording

TURNS = load_recording(RECORDING)
NOT_FOUND = "flibbertigibbet: command not found"
CHANGED = "flibbertigibbet 1.0 — usage: flibbertigibbet [options]"


def _changed_body(body: bytes) -> tuple[bytes, str | None]:
    """The request body with the nonexistent command's result changed; and that call's id."""
    if NOT_FOUND.encode() not in body:
        return body, None
    data = json.loads(body)
    call_id = None
    for message in data["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else []:
            if block.get("type") == "tool_result" and NOT_FOUND in str(block.get("content")):
                block["content"] = CHANGED
                block.pop("is_error", None)
                call_id = block["tool_use_id"]
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(), call_id


async def _replay(url: str, name: str, turns: list[RecordedTurn], bodies: list[bytes]) -> None:
    drop = {"x-claude-code-session-id", "content-length"}
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for turn, body in zip(turns, bodies, strict=True):
            headers = [(k, v) for k, v in turn.request_headers if k.lower() not in drop]
            async with http.post(
                f"{url}/s/{name}/v1/messages?beta=true", headers=headers, data=body
            ) as resp:
                assert resp.status == turn.status
                await resp.read()


def test_recorded_session_replayed(tmp_path: Path, db: DbRef) -> None:
    recorded = [t.request_body for t in TURNS]
    changed, ids = zip(*(_changed_body(b) for b in recorded), strict=True)
    (call_id,) = {i for i in ids if i is not None}
    with FakeProvider(RECORDING) as fake:
        # The fake answers a recorded request body; the changed ones get the same answers.
        for turn, body in zip(TURNS, changed, strict=True):
            fake.answer_as(body, turn)
        settings = settings_for(fake, tmp_path, db=db)
        with ServiceThread(settings) as service:
            for name, bodies in (("run-a", recorded), ("run-b", recorded), ("run-c", changed)):
                asyncio.run(_replay(service.url, name, TURNS, list(bodies)))
            store = stored(service)
    try:
        a, b, c = (
            session_detail(store, resolve_session(store, n)) for n in ("run-a", "run-b", "run-c")
        )
    finally:
        store.close()
    assert len({a["session"]["id"], b["session"]["id"], c["session"]["id"]}) == 3
    assert len(a["turns"]) == len(c["turns"]) == 17

    same = diff_sessions(a, b)
    assert same["identical"] is True and same["first_divergence"] is None
    assert all(v == 0 for k, v in same["deltas"].items() if k != "duration_s")

    diff = diff_sessions(a, c)
    assert diff["identical"] is False
    main = [t for t in a["turns"] if t["kind"] == "main"]
    carrying = next(
        i
        for i, t in enumerate(main, 1)
        for m in t["input"]
        for p in m["parts"]
        if p.get("type") == "tool_result" and p.get("id") == call_id
    )
    div = diff["first_divergence"]
    assert (div["turn"], div["reason"]) == (carrying, "input")
    assert div["a_exchange"] == main[carrying - 1]["exchange_id"]
    assert div["a_turn"] == a["turns"].index(main[carrying - 1]) + 1
    assert "Bash" in div["detail"] and call_id in div["detail"]
    assert NOT_FOUND in div["detail"] and "usage: flibbertigibbet" in div["detail"]
    (pair,) = diff["tool_calls"]["results_differ"]
    assert pair["a"]["id"] == pair["b"]["id"] == call_id and pair["a"]["name"] == "Bash"
    assert pair["a"]["is_error"] is True and not pair["b"]["is_error"]
    assert pair["b"]["result"] == CHANGED
    tc = diff["tool_calls"]
    assert tc["added"] == tc["removed"] == tc["arguments_differ"] == []
    assert diff["deltas"]["tool_errors"] == -1

    # Identical runs share their nodes; search still names every run a text appeared in.
    hits = json.loads(cli("search", '"command not found"', "--db", str(settings.db), "--json",
                          "--limit", "50").stdout)  # fmt: skip
    found = {h["session"] for h in hits if h["where"] == "tool_result"}
    assert found == {a["session"]["id"], b["session"]["id"]}  # run-c's result was changed
    in_c = json.loads(cli("search", "usage", "--session", "run-c", "--db", str(settings.db),
                          "--json").stdout)  # fmt: skip
    assert in_c and {h["session"] for h in in_c} == {c["session"]["id"]}

    # The command line says the same, and says it in its exit code.
    db = str(settings.db)
    same_cli = cli("diff", "run-a", "run-b", "--db", db, check=False)
    assert same_cli.returncode == 0 and "identical" in same_cli.stdout
    differ = cli("diff", "run-a", "run-c", "--db", db, "--json", check=False)
    assert differ.returncode == 1
    assert json.loads(differ.stdout)["first_divergence"] == div
    text = cli("diff", "run-a", "run-c", "--db", db, check=False).stdout
    assert f"first divergence at turn {carrying}" in text and "other result" in text
