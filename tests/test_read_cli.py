"""The reading commands over the recorded Claude Code session: real content, not shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from servecli import cli
from tapewire.store.location import DbRef

SESSION = "ac9b5a71-50d4-47c2-b771-4d5c3e96d899"
NOT_FOUND = "flibbertigibbet: command not found"


def _json(*args: str) -> Any:
    return json.loads(cli(*args).stdout)


def test_show_lists_tool_errors_with_their_messages(recorded_db: DbRef) -> None:
    db = str(recorded_db)
    text = cli("show", SESSION, "--db", db).stdout
    assert NOT_FOUND in text
    assert "✗ error" in text
    assert "side calls" in text  # the title call, apart from the conversation
    # The subagent is nested under the Agent call that spawned it (indented lane).
    agent_call = text.index("→ Agent")
    assert "    #10 agent 1" in text[agent_call:]
    detail = _json("show", SESSION, "--db", db, "--json")
    errors = [c for t in detail["turns"] for c in t["tool_calls"] if c["is_error"]]
    assert any(NOT_FOUND in (c["result"] or "") for c in errors)


def test_show_one_turn_in_full_and_its_raw_exchange(recorded_db: DbRef) -> None:
    db = str(recorded_db)
    detail = _json("show", SESSION, "--db", db, "--json")
    n = next(t["index"] for t in detail["turns"] if any(
        NOT_FOUND in (c["result"] or "") for c in t["tool_calls"]))  # fmt: skip
    turn = _json("show", SESSION, "--turn", str(n), "--db", db, "--json")
    assert turn == detail["turns"][n - 1]
    raw = _json("show", SESSION, "--raw", str(n + 1), "--db", db, "--json")
    assert raw["id"] == detail["turns"][n]["exchange_id"]
    assert NOT_FOUND in raw["request_body"]["text"]  # decoded, the tool result resent
    assert raw["response_body"]["text"].startswith("event: message_start")  # gunzipped
    headers = {k.lower(): v for k, v in raw["request_headers"]}
    assert headers["x-claude-code-session-id"] == SESSION
    out = cli("show", SESSION, "--raw", "99", "--db", db, check=False)
    assert out.returncode != 0 and "turns 1 to 17" in out.stderr


def test_search_finds_the_turn_only_a_tool_result_holds(recorded_db: DbRef, backend: str) -> None:
    db = str(recorded_db)
    hits = _json("search", "mismatched", "--db", db, "--json")  # ugrep's error: a tool result only
    assert hits and {h["where"] for h in hits} == {"tool_result"}
    detail = _json("show", SESSION, "--db", db, "--json")
    turn = detail["turns"][hits[0]["turn"] - 1]
    assert any("mismatched" in p.get("content", [{}])[0].get("text", "")
               for m in turn["input"] for p in m["parts"] if p.get("type") == "tool_result")  # fmt: skip
    assert hits[0]["session"] == detail["session"]["id"]
    start, end = hits[0]["highlights"][0]
    assert hits[0]["snippet"][start:end].lower() == "mismatched"
    # Filters: the tool whose result it is, and one it is not.
    assert _json("search", "flibbertigibbet", "--tool", "Bash", "--db", db, "--json")
    assert _json("search", "mismatched", "--tool", "Read", "--db", db, "--json") == []
    assert {h["role"] for h in _json("search", "flibbertigibbet", "--role", "assistant",
                                     "--db", db, "--json")} == {"assistant"}  # fmt: skip
    bad = cli("search", 'AND "', "--db", db, check=False)
    if backend == "sqlite":  # FTS5 syntax: a dangling operator and quote are an error
        assert bad.returncode != 0 and "not a valid search" in bad.stderr
    else:  # web-search syntax reads any text: the word "and", the stray quote ignored
        assert bad.returncode == 0 and bad.stderr == ""
        found = _json("search", 'AND "', "--db", db, "--json")
        word = _json("search", "and", "--db", db, "--json")
        assert found and [h["node"] for h in found] == [h["node"] for h in word]
        start, end = found[0]["highlights"][0]  # the word it found is the one shown
        assert found[0]["snippet"][start:end].lower() == "and"
    assert "mismatched" in cli("search", "mismatched", "--db", db).stdout


def test_tools_counts_calls_errors_and_latency(recorded_db: DbRef) -> None:
    rows = {r["name"]: r for r in _json("tools", "--db", str(recorded_db), "--json")}
    detail = _json("show", SESSION, "--db", str(recorded_db), "--json")
    calls = [c for t in detail["turns"] for c in t["tool_calls"]]
    assert sum(r["calls"] for r in rows.values()) == len(calls) == 25
    bash = [c for c in calls if c["name"] == "Bash"]
    assert rows["Bash"]["calls"] == len(bash)
    assert rows["Bash"]["errors"] == sum(bool(c["is_error"]) for c in bash) > 0
    assert rows["Bash"]["error_rate"] == round(rows["Bash"]["errors"] / len(bash), 4)
    latencies = sorted(c["latency_ms"] for c in bash)
    assert rows["Bash"]["p50_ms"] == latencies[(len(latencies) + 1) // 2 - 1]
    one = _json("tools", "--session", SESSION, "--db", str(recorded_db), "--json")
    assert one == list(rows.values())


def test_export_lines_parse_and_carry_the_schema_version(
    recorded_db: DbRef, tmp_path: Path
) -> None:
    out = tmp_path / "export.jsonl"
    cli("export", "--db", str(recorded_db), "--out", str(out))
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(r["schema_version"] == 1 for r in records)
    assert [r["type"] for r in records] == ["session"] + ["turn"] * 17
    assert records[0]["title"] == "Run generate-claude-fixture skill"
    assert {r["session"] for r in records[1:]} == {records[0]["id"]}
    piped = cli("export", SESSION, "--db", str(recorded_db)).stdout.splitlines()
    assert [json.loads(line) for line in piped] == records


def test_sessions_filters(recorded_db: DbRef) -> None:
    db = str(recorded_db)
    (row,) = _json("sessions", "--db", db, "--json")
    assert row["duration_s"] == round(row["ended_at"] - row["started_at"], 3)
    assert _json("sessions", "--harness", "codex", "--db", db, "--json") == []
    assert _json("sessions", "--model", "claude-sonnet-4-6", "--db", db, "--json") == [row]
    assert _json("sessions", "--since", "2999-01-01", "--db", db, "--json") == []
    assert _json("sessions", "--cwd", "/nowhere", "--db", db, "--json") == []
    assert "Run generate-claude-fixture skill" in cli("sessions", "--db", db).stdout
