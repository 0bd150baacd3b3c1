"""`tapewire demo`, run for real: the bundled Claude Code recording and the scripted OpenAI
conversation through a real proxy to the demo's fake provider, into a new database. The
expected figures are read from the bundled recording's files, not from tapewire's output."""

from __future__ import annotations

import base64
import gzip
import json
import queue
import signal
import subprocess
import sys
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from tapewire import query
from tapewire.cli.demo import demo
from tapewire.demo import record_demo
from tapewire.demo.recording import flush_chunks, load_recording
from tapewire.store import open_store
from tapewire.store.location import DbRef

BUNDLED = Path(str(resources.files("tapewire") / "data" / "demo" / "claude-20260727-019fa57e"))
FIXTURE = Path(__file__).parent / "fixtures" / "recordings" / "claude-20260727-019fa57e"
CLAUDE_SESSION_ID = "ac9b5a71-50d4-47c2-b771-4d5c3e96d899"
RUN_DEMO = "from tapewire.cli.demo import demo; demo()"


def _turn_dirs() -> list[Path]:
    return sorted(p for p in BUNDLED.iterdir() if p.is_dir())


def _recorded_tool_calls() -> tuple[int, int]:
    """(tool_use blocks in the recorded responses, distinct tool_results marked is_error)."""
    calls, errors = 0, set()
    for turn_dir in _turn_dirs():
        text = gzip.decompress((turn_dir / "response.sse").read_bytes()).decode()
        calls += text.count('"content_block":{"type":"tool_use"')
        request = json.loads((turn_dir / "request.json").read_text())
        for message in json.loads(base64.b64decode(request["body_b64"]))["messages"]:
            for block in message["content"] if isinstance(message["content"], list) else []:
                if block.get("type") == "tool_result" and block.get("is_error"):
                    errors.add(block["tool_use_id"])
    return calls, len(errors)


