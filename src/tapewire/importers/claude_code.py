"""Claude Code transcripts (`~/.claude/projects/<project>/<sessionId>.jsonl` and their subagent
files) as raw exchanges and facts (docs/import.md; the format: tests/fixtures/transcripts/README.md).

Each assistant message id is one model call. Claude Code writes one assistant record per
content block, all with the same `message.id` and `requestId` and the usage repeated: they are
merged into one response, and the usage counted once. The request is the conversation the
record's `parentUuid` chain holds at that point."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tapewire.derive import Deriver
from tapewire.derive.sessions import derived_id
from tapewire.importers.common import Call, Line, Report, import_id, timestamp, write_calls
from tapewire.model import Evidence
from tapewire.store import Store

RECORDER = "transcript:claude-code"
HARNESS = "claude-code"
KNOWN = frozenset({
    "user", "assistant", "system", "summary", "queue-operation", "file-history-snapshot",
    "attachment", "progress", "custom-title", "ai-title", "last-prompt", "pr-link",
    "worktree-state", "agent-name",
})  # fmt: skip
UNKNOWN_KEPT = 100  # records of types this importer does not know, kept whole per session
SPAWNING_TOOLS = frozenset({"Task", "Agent"})
_COMMAND = re.compile(r"<command-name>(.*?)</command-name>", re.S)
_ARGS = re.compile(r"<command-args>(.*?)</command-args>", re.S)
_STDOUT = re.compile(r"<local-command-stdout>(.*?)</local-command-stdout>", re.S)
_TOOL_NOTE = "from a transcript: the tool's definition was not recorded"


@dataclass
class _File:
    path: Path
    lines: list[Line]
    agent: str | None = None  # a subagent's id: its records are a thread of their own


@dataclass
class _Session:
    id: str
    files: list[_File] = field(default_factory=list)

    @property
    def main(self) -> _File | None:
        return next((f for f in self.files if f.agent is None), None)


def read_files(files: list[tuple[Path, list[Line]]], report: Report) -> list[_Session]:
    """Group the files' records by the session they say they belong to (a subagent file of
    either layout carries its parent's `sessionId` and its own `agentId`)."""
    sessions: dict[str, _Session] = {}
    for path, lines in files:
        sid = next(
            (ln.record["sessionId"] for ln in lines if isinstance(ln.record.get("sessionId"), str)),
            None,
        )
        if sid is None:
            if lines:
                report.malformed.append(f"{path}: no record names its sessionId")
            continue
        agent = next(
            (ln.record["agentId"] for ln in lines
             if ln.record.get("isSidechain") is True and isinstance(ln.record.get("agentId"), str)),
            None,
        )  # fmt: skip
        if agent is None and path.name.startswith("agent-"):
            agent = path.stem.removeprefix("agent-")
        sessions.setdefault(sid, _Session(sid)).files.append(_File(path, lines, agent))
    return list(sessions.values())


def import_session(
    store: Store, deriver: Deriver, session: _Session, report: Report, imported_at: float
) -> None:
    tw_session = derived_id("session", "claude-code:" + session.id)
    state = store.session_sources([tw_session]).get(tw_session)
    on_wire = store.wire_response_ids(tw_session) if state in ("wire", "wire+transcript") else set()
    facts = _Facts()
    calls: list[Call] = []
    tools = sorted(_tool_names(session))
    for f in session.files:
        calls.extend(_calls(session.id, f, facts, tools, on_wire, report))
    _link_subagents(session, facts)
    before = report.synthesized
    ids = write_calls(store, calls, RECORDER, report)
    main = session.main or session.files[0]
    store.put_transcript_facts(session.id, HARNESS, facts.as_json(), str(main.path), imported_at)
    if ids:
        deriver.derive_ids(ids)
    if state is None:
        report.sessions_new += 1
    elif state != "transcript":
        report.sessions_enriched += 1
    elif report.synthesized == before:
        report.sessions_unchanged += 1
    else:
        report.sessions_new += 1


