"""Codex rollout files (`~/.codex/sessions/YYYY/MM/DD/rollout-<time>-<uuid>.jsonl`) as raw
exchanges and facts (docs/import.md; the format: tests/fixtures/transcripts/README.md).

A rollout line is `{"timestamp", "type", "payload"}`. The `response_item` payloads are the
Responses API items the conversation is made of. A model call is a run of items the model
produced (reasoning, assistant message, function and custom tool calls, local shell calls);
its request is every item before it; its usage is the `last_token_usage` of the next
`token_count` event (Codex reports one per model call)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapewire.derive import Deriver
from tapewire.derive.sessions import derived_id
from tapewire.importers.common import Call, Line, Report, import_id, timestamp, write_calls
from tapewire.model import Evidence
from tapewire.store import Store

RECORDER = "transcript:codex"
HARNESS = "codex"
KNOWN = frozenset({"session_meta", "turn_context", "response_item", "event_msg", "compacted"})
UNKNOWN_KEPT = 100
_MODEL_ITEMS = frozenset({
    "reasoning", "function_call", "custom_tool_call", "local_shell_call", "web_search_call",
    "image_generation_call",
})  # fmt: skip


def _is_model_item(item: dict[str, Any]) -> bool:
    kind = item.get("type")
    if kind == "message":
        return item.get("role") == "assistant"
    return kind in _MODEL_ITEMS


@dataclass
class _Pending:
    items: list[dict[str, Any]]  # the request's input
    output: list[dict[str, Any]]
    model: str
    asked_at: float
    first_at: float
    last_at: float
    usage: dict[str, Any] | None = None


@dataclass
class Rollout:
    path: Path
    lines: list[Line]
    session: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def read_rollout(path: Path, lines: list[Line], report: Report) -> Rollout:
    rollout = Rollout(path, lines)
    for ln in lines:
        r = ln.record
        payload = r.get("payload")
        if (r.get("type") == "session_meta" and isinstance(payload, dict)
                and isinstance(payload.get("id"), str)):  # fmt: skip
            rollout.session = payload["id"]
            break
    if rollout.session is None and lines:
        report.malformed.append(f"{path}: no session_meta record names the session")
    return rollout


def import_rollout(
    store: Store, deriver: Deriver, rollout: Rollout, report: Report, imported_at: float
) -> None:
    sid = rollout.session
    if sid is None:
        return
    tw_session = derived_id("session", "codex:" + sid)
    state = store.session_sources([tw_session]).get(tw_session)
    facts: dict[str, Any] = {
        "cwd": [], "git": None, "version": [], "originator": None, "models": [],
        "approval_policy": None, "sandbox_policy": None, "compactions": 0,
        "unknown_records": [], "files": [str(rollout.path)],
        "unknowable": ["exact bytes", "timings", "tool definitions", "response ids"],
    }  # fmt: skip
    calls = _calls(sid, rollout, facts, report)
    if state in ("wire", "wire+transcript"):
        # A Responses wire capture names its responses `resp_…`, which a rollout never
        # records: nothing to match turns by, so the wire stands alone and the rollout
        # only adds its facts.
        report.on_wire += len(calls)
        calls = []
    ids = write_calls(store, calls, RECORDER, report)
    store.put_transcript_facts(sid, HARNESS, facts, str(rollout.path), imported_at)
    if ids:
        deriver.derive_ids(ids)
    if state is None:
        report.sessions_new += 1
    elif state != "transcript":
        report.sessions_enriched += 1
    elif not ids:
        report.sessions_unchanged += 1
    else:
        report.sessions_new += 1


def _add(facts: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, str) and value and value not in facts[key]:
        facts[key].append(value)


def _calls(sid: str, rollout: Rollout, facts: dict[str, Any], report: Report) -> list[Call]:
    items: list[dict[str, Any]] = []
    instructions: str | None = None
    model = "unknown"
    version = "unknown"
    originator = "codex_cli_rs"
    done: list[_Pending] = []
    current: _Pending | None = None
    last_at = input_at = 0.0
    for ln in rollout.lines:
        r = ln.record
        kind, payload = r.get("type"), r.get("payload")
        at = timestamp(r.get("timestamp")) or last_at
        last_at = at
        if not isinstance(kind, str) or kind not in KNOWN or not isinstance(payload, dict):
            report.unknown[str(kind)] += 1
            if len(facts["unknown_records"]) < UNKNOWN_KEPT:
                facts["unknown_records"].append({"line": ln.number, "record": r})
            continue
        if kind == "session_meta":
            _add(facts, "cwd", payload.get("cwd"))
            _add(facts, "version", payload.get("cli_version"))
            if isinstance(payload.get("cli_version"), str):
                version = payload["cli_version"]
            if isinstance(payload.get("originator"), str):
                originator = facts["originator"] = payload["originator"]
            if isinstance(payload.get("git"), dict):
                facts["git"] = payload["git"]
            if isinstance(payload.get("instructions"), str):
                instructions = payload["instructions"]
        elif kind == "turn_context":
            _add(facts, "cwd", payload.get("cwd"))
            _add(facts, "models", payload.get("model"))
            if isinstance(payload.get("model"), str):
                model = payload["model"]
            for key in ("approval_policy", "sandbox_policy"):
                if payload.get(key) is not None:
                    facts[key] = payload[key]
        elif kind == "response_item":
            if _is_model_item(payload):
                if current is None:
                    current = _Pending(list(items), [], model, input_at or at, at, at)
                    done.append(current)
                current.output.append(payload)
                current.last_at = at
            else:
                current = None
                input_at = at
            items.append(payload)
        elif kind == "event_msg":
            if payload.get("type") == "token_count":
                info = payload.get("info")
                last = info.get("last_token_usage") if isinstance(info, dict) else None
                pending = next((p for p in reversed(done) if p.usage is None), None)
                if isinstance(last, dict) and pending is not None and pending is done[-1]:
                    pending.usage = last
                    current = None  # the call is over: what follows is the next one
        elif kind == "compacted":
            facts["compactions"] += 1
            history = payload.get("replacement_history")
            items = [i for i in history if isinstance(i, dict)] if isinstance(history, list) else []
            current = None
    calls = []
    for index, p in enumerate(done):
        request: dict[str, Any] = {"model": p.model, "input": p.items, "stream": False}
        if instructions:
            request["instructions"] = instructions
        response: dict[str, Any] = {
            "object": "response",
            "status": "completed",
            "model": p.model,
            "output": p.output,
        }
        if p.usage is not None:
            response["usage"] = _usage(p.usage)
        calls.append(
            Call(
                id=import_id(HARNESS, sid, str(index)),
                provider="openai",
                path="/v1/responses",
                headers=[
                    ("content-type", "application/json"),
                    ("originator", originator),
                    ("user-agent", f"{originator}/{version} (transcript import)"),
                    ("session_id", sid),
                ],
                evidence=Evidence(codex_session=sid),
                request=request,
                response=response,
                started_at=min(p.asked_at, p.first_at),
                first_byte_at=p.first_at,
                last_byte_at=max(p.last_at, p.first_at),
            )
        )
    return calls


def _usage(last: dict[str, Any]) -> dict[str, Any]:
    """Codex's token counts as a Responses `usage` object: input counts the cached tokens,
    output the reasoning ones, as the API reports them."""

    def n(key: str) -> int:
        value = last.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return {
        "input_tokens": n("input_tokens"),
        "input_tokens_details": {"cached_tokens": n("cached_input_tokens")},
        "output_tokens": n("output_tokens"),
        "output_tokens_details": {"reasoning_tokens": n("reasoning_output_tokens")},
        "total_tokens": n("total_tokens") or n("input_tokens") + n("output_tokens"),
    }