def _check_sessions(sessions: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two sessions the demo records, checked against what was sent; (claude, openai)."""
    assert len(sessions) == 2
    (claude,) = [s for s in sessions if s["harness_session_id"] == CLAUDE_SESSION_ID]
    (openai,) = [s for s in sessions if s["name"] == "demo-openai"]
    assert claude["harness"] == "claude-code"
    assert claude["turns"] == len(_turn_dirs()) == 17
    assert (claude["tool_calls"], claude["tool_errors"]) == _recorded_tool_calls() == (25, 5)
    assert claude["models"] == ["claude-sonnet-4-6"]
    assert openai["turns"] == 3
    assert openai["tool_calls"] == 2
    assert openai["models"] == ["gpt-4o-mini-2024-07-18"]
    # 163 + 231 + 498 prompt and 19 + 16 + 84 completion tokens, at gpt-4o-mini's list price.
    assert (openai["input_tokens"], openai["output_tokens"]) == (892, 119)
    assert openai["cost_usd"] is not None and abs(openai["cost_usd"] - 0.0002052) < 1e-9
    return claude, openai


def _check_openai_timeline(turns: list[dict[str, Any]]) -> None:
    assert [t["model"] for t in turns] == ["gpt-4o-mini-2024-07-18"] * 3
    calls = [[(c["name"], c["arguments"]) for c in t["tool_calls"]] for t in turns]
    assert calls == [
        [("read_file", {"path": "tests/test_math.py"})],
        [("run_tests", {"path": "tests"})],
        [],
    ]
    read, run = turns[0]["tool_calls"][0], turns[1]["tool_calls"][0]
    assert read["answered"] and "assert add(2, 2) == 5" in read["result"]
    assert run["answered"] and "FAILED tests/test_math.py::test_add" in run["result"]
    answer = "".join(p.get("text", "") for p in turns[2]["output"])
    assert answer.startswith("`add` is fine; the test is wrong.")


def test_the_bundled_recording_is_the_fixture_byte_for_byte() -> None:
    bundled = sorted(p.relative_to(BUNDLED) for p in BUNDLED.rglob("*") if p.is_file())
    fixture = sorted(p.relative_to(FIXTURE) for p in FIXTURE.rglob("*") if p.is_file())
    assert bundled == fixture and len(bundled) == 17 * 3
    for rel in bundled:
        assert (BUNDLED / rel).read_bytes() == (FIXTURE / rel).read_bytes(), rel
    licences = BUNDLED.parent
    for name in ("LICENSE-MIT", "LICENSE-APACHE"):
        assert (licences / name).read_bytes() == (FIXTURE.parents[1] / name).read_bytes()


def test_recorded_responses_stream_in_the_pieces_the_provider_flushed() -> None:
    turns = load_recording()
    assert [t.name for t in turns] == [d.name for d in _turn_dirs()]
    for turn, turn_dir in zip(turns, _turn_dirs(), strict=True):
        body = (turn_dir / "response.sse").read_bytes()
        assert b"".join(turn.response_chunks) == body
        assert len(turn.response_chunks) > 1
        assert ("content-encoding", "gzip") in turn.response_headers
    assert flush_chunks(b"ab\x00\x00\xff\xffcd") == [b"ab\x00\x00\xff\xff", b"cd"]
    assert flush_chunks(b"") == []


def _check_recorded(db: DbRef) -> None:
    """What the demo recorded, read back from its store."""
    store = open_store(db, readonly=True)
    try:
        _, openai = _check_sessions(query.sessions(store))
        _check_openai_timeline(query.session_detail(store, openai["id"])["turns"])
        hits = query.search(store, '"FAILED tests/test_math.py::test_add"')
        assert {h["session"] for h in hits} == {openai["id"]}
        # The Claude responses were stored as they crossed the wire: gzip, byte for byte.
        recorded = {(d / "response.sse").read_bytes() for d in _turn_dirs()}
        exchanges = store.exchanges(limit=100, with_bodies=True)
        assert len(exchanges) == 20
        assert recorded <= {e.response_body for e in exchanges}
        # Every demo client reads its stream to the end, as an agent does: no hang-ups.
        assert {e.outcome for e in exchanges} == {"complete"}
    finally:
        store.close()


# SQLite only: `tapewire demo` makes a new SQLite file by design (its --db is a path).
def test_demo_records_into_a_new_database(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "demo.db"
    result = CliRunner().invoke(demo, ["--no-serve", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{db}\n"
    assert f"tapewire demo: 2 sessions recorded into {db}" in result.stderr
    _check_recorded(db)


def test_the_demo_recording_reads_the_same_from_either_backend(db: DbRef) -> None:
    """The demo's pipeline (recording, conversation, derivation, pricing, search) into a store
    of each backend: the same sessions, figures and hits."""
    _check_sessions(record_demo(db))  # type: ignore[arg-type]
    _check_recorded(db)


# SQLite only: the demo's --db is a path; what it refuses is an existing file.
def test_demo_refuses_a_database_that_exists(tmp_path: Path) -> None:
    db = tmp_path / "tapewire.db"
    db.write_bytes(b"a user's real database")
    result = CliRunner().invoke(demo, ["--no-serve", "--db", str(db)])
    assert result.exit_code != 0
    assert "already exists" in result.stderr
    assert db.read_bytes() == b"a user's real database"
    assert sorted(tmp_path.iterdir()) == [db]  # no journal, no WAL beside it


def _lines(stream: Any, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


# SQLite only: `tapewire demo` makes a new SQLite file by design.
def test_demo_serves_what_it_recorded_until_sigint(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_DEMO, "--db", str(db), "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc.stderr, lines), daemon=True)
    reader.start()
    try:
        said = [lines.get(timeout=30)]
        while not said[-1].startswith("UI: "):
            said.append(lines.get(timeout=30))
        assert said[-2] == f"tapewire demo: 2 sessions recorded into {db}\n", said
        url = said[-1].removeprefix("UI: ").split()[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")

        sessions = httpx.get(f"{url}api/sessions", timeout=10).raise_for_status().json()
        _, openai = _check_sessions(sessions["sessions"])
        timeline = httpx.get(f"{url}api/sessions/demo-openai/timeline", timeout=10)
        assert timeline.raise_for_status().json()["session"] == openai["id"]
        _check_openai_timeline(timeline.json()["turns"])

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=10)  # to the pipe's end, then close it
        proc.stderr.close()