@dataclass
class _Facts:
    cwd: set[str] = field(default_factory=set)
    git_branch: set[str] = field(default_factory=set)
    version: set[str] = field(default_factory=set)
    local_commands: list[dict[str, Any]] = field(default_factory=list)
    subagents: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)
    unknown_records: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    spawns: dict[str, str] = field(default_factory=dict)  # Task/Agent call id -> its prompt
    spawn_results: dict[str, str] = field(default_factory=dict)  # agent id -> call id

    def as_json(self) -> dict[str, Any]:
        return {
            "cwd": sorted(self.cwd),
            "git_branch": sorted(self.git_branch),
            "version": sorted(self.version),
            "local_commands": self.local_commands,
            "subagents": self.subagents,
            "summaries": self.summaries,
            "unknown_records": self.unknown_records,
            "files": self.files,
            "unknowable": ["exact bytes", "timings", "system prompt", "tool definitions"],
        }


def _tool_names(session: _Session) -> set[str]:
    names = set()
    for f in session.files:
        for ln in f.lines:
            for block in _blocks(ln.record):
                if block.get("type") == "tool_use" and isinstance(block.get("name"), str):
                    names.add(block["name"])
    return names


def _blocks(record: dict[str, Any]) -> list[dict[str, Any]]:
    message = record.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _local_command(record: dict[str, Any]) -> str | None:
    """The text of a user record that is a local command or its output (`/model`, `!ls`):
    Claude Code shows them, the model never sees them."""
    if record.get("type") != "user":
        return None
    text = "\n".join(b.get("text") or "" for b in _blocks(record) if b.get("type") == "text")
    if "<command-name>" in text or "<local-command-stdout>" in text:
        return text
    return None


def _calls(
    sid: str,
    f: _File,
    facts: _Facts,
    tools: list[str],
    on_wire: set[str],
    report: Report,
) -> list[Call]:
    facts.files.append(str(f.path))
    by_uuid: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[Line]] = {}  # message id -> its assistant records, in file order
    for ln in f.lines:
        r = ln.record
        kind = r.get("type")
        if isinstance(r.get("uuid"), str):  # an unknown record may still link the chain
            by_uuid[r["uuid"]] = r
        if not isinstance(kind, str) or kind not in KNOWN:
            report.unknown[str(kind)] += 1
            if len(facts.unknown_records) < UNKNOWN_KEPT:
                facts.unknown_records.append({"file": str(f.path), "line": ln.number, "record": r})
            continue
        for key, target in (("cwd", facts.cwd), ("gitBranch", facts.git_branch),
                            ("version", facts.version)):  # fmt: skip
            if isinstance(r.get(key), str) and r[key]:
                target.add(r[key])
        if kind == "summary" and isinstance(r.get("summary"), str):
            facts.summaries.append(r["summary"])
        elif kind == "user":
            _note_user(r, f, facts)
        elif kind == "assistant":
            message = r.get("message")
            if not isinstance(message, dict) or message.get("model") == "<synthetic>":
                continue  # Claude Code's own stand-in for a failed call: no model call
            mid = message.get("id") or r.get("requestId") or r.get("uuid")
            if not isinstance(mid, str):
                report.malformed.append(f"{f.path}:{ln.number}: assistant record without ids")
                continue
            groups.setdefault(mid, []).append(ln)
            for block in _blocks(r):
                if block.get("type") == "tool_use" and block.get("name") in SPAWNING_TOOLS:
                    prompt = (block.get("input") or {}).get("prompt")
                    if isinstance(block.get("id"), str) and f.agent is None:
                        facts.spawns[block["id"]] = prompt if isinstance(prompt, str) else ""
    calls = []
    for mid, group in groups.items():
        if mid in on_wire:
            report.on_wire += 1
            continue
        calls.append(_call(sid, f, mid, group, by_uuid, tools))
    return calls


def _note_user(r: dict[str, Any], f: _File, facts: _Facts) -> None:
    text = _local_command(r)
    if text is not None:
        name = _COMMAND.search(text)
        if name:
            args = _ARGS.search(text)
            facts.local_commands.append({
                "name": name.group(1).strip(),
                "args": args.group(1).strip() if args else "",
                "stdout": None,
                "at": r.get("timestamp"),
            })  # fmt: skip
        out = _STDOUT.search(text)
        if out and facts.local_commands and facts.local_commands[-1]["stdout"] is None:
            facts.local_commands[-1]["stdout"] = out.group(1).strip()
    result = r.get("toolUseResult")
    if f.agent is None and isinstance(result, dict) and isinstance(result.get("agentId"), str):
        for block in _blocks(r):
            if block.get("type") == "tool_result" and isinstance(block.get("tool_use_id"), str):
                facts.spawn_results[result["agentId"]] = block["tool_use_id"]


