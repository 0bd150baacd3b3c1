"""The 17-turn Claude Code recording through the proxy, derived: the figures asserted here are
the ones the recording itself holds (read straight from its files), not tapewire's output."""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import RECORDING, Databases
from fakeprovider import load_recording
from servecli import cli
from tapewire.store import Store, open_store
from tapewire.store.location import DbRef

TURNS = load_recording(RECORDING)
SESSION_ID = "ac9b5a71-50d4-47c2-b771-4d5c3e96d899"


def _final_usage(turn_dir: Path) -> dict[str, Any]:
    """The last `message_delta` usage of a recorded stream: what the provider billed."""
    text = gzip.decompress((turn_dir / "response.sse").read_bytes()).decode()
    usage: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith("data:") and '"message_delta"' in line:
            usage = json.loads(line[5:])["usage"]
    return usage


def _start_usage(turn_dir: Path) -> dict[str, Any]:
    text = gzip.decompress((turn_dir / "response.sse").read_bytes()).decode()
    for line in text.splitlines():
        if line.startswith("data:") and '"message_start"' in line:
            usage: dict[str, Any] = json.loads(line[5:])["message"]["usage"]
            return usage
    return {}


def _recorded_tool_calls() -> tuple[int, int]:
    """(tool_use blocks across the responses, tool_results marked is_error in the requests)."""
    calls, errors = 0, set()
    for turn_dir in sorted(p for p in RECORDING.iterdir() if p.is_dir()):
        text = gzip.decompress((turn_dir / "response.sse").read_bytes()).decode()
        calls += text.count('"content_block":{"type":"tool_use"')
        body = json.loads(
            base64.b64decode(json.loads((turn_dir / "request.json").read_text())["body_b64"])
        )
        for message in body["messages"]:
            for block in message["content"] if isinstance(message["content"], list) else []:
                if block.get("type") == "tool_result" and block.get("is_error"):
                    errors.add(block["tool_use_id"])
    return calls, len(errors)


def _json(*args: str) -> Any:
    return json.loads(cli(*args).stdout)


