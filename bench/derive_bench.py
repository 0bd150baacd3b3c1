"""Derive throughput, peak memory and store size on a synthetic long session.

A Claude-Code-shaped session of N turns (default 2,000) whose context grows to ~150 KB: each
request resends the system prompt, the tools and every earlier message, adds the previous
answer and a tool result (~1 KB a turn); past 150 KB the harness compacts (a summary opens a
new chain), as Claude Code does, and the context grows again. Each response is a gzip SSE stream with thinking, text and a tool
call. The raw exchanges are written to a fresh SQLite store first (not timed), then the
deriver runs over all of them (timed), in this process, and peak RSS is read from the kernel.

    python bench/derive_bench.py                 # 2,000 turns
    python bench/derive_bench.py --turns 200     # quick

Goals (issue 4): >= 500 turns/s, < 300 MB peak.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tapewire.derive import Deriver
from tapewire.model import Evidence, Exchange, ExchangeEnd, Outcome, new_id
from tapewire.store import Batch, open_store

TOOLS = [
    {"name": f"tool_{i}", "description": "x" * 2000, "input_schema": {"type": "object"}}
    for i in range(20)
]


def _sse(events: list[dict[str, object]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def _response(i: int, rng: random.Random) -> tuple[bytes, list[dict[str, object]]]:
    """A streamed answer, and the content blocks the agent will resend next turn."""
    text = f"Step {i}: " + " ".join(rng.choice(("read", "edit", "test", "fix")) for _ in range(12))
    call = {"type": "tool_use", "id": f"toolu_{i:06d}", "name": f"tool_{i % 20}",
            "input": {"path": f"src/file_{i}.py", "line": i}}  # fmt: skip
    args = json.dumps(call["input"])
    events: list[dict[str, object]] = [
        {"type": "message_start", "message": {"id": f"msg_{i}", "model": "claude-sonnet-4-6",
         "usage": {"input_tokens": 3, "cache_read_input_tokens": 1000 + i * 30,
                   "cache_creation_input_tokens": 60, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me think."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": f"sig{i}"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": text}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": call["id"], "name": call["name"], "input": {}}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": args[:10]}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": args[10:]}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 80}},
        {"type": "message_stop"},
    ]  # fmt: skip
    blocks = [
        {"type": "thinking", "thinking": "Let me think.", "signature": f"sig{i}"},
        {"type": "text", "text": text},
        call,
    ]
    return gzip.compress(_sse(events)), blocks


def build(store_path: Path, turns: int, target_context: int) -> int:
    rng = random.Random(7)
    store = open_store(store_path)
    messages: list[dict[str, object]] = [{"role": "user", "content": "Fix the failing tests."}]
    result_size = 600  # bytes of tool output per turn: ~1 KB of context per turn
    wire = 0
    t0 = time.time()
    batch = Batch()
    for i in range(turns):
        body = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 32000, "stream": True,
                           "system": [{"type": "text", "text": "You are an agent. " * 200}],
                           "messages": messages, "tools": TOOLS}).encode()  # fmt: skip
        response, blocks = _response(i, rng)
        ex_id = new_id()
        start = t0 + i
        batch.begins.append(Exchange(
            id=ex_id, run_id="bench", started_at=start, method="POST", path="/v1/messages",
            upstream="anthropic", upstream_url="http://127.0.0.1/v1/messages",
            provider="anthropic", request_headers=[("content-type", "application/json")],
            request_body=body, request_size=len(body),
            evidence=Evidence(claude_session="bench-session"), recorder="bench",
        ))  # fmt: skip
        batch.ends.append(ExchangeEnd(
            id=ex_id, status=200,
            response_headers=[("content-type", "text/event-stream"), ("content-encoding", "gzip")],
            response_body=response, response_truncated=False, response_size=len(response),
            upstream_headers_at=start + 0.1, first_byte_at=start + 0.2, last_byte_at=start + 0.5,
            outcome=Outcome.COMPLETE, error=None,
        ))  # fmt: skip
        wire += len(body) + len(response)
        if len(body) > target_context:  # the harness compacts: a summary starts a new chain
            messages = [{"role": "user", "content": f"Summary of turns up to {i}: " + "s" * 2000}]
        messages = [*messages, {"role": "assistant", "content": blocks},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i:06d}",
                     "content": "".join(rng.choice("abcdefgh \n") for _ in range(result_size))}]}]  # fmt: skip
        if len(batch.begins) >= 100:
            store.write(batch)
            batch = Batch()
    store.write(batch)
    store.close()
    return wire


def build_repeat(store_path: Path, turns: int) -> int:
    """An agent repeating itself, as load generators and stuck loops do: the same OpenAI request
    over and over with no session evidence, every other one carrying the same tool call id's
    result. Each turn continues the same chain and thread, so a lookup that scans earlier
    turns instead of distinct nodes shows here as time growing with the square of turns."""
    store = open_store(store_path)
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    call = {"id": "call_fake1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    answer = {"role": "assistant", "content": None, "tool_calls": [call]}
    result = {"role": "tool", "tool_call_id": "call_fake1", "content": "sunny"}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    response = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
                           "choices": [{"index": 0, "message": answer, "finish_reason": "tool_calls"}],
                           "usage": {"prompt_tokens": 20, "completion_tokens": 5}}).encode()  # fmt: skip
    wire, batch, t0 = 0, Batch(), time.time()
    for i in range(turns):
        messages = [ask, answer, result] if i % 2 else [ask]
        body = json.dumps({"model": "gpt-4o", "messages": messages, "tools": tools}).encode()
        ex_id, start = new_id(), t0 + i
        batch.begins.append(Exchange(
            id=ex_id, run_id="bench", started_at=start, method="POST", path="/v1/chat/completions",
            upstream="openai", upstream_url="http://127.0.0.1/v1/chat/completions",
            provider="openai", request_headers=[("content-type", "application/json")],
            request_body=body, request_size=len(body), recorder="bench",
        ))  # fmt: skip
        batch.ends.append(ExchangeEnd(
            id=ex_id, status=200, response_headers=[("content-type", "application/json")],
            response_body=response, response_truncated=False, response_size=len(response),
            upstream_headers_at=start + 0.1, first_byte_at=start + 0.2, last_byte_at=start + 0.5,
            outcome=Outcome.COMPLETE, error=None,
        ))  # fmt: skip
        wire += len(body) + len(response)
        if len(batch.begins) >= 500:
            store.write(batch)
            batch = Batch()
    store.write(batch)
    store.close()
    return wire


RECORDING = (
    Path(__file__).resolve().parent.parent / "tests/fixtures/recordings/claude-20260727-019fa57e"
)


def recording_store_size(tmp: Path) -> dict[str, object]:
    """The 17 recorded Claude Code turns stored and derived: the whole file against the wire."""
    import base64

    store_path = tmp / "recording.db"
    store = open_store(store_path)
    wire = 0
    batch = Batch()
    for i, turn in enumerate(sorted(p for p in RECORDING.iterdir() if p.is_dir())):
        request = json.loads((turn / "request.json").read_text())
        meta = json.loads((turn / "meta.json").read_text())
        body = base64.b64decode(request["body_b64"])
        response = (turn / "response.sse").read_bytes()
        wire += len(body) + len(response)
        headers = [(k, v) for k, v in request["headers"]]
        ex_id = new_id()
        evidence = Evidence(
            claude_session=dict((k.lower(), v) for k, v in headers).get("x-claude-code-session-id"),
            claude_agent=dict((k.lower(), v) for k, v in headers).get("x-claude-code-agent-id"),
        )
        batch.begins.append(Exchange(
            id=ex_id, run_id="bench", started_at=1000.0 + i, method="POST",
            path="/v1/messages?beta=true", upstream="anthropic", upstream_url="http://127.0.0.1",
            provider="anthropic", request_headers=headers, request_body=body,
            request_size=len(body), evidence=evidence, recorder="bench",
        ))  # fmt: skip
        batch.ends.append(ExchangeEnd(
            id=ex_id, status=int(meta["status"]),
            response_headers=[(k, v) for k, v in meta["response_headers"]],
            response_body=response, response_truncated=False, response_size=len(response),
            upstream_headers_at=1000.1 + i, first_byte_at=1000.2 + i, last_byte_at=1000.5 + i,
            outcome=Outcome.COMPLETE, error=None,
        ))  # fmt: skip
    store.write(batch)
    raw = _file_size(store)
    Deriver(store).derive_ids(store.derive_order())
    store.close()  # as a stopped tapewire leaves it
    total = store_path.stat().st_size
    return {
        "recording_wire_bytes": wire,
        "recording_store_bytes_raw_only": raw,
        "recording_store_bytes": total,  # the file on disk, free pages and all
        "recording_store_share_of_wire": round(total / wire, 4),
    }


def _file_size(store: object) -> int:
    """Bytes the database holds once its write-ahead log is folded in."""
    conn = store.conn  # type: ignore[attr-defined]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def _peak_rss_mb() -> float:
    """This process's own high-water mark (VmHWM). Not ru_maxrss: on Linux that survives
    execve, so a child would report the generating parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def derive_only(path: Path) -> dict[str, object]:
    store = open_store(path)
    order = store.derive_order()
    last = store.exchange(order[-1])
    assert last is not None and last.request_body is not None
    rss_before = _peak_rss_mb()
    deriver = Deriver(store)
    t = time.perf_counter()
    deriver.derive_ids(order)
    elapsed = time.perf_counter() - t
    peak = _peak_rss_mb()
    sessions = store.session_rows()
    total = _file_size(store)
    store.close()
    return {
        "turns": len(order),
        "last_request_bytes": len(last.request_body),
        "derive_seconds": round(elapsed, 2),
        "turns_per_second": round(len(order) / elapsed, 1),
        "peak_rss_mb": round(peak, 1),
        "rss_before_derive_mb": round(rss_before, 1),
        "derive_errors": deriver.errors,
        "store_bytes_with_derived": total,
        "sessions": len(sessions),
        "turns_derived": sessions[0]["turns"] if sessions else 0,
        "tool_calls": sessions[0]["tool_calls"] if sessions else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument(
        "--context", type=int, default=150_000, help="final context, bytes of messages"
    )
    parser.add_argument("--repeat", type=int, default=10_000, help="turns of the repeating agent")
    parser.add_argument("--derive-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.derive_only:
        print(json.dumps(derive_only(args.derive_only)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        wire = build(path, args.turns, args.context)
        store = open_store(path)
        raw_size = _file_size(store)
        store.close()
        # Derive in a process of its own, as the ingest worker does, so its peak RSS is its own.
        out = subprocess.run(
            [sys.executable, __file__, "--derive-only", str(path)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        result = {"wire_bytes": wire, "store_bytes_raw_only": raw_size, **json.loads(out)}
        repeat = Path(tmp) / "repeat.db"
        build_repeat(repeat, args.repeat)
        out = subprocess.run(
            [sys.executable, __file__, "--derive-only", str(repeat)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        figures = json.loads(out)
        result["repeat"] = {k: figures[k] for k in ("turns", "turns_per_second", "peak_rss_mb",
                                                    "sessions", "tool_calls")}  # fmt: skip
        result.update(recording_store_size(Path(tmp)))
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