def _link_subagents(session: _Session, facts: _Facts) -> None:
    """Each subagent file to the Task/Agent call that spawned it: by the call's result naming
    the agent (`toolUseResult.agentId`), else by the subagent's opening prompt being the
    call's `prompt`."""
    for f in session.files:
        if f.agent is None:
            continue
        call, how = facts.spawn_results.get(f.agent), "toolUseResult.agentId"
        if call is None:
            opening = _opening_text(f)
            call = next((c for c, p in facts.spawns.items() if p and p == opening), None)
            how = "prompt"
        facts.subagents.append({
            "agent_id": f.agent, "tool_call_id": call, "matched_by": how if call else None,
            "file": str(f.path),
        })  # fmt: skip


def _opening_text(f: _File) -> str | None:
    for ln in f.lines:
        if ln.record.get("type") == "user":
            texts = [b.get("text") for b in _blocks(ln.record) if b.get("type") == "text"]
            return "\n".join(t for t in texts if isinstance(t, str))
    return None


def _chain(first: dict[str, Any], by_uuid: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The records before `first`, oldest first, by parentUuid."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    parent = first.get("parentUuid")
    while isinstance(parent, str) and parent not in seen and parent in by_uuid:
        seen.add(parent)
        record = by_uuid[parent]
        out.append(record)
        parent = record.get("parentUuid")
    out.reverse()
    return out


def _messages(chain: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Messages API conversation the chain makes: user and assistant records (not local
    commands, not bookkeeping), a run of one role merged into one message, as the API wants."""
    messages: list[dict[str, Any]] = []
    for r in chain:
        role = r.get("type")
        if role not in ("user", "assistant") or _local_command(r) is not None:
            continue
        if role == "assistant" and (r.get("message") or {}).get("model") == "<synthetic>":
            continue
        blocks = [_clean(b) for b in _blocks(r)]
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    return messages


def _clean(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


def _call(
    sid: str,
    f: _File,
    mid: str,
    group: list[Line],
    by_uuid: dict[str, dict[str, Any]],
    tools: list[str],
) -> Call:
    first, last = group[0].record, group[-1].record
    chain = _chain(first, by_uuid)
    message = last["message"]
    content = [_clean(b) for ln in group for b in _blocks(ln.record)]
    usage = next(
        (ln.record["message"]["usage"] for ln in reversed(group)
         if isinstance(ln.record["message"].get("usage"), dict)),
        None,
    )  # fmt: skip
    stop = next(
        (ln.record["message"].get("stop_reason") for ln in reversed(group)
         if ln.record["message"].get("stop_reason")),
        None,
    )  # fmt: skip
    model = message.get("model") if isinstance(message.get("model"), str) else "unknown"
    version = next((r["version"] for r in (last, *chain[::-1]) if isinstance(r.get("version"), str)),
                   "unknown")  # fmt: skip
    first_at = timestamp(first.get("timestamp"))
    last_at = timestamp(last.get("timestamp")) or first_at
    asked_at = timestamp(chain[-1].get("timestamp")) if chain else None
    first_at = first_at or asked_at or 0.0
    last_at = max(last_at or first_at, first_at)
    asked_at = min(asked_at if asked_at is not None else first_at, first_at)
    request: dict[str, Any] = {
        "model": model,
        "messages": _messages(chain),
        "tools": [
            {"name": n, "description": _TOOL_NOTE, "input_schema": {"type": "object"}}
            for n in tools
        ],
        "metadata": {"user_id": orjson.dumps({"session_id": sid}).decode()},
        "stream": False,
    }
    response = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage or {},
    }
    headers = [
        ("content-type", "application/json"),
        ("user-agent", f"claude-cli/{version} (transcript import)"),
        ("x-claude-code-session-id", sid),
    ]
    if f.agent:
        headers.append(("x-claude-code-agent-id", f.agent))
    return Call(
        id=import_id(HARNESS, sid, f.agent or "", mid),
        provider="anthropic",
        path="/v1/messages",
        headers=headers,
        evidence=Evidence(claude_session=sid, claude_agent=f.agent),
        request=request,
        response=response,
        started_at=asked_at,
        first_byte_at=first_at,
        last_byte_at=last_at,
    )


def count_kinds(lines: list[Line]) -> Counter[str]:
    return Counter(str(ln.record.get("type")) for ln in lines)
