"""`tapewire import`: Claude Code and Codex transcripts as sessions, turns and tool calls, as
the files say; idempotent; damaged lines reported; merged with a wire capture of the same
session without counting a token twice. Fixtures: tests/fixtures/transcripts/README.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import Databases
from servecli import cli
from tapewire.importers import import_claude_code, import_codex, list_files
from tapewire.query import session_detail, sessions
from tapewire.store import Store, open_store
from tapewire.store.location import DbRef

FIXTURES = Path(__file__).parent / "fixtures" / "transcripts"
CLAUDE = FIXTURES / "claude-code"
CODEX = FIXTURES / "codex"
MERGE = FIXTURES / "claude-code-merge"
CLAUDE_SESSION = "7f3c2a10-5b4e-4c8d-9e21-3a6b8c0d1e2f"
CODEX_SESSION = "5e8f0c2a-1d3b-4f6e-8a9c-0b1d2e3f4a5b"
WIRE_SESSION = "ac9b5a71-50d4-47c2-b771-4d5c3e96d899"


def _claude(store: Store, root: Path = CLAUDE) -> Any:
    return import_claude_code(store, list_files("claude-code", [root]))


def _codex(store: Store) -> Any:
    return import_codex(store, list_files("codex", [CODEX]))


def _only(store: Store, harness_session: str) -> dict[str, Any]:
    (sid,) = store.find_sessions(harness_session)
    return session_detail(store, sid)


def test_claude_code_sessions_turns_and_tool_calls_as_the_files_say(db: DbRef) -> None:
    store = open_store(db)
    report = _claude(store)
    assert report.files == 2 and report.synthesized == 5 and report.sessions_new == 1
    detail = _only(store, CLAUDE_SESSION)
    s = detail["session"]
    assert s["harness"] == "claude-code" and s["source"] == "transcript"
    # Three main-thread messages (one split over four records), two subagent ones.
    assert s["turns"] == 5 and s["threads"] == 2
    # Usage is repeated on each record of a message: counted once per message id.
    # input = uncached + cache read + cache write: 1010 + 1230 + 1255 + 400 + 450
    assert (s["input_tokens"], s["output_tokens"]) == (4345, 235)
    assert (s["cache_read_tokens"], s["cache_write_tokens"]) == (2200, 1250)
    first = detail["turns"][0]
    assert [p["type"] for p in first["output"]] == ["thinking", "text", "tool_call", "tool_call"]
    assert first["usage"]["output_tokens"] == 120 and first["stop_reason"] == "tool_use"
    calls = {c["id"]: c for t in detail["turns"] for c in t["tool_calls"]}
    assert set(calls) == {"toolu_01Bash", "toolu_02Read", "toolu_03Task", "toolu_S1Grep"}
    assert calls["toolu_01Bash"]["result"] == "app.py\ntests"
    assert calls["toolu_02Read"]["is_error"] is True and calls["toolu_01Bash"]["is_error"] is False
    assert calls["toolu_03Task"]["result"] == "There are 3 test functions."
    # The subagent file is a thread of the session, spawned by the Task call.
    sub = next(t for t in detail["threads"] if t["kind"] == "subagent")
    assert sub["agent"] == "a1b2c3d" and sub["spawned_by"] == "toolu_03Task"
    assert {t["kind"] for t in detail["turns"]} == {"main", "subagent"}
    # Times are the records' times: asked at the request's last record, answered at the last
    # record of the message.
    assert first["duration_ms"] == 5000.0 and first["ttfb_ms"] == 3000.0
    facts = s["facts"]
    assert facts["cwd"] == ["/home/dev/demo"] and facts["git_branch"] == ["main"]
    assert facts["version"] == ["2.0.14"]
    assert facts["local_commands"][0]["name"] == "/model"
    assert facts["local_commands"][0]["stdout"].startswith("Set model to sonnet")
    assert facts["subagents"][0]["tool_call_id"] == "toolu_03Task"
    assert facts["summaries"] == ["Listing files and counting tests"]
    assert "exact bytes" in facts["unknowable"]
    # The local command is not part of the conversation the model saw.
    said = json.dumps([i for t in detail["turns"] for i in t["input"]])
    assert "command-name" not in said
    store.close()


def test_damaged_lines_are_reported_and_unknown_records_counted(db: DbRef, tmp_path: Path) -> None:
    store = open_store(db)
    report = _claude(store)
    main = CLAUDE / "-home-dev-demo" / f"{CLAUDE_SESSION}.jsonl"
    assert len(report.malformed) == 1
    assert report.malformed[0].startswith(f"{main}:16: not JSON")
    assert dict(report.unknown) == {"x-future-record": 1}
    facts = _only(store, CLAUDE_SESSION)["session"]["facts"]
    assert facts["unknown_records"][0]["record"]["type"] == "x-future-record"
    # A file that is not JSONL at all is reported once, and nothing else breaks.
    junk = tmp_path / "junk" / "x.jsonl"
    junk.parent.mkdir()
    junk.write_bytes(b"\x00\x01binary\nnot json either\n")
    report = import_claude_code(store, [junk])
    assert report.malformed == [f"{junk}: not a JSONL file (2 unreadable lines)"]
    store.close()


def test_reimport_changes_nothing(db: DbRef) -> None:
    store = open_store(db)
    _claude(store)
    _codex(store)

    def snapshot() -> Any:
        rows = sessions(store)
        return rows, [session_detail(store, r["id"]) for r in rows], store.counts()

    before = snapshot()
    again = _claude(store)
    assert again.synthesized == 0 and again.skipped == 5 and again.sessions_unchanged == 1
    again = _codex(store)
    assert again.synthesized == 0 and again.skipped == 3 and again.sessions_unchanged == 1
    assert snapshot() == before
    store.close()


def test_codex_rollout_turns_tool_calls_and_usage(db: DbRef) -> None:
    store = open_store(db)
    report = _codex(store)
    assert report.synthesized == 3 and dict(report.unknown) == {"x-future-record": 1}
    assert len(report.malformed) == 1 and ".jsonl:18: not JSON" in report.malformed[0]
    detail = _only(store, CODEX_SESSION)
    s = detail["session"]
    assert s["harness"] == "codex" and s["source"] == "transcript"
    assert s["models"] == ["gpt-5-codex"]
    # One model call per run of model items; usage from each call's token_count event.
    assert s["turns"] == 3 and s["threads"] == 1
    assert (s["input_tokens"], s["output_tokens"]) == (6300, 92)
    assert (s["cache_read_tokens"], s["reasoning_tokens"]) == (3900, 30)
    (call,) = [c for t in detail["turns"] for c in t["tool_calls"]]
    assert call["name"] == "shell" and call["id"] == "call_01Shell"
    assert "tests/test_app.py:3" in (call["result"] or "")
    assert detail["turns"][1]["output"][0]["text"] == "There are 3 tests, all in tests/test_app.py."
    facts = s["facts"]
    assert facts["git"]["branch"] == "main" and facts["version"] == ["0.46.0"]
    assert facts["approval_policy"] == "on-request"
    store.close()


@pytest.fixture
def wire_db(recorded_db: DbRef, dbs: Databases) -> DbRef:
    return dbs.clone(recorded_db, "wire")


def test_merge_with_the_wire_capture_counts_each_turn_once(wire_db: DbRef) -> None:
    store = open_store(wire_db)
    wire = _only(store, WIRE_SESSION)["session"]
    assert wire["source"] == "wire" and wire["facts"] is None
    report = _claude(store, MERGE)
    # Two of the transcript's three messages are on the wire already: only the third is new.
    assert report.on_wire == 2 and report.synthesized == 1 and report.sessions_enriched == 1
    merged = _only(store, WIRE_SESSION)
    s = merged["session"]
    assert s["id"] == wire["id"] and s["source"] == "wire+transcript"
    assert s["turns"] == wire["turns"] + 1
    assert s["input_tokens"] == wire["input_tokens"] + 100
    assert s["output_tokens"] == wire["output_tokens"] + 20
    assert s["started_at"] < wire["started_at"]  # the turn from before tapewire ran
    facts = s["facts"]
    assert facts["git_branch"] == ["feature/import"] and facts["cwd"] == ["/home/dev/tapes"]
    assert [c["name"] for c in facts["local_commands"]] == ["/clear"]
    again = _claude(store, MERGE)
    assert again.synthesized == 0 and again.on_wire == 2
    assert _only(store, WIRE_SESSION)["session"]["input_tokens"] == s["input_tokens"]
    store.close()


def test_cli_imports_and_show_says_transcript_only(db: DbRef) -> None:
    db = str(db)
    out = cli("import", "claude-code", str(CLAUDE), "--db", db).stdout
    assert "1 sessions new" in out and "5 exchanges synthesized" in out
    assert f"{CLAUDE_SESSION}.jsonl:16: not JSON" in out
    assert "x-future-record: 1" in out
    report = json.loads(cli("import", "codex", str(CODEX), "--db", db, "--json").stdout)
    assert report["synthesized"] == 3 and report["unknown"] == {"x-future-record": 1}
    text = cli("show", CLAUDE_SESSION, "--db", db).stdout
    assert "from a transcript: exact bytes and timings unknown" in text
    assert "subagent a1b2c3d spawned by toolu_03Task" in text
    listed = json.loads(cli("sessions", "--db", db, "--json").stdout)
    assert {r["source"] for r in listed} == {"transcript"}