def test_one_session_with_the_harness_title_and_recorded_totals(recorded_db: DbRef) -> None:
    sessions = _json("sessions", "--db", str(recorded_db), "--json")
    assert len(sessions) == 1
    s = sessions[0]
    calls, errors = _recorded_tool_calls()
    assert (calls, errors) == (25, 5)  # what the recording holds
    assert s["harness"] == "claude-code"
    assert s["harness_session_id"] == SESSION_ID
    assert s["title"] == "Run generate-claude-fixture skill"  # from the title side call
    assert s["turns"] == 17
    assert s["threads"] == 2
    assert (s["tool_calls"], s["tool_errors"]) == (calls, errors)
    assert s["models"] == ["claude-sonnet-4-6"]

    usages = [_final_usage(d) for d in sorted(p for p in RECORDING.iterdir() if p.is_dir())]
    assert s["input_tokens"] == sum(
        u["input_tokens"] + u["cache_creation_input_tokens"] + u["cache_read_input_tokens"]
        for u in usages
    )
    assert s["cache_read_tokens"] == sum(u["cache_read_input_tokens"] for u in usages)
    assert s["cache_write_tokens"] == sum(u["cache_creation_input_tokens"] for u in usages)
    assert s["output_tokens"] == sum(u["output_tokens"] for u in usages)
    thinking = [u.get("output_tokens_details", {}).get("thinking_tokens") for u in usages]
    assert any(thinking)
    assert s["reasoning_tokens"] == sum(t or 0 for t in thinking)
    # Priced from the bundled table: 1-hour cache writes (which Claude Code asks for) at their
    # own rate, as message_start's cache_creation breaks them out.
    from tapewire.pricing import PriceTable

    price = PriceTable.load().lookup("claude-sonnet-4-6")
    assert price is not None and price.cache_write_1h is not None
    expected = 0.0
    for d, u in zip(sorted(p for p in RECORDING.iterdir() if p.is_dir()), usages, strict=True):
        one_hour = _start_usage(d).get("cache_creation", {}).get("ephemeral_1h_input_tokens", 0)
        write = u["cache_creation_input_tokens"]
        expected += (
            u["input_tokens"] * price.input
            + u["cache_read_input_tokens"] * price.cache_read
            + (write - one_hour) * price.cache_write
            + one_hour * price.cache_write_1h
            + u["output_tokens"] * price.output
        ) / 1e6
    assert s["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert s["started_at"] <= s["ended_at"]


def test_show_gives_turns_threads_and_linked_tool_calls(recorded_db: DbRef) -> None:
    # Named by the harness's session id, and by a prefix of tapewire's own id.
    detail = _json("show", SESSION_ID, "--db", str(recorded_db), "--json")
    by_prefix = _json("show", detail["session"]["id"][:8], "--db", str(recorded_db), "--json")
    assert by_prefix == detail
    assert _json("show", SESSION_ID[:8], "--db", str(recorded_db), "--json") == detail
    missing = cli("show", "nosuchsession", "--db", str(recorded_db), "--json", check=False)
    assert missing.returncode != 0 and "no session matches" in missing.stderr
    turns = detail["turns"]
    assert len(turns) == 17
    assert [t["started_at"] for t in turns] == sorted(t["started_at"] for t in turns)
    kinds = [t["kind"] for t in turns]
    assert kinds.count("side") == 1 and kinds[0] == "side"  # Claude Code's title call
    assert kinds.count("subagent") == 2
    assert kinds.count("main") == 14
    assert {t["thread"] for t in turns if t["kind"] == "side"} == {None}
    assert len({t["thread"] for t in turns if t["kind"] != "side"}) == 2

    calls = [c for t in turns for c in t["tool_calls"]]
    assert len(calls) == 25
    assert all(c["answered"] and c["result"] is not None for c in calls)
    assert sum(bool(c["is_error"]) for c in calls) == 5
    assert all(c["latency_ms"] is not None and c["latency_ms"] >= 0 for c in calls)

    # Each conversation turn after a thread's first shows only what is new: the user message
    # carrying the tool results. The resent assistant message resolved to the earlier
    # response's node, or it would show up here again.
    first_of_thread: set[str] = set()
    for t in turns:
        if t["thread"] is None:
            continue
        if t["thread"] in first_of_thread:
            assert [m["role"] for m in t["input"]] == ["user"], t["exchange_id"]
        first_of_thread.add(t["thread"])
    for t in turns:
        for u, usage in ((t["usage"], t["usage"]),):
            assert u["input_tokens"] >= (usage["cache_read_tokens"] or 0)

    # The subagent was spawned by the main thread's Agent tool call.
    sub = next(th for th in detail["threads"] if th["kind"] == "subagent")
    spawner = next(c for c in calls if c["id"] == sub["spawned_by"])
    assert spawner["name"] == "Agent"


def test_shared_prefix_is_stored_once(recorded_db: DbRef) -> None:
    """Nodes grow with the conversation, not with its square: the main thread's last request
    resends 27 messages, yet the whole session holds one node per distinct message."""
    last_main = json.loads(TURNS[-1].request_body)
    sub = json.loads(TURNS[10].request_body)
    title = json.loads(TURNS[0].request_body)
    # (system + messages + final response) per conversation
    expected = (1 + len(last_main["messages"]) + 1) + (1 + len(sub["messages"]) + 1) + (1 + 1 + 1)
    store = open_store(recorded_db, readonly=True)
    try:
        assert store.conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == expected
        assert len(title["messages"]) == 1
    finally:
        store.close()


def _rows(store: Store, table: str) -> list[Any]:
    """A table's rows, every column but the backend's own row number (PostgreSQL numbers
    rows afresh after a rederive, SQLite from 1 again): in that number's order where the
    table has one, else sorted."""
    cursor = store.conn.execute(f"SELECT * FROM {table}")
    names = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    if "rowid" not in names:
        return sorted(rows, key=repr)
    at = names.index("rowid")
    return [r[:at] + r[at + 1 :] for r in sorted(rows, key=lambda r: r[at])]


def test_verify_passes_and_rederive_gives_the_same_ids(recorded_db: DbRef, dbs: Databases) -> None:
    copy = dbs.clone(recorded_db)
    assert _json("verify", "--db", str(copy), "--json")["ok"] is True

    def snapshot() -> dict[str, list[Any]]:
        store = open_store(copy, readonly=True)
        try:
            return {
                table: _rows(store, table)
                for table in ("nodes", "sessions", "threads", "turns", "tool_calls")
            }
        finally:
            store.close()

    before = snapshot()
    cli("rederive", "--db", str(copy))
    assert snapshot() == before

    # A node whose content changed no longer hashes to its id: verify says which.
    store = open_store(copy)
    try:
        nid = store.conn.execute("SELECT id FROM nodes WHERE role = 'user' LIMIT 1").fetchone()[0]
        store.conn.execute("UPDATE nodes SET content = ? WHERE id = ?", (b"[]", nid))
    finally:
        store.close()
    result = cli("verify", "--db", str(copy), "--json", check=False)
    assert result.returncode == 1
    assert any(nid in p for p in json.loads(result.stdout)["problems"])


def test_full_text_search_reaches_prompts_tool_arguments_and_results(recorded_db: DbRef) -> None:
    store = open_store(recorded_db, readonly=True)
    try:
        kinds = {kind for _, kind in store.search_nodes('"generate claude fixture"', limit=500)}
        assert {"prompt", "tool_arguments"} <= kinds
        title = store.search_nodes("title", limit=500)
        assert title  # the title call's prompt and answer
        nodes = store.node_rows([n for n, _ in store.search_nodes("Agent", limit=500)])
        assert any(
            p.get("type") == "tool_call" and p.get("name") == "Agent"
            for n in nodes.values()
            for p in n["content"]
        )
        results = store.search_nodes("error", limit=500)
        assert "tool_result" in {kind for _, kind in results}
        assert store.search_nodes("zzzqqqnotthere") == []
    finally:
        store.close()


# Words the recording holds inside URLs and paths (`https://…`, `/private/…`, `….png`), in
# plain prose, and phrases across punctuation: found alike on either backend.
SEARCHES = ["https", "private", "png", "classify", "flibbertigibbet", '"command not found"',
            '"generate claude fixture"', "tool_result"]  # fmt: skip


def test_a_word_or_phrase_finds_exactly_the_texts_that_hold_it(recorded_db: DbRef) -> None:
    """A text's words are its runs of letters and digits, whatever surrounds them (FTS5's
    unicode61 on SQLite; the same words fed to PostgreSQL's parser): the hits of a word or a
    phrase are every searchable text of every node holding those words in a row."""
    from tapewire.query import search_texts

    store = open_store(recorded_db, readonly=True)
    try:
        texts = [
            (nid, kind, re.findall(r"[^\W_]+", text.lower()))
            for nid, _, role, content, _ in store.iter_nodes()
            for kind, text in search_texts(role, content)
        ]
        for query in SEARCHES:
            phrase = re.findall(r"[^\W_]+", query.lower())
            holding = {
                (nid, kind)
                for nid, kind, words in texts
                if any(
                    words[i : i + len(phrase)] == phrase
                    for i in range(len(words) - len(phrase) + 1)
                )
            }
            assert holding, query
            assert set(store.search_nodes(query, limit=10_000)) == holding, query
    finally:
        store.close()


def test_verify_names_missing_nodes_and_damaged_bodies(recorded_db: DbRef, dbs: Databases) -> None:
    copy = dbs.clone(recorded_db)
    store = open_store(copy)
    try:
        conn = store.conn
        exchange, node = conn.execute(
            "SELECT exchange, response_node FROM turns WHERE kind = 'main' LIMIT 1"
        ).fetchone()
        conn.execute("DELETE FROM nodes WHERE id = ?", (node,))
        blob = conn.execute("SELECT id, data FROM blobs WHERE codec = 'raw' LIMIT 1").fetchone()
        if blob is None:
            blob = conn.execute("SELECT id, data FROM blobs LIMIT 1").fetchone()
        conn.execute("UPDATE blobs SET data = ? WHERE id = ?", (bytes(len(blob[1])), blob[0]))
    finally:
        store.close()
    result = cli("verify", "--db", str(copy), "--json", check=False)
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert any(exchange in p and node in p for p in problems)
    assert any(blob[0] in p for p in problems)
