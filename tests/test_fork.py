"""`tapewire fork`: a recorded conversation, played by the real SDKs through a real proxy against
the fake provider, forked at turn 4 with its last user message changed, in each wire format.
The fake provider's record of what it received is the proof of what was sent; the store's nodes
prove the fork is a branch of the same DAG; the read side (sessions, show, diff, the pages)
shows the link both ways."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from conftest import settings_for
from fakeprovider import FakeProvider, Reply
from servecli import ServeProcess
from tapewire import query
from tapewire.cli import main
from tapewire.replay.fork import ForkError, edit_message
from tapewire.service import ServiceThread
from tapewire.store import Store, location, open_store
from tapewire.store.location import DbRef
from tapewire.web import create_app

API_KEY = "sk-test-tapewire-fork"
SYSTEM = "You are a terse coding agent."
ASKED = "Now run the tests"  # turn 4's last user message
EDITED = "Run only the fast tests, please"
RESULT = "3 passed"  # turn 5's tool result
SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
TOOLS = {"read_file": "Read a file.", "run_tests": "Run the tests under a path."}

# The conversation: (what the user side sends, whether tools go with it). Turn 4 ends with the
# user's text, turn 5 with a tool's result.
STEPS: list[tuple[str, str, bool]] = [
    ("user", "Hello", False),
    ("user", "Read a.py", True),
    ("tool", "def f(): pass", True),
    ("user", ASKED, True),
    ("tool", RESULT, True),
]
# Scripted answers (Anthropic, OpenAI Chat): the five turns, then the forks'.
SCRIPT = [
    Reply(text="Hi. What shall I do?", input_tokens=20, output_tokens=5),
    Reply(tool_calls=[("read_file", {"path": "a.py"})], input_tokens=40, output_tokens=9),
    Reply(text="a.py defines f.", input_tokens=60, output_tokens=4),
    Reply(tool_calls=[("run_tests", {"path": "tests"})], input_tokens=80, output_tokens=9),
    Reply(text="All tests pass.", input_tokens=100, output_tokens=4),
    Reply(text="Running the fast tests only.", input_tokens=80, output_tokens=6),
    Reply(text="Nothing passed.", input_tokens=100, output_tokens=3),
    Reply(text="A third answer.", input_tokens=80, output_tokens=3),
]
FORMATS = ["anthropic", "chat", "responses", "ollama"]


# --------------------------------------------------------------------------- the conversation


def _anthropic(url: str, name: str) -> None:
    tools: Any = [{"name": n, "description": d, "input_schema": SCHEMA} for n, d in TOOLS.items()]
    messages: list[Any] = []
    with anthropic.Anthropic(base_url=f"{url}/s/{name}", api_key=API_KEY, max_retries=0,
                             default_headers={"x-fake-script": name}) as client:  # fmt: skip
        calls: list[str] = []
        for role, text, with_tools in STEPS:
            if role == "user":
                messages.append({"role": "user", "content": text})
            else:
                messages.append({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": calls[-1], "content": text}]})  # fmt: skip
            kw: dict[str, Any] = {"model": "claude-fake-1", "max_tokens": 1024, "system": SYSTEM,
                                  "messages": messages, **({"tools": tools} if with_tools else {})}  # fmt: skip
            with client.messages.stream(**kw) as stream:
                message = stream.get_final_message()
            content: list[dict[str, Any]] = []
            for block in message.content:
                if block.type == "text":
                    content.append({"type": "text", "text": block.text})
                elif block.type == "tool_use":
                    calls.append(block.id)
                    content.append({"type": "tool_use", "id": block.id, "name": block.name,
                                    "input": block.input})  # fmt: skip
            messages.append({"role": "assistant", "content": content})


def _chat(url: str, name: str) -> None:
    tools: Any = [{"type": "function", "function": {"name": n, "description": d,
                   "parameters": SCHEMA}} for n, d in TOOLS.items()]  # fmt: skip
    messages: list[Any] = [{"role": "system", "content": SYSTEM}]
    with openai.OpenAI(base_url=f"{url}/s/{name}/v1", api_key=API_KEY, max_retries=0,
                       default_headers={"x-fake-script": name}) as client:  # fmt: skip
        calls: list[str] = []
        for role, text, with_tools in STEPS:
            if role == "user":
                messages.append({"role": "user", "content": text})
            else:
                messages.append({"role": "tool", "tool_call_id": calls[-1], "content": text})
            kw: dict[str, Any] = {"tools": tools} if with_tools else {}
            message = (
                client.chat.completions.create(model="gpt-fake-1", messages=messages, **kw)
                .choices[0]
                .message
            )
            assistant: dict[str, Any] = {"role": "assistant", "content": message.content}
            if message.tool_calls:
                assistant["tool_calls"] = [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.function.name, "arguments": c.function.arguments}}
                    for c in message.tool_calls if c.type == "function"
                ]  # fmt: skip
                calls += [c["id"] for c in assistant["tool_calls"]]
            messages.append(assistant)


def _responses(url: str, name: str) -> None:
    tools: Any = [{"type": "function", "name": n, "description": d, "parameters": SCHEMA}
                  for n, d in TOOLS.items()]  # fmt: skip
    items: list[Any] = []
    with openai.OpenAI(base_url=f"{url}/s/{name}/v1", api_key=API_KEY, max_retries=0) as client:
        calls: list[str] = []
        for role, text, with_tools in STEPS:
            if role == "user":
                items.append({"role": "user", "content": text})
            else:
                items.append({"type": "function_call_output", "call_id": calls[-1],
                              "output": text})  # fmt: skip
            kw: dict[str, Any] = {"tools": tools} if with_tools else {}
            stream = client.responses.create(model="gpt-fake-1", instructions=SYSTEM,
                                             input=items, stream=True, **kw)  # fmt: skip
            final = next(e.response for e in stream if e.type == "response.completed")
            for item in final.output:
                if item.type == "function_call":
                    calls.append(item.call_id)
                    items.append({"type": "function_call", "call_id": item.call_id,
                                  "name": item.name, "arguments": item.arguments})  # fmt: skip
                elif item.type == "message":
                    text_out = "".join(c.text for c in item.content if c.type == "output_text")
                    items.append({"role": "assistant", "content": text_out})


def _ollama(url: str, name: str) -> None:
    tools = [{"type": "function", "function": {"name": n, "description": d,
              "parameters": SCHEMA}} for n, d in TOOLS.items()]  # fmt: skip
    messages: list[Any] = [{"role": "system", "content": SYSTEM}]
    with httpx.Client(base_url=f"{url}/s/{name}") as http:
        called = ""
        for role, text, with_tools in STEPS:
            if role == "user":
                messages.append({"role": "user", "content": text})
            else:
                messages.append({"role": "tool", "content": text, "tool_name": called})
            body: dict[str, Any] = {"model": "llama-fake", "messages": messages, "stream": False}
            if with_tools:
                body["tools"] = tools
            answer = http.post("/api/chat", json=body, timeout=10).json()["message"]
            messages.append(answer)
            for call in answer.get("tool_calls") or []:
                called = call["function"]["name"]


PLAYERS: dict[str, Callable[[str, str], None]] = {
    "anthropic": _anthropic, "chat": _chat, "responses": _responses, "ollama": _ollama,
}  # fmt: skip


def _record(fake: FakeProvider, tmp_path: Path, db: DbRef, fmt: str) -> tuple[DbRef, str]:
    """The five-turn conversation recorded in a fresh store: (db, session id)."""
    name = f"parent-{fmt}"
    fake.script(name, SCRIPT)
    settings = settings_for(fake, tmp_path, db=db)
    with ServiceThread(settings) as service:
        PLAYERS[fmt](service.url, name)
    store = open_store(settings.db, readonly=True)
    try:
        return settings.db, query.resolve_session(store, name)
    finally:
        store.close()


# --------------------------------------------------------------------------- helpers


def _cli(*args: str, env: dict[str, str] | None = None, code: int = 0) -> Result:
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def _upstreams(fake: FakeProvider) -> list[str]:
    return [f"--upstream={n}={fake.url}" for n in ("anthropic", "openai", "ollama")]


def _last_user_text(fmt: str, doc: dict[str, Any], text: str) -> None:
    """`doc` (a request body) with its last message's text changed, as the test expects it."""
    if fmt == "responses":
        doc["input"][-1]["content"] = text
    else:
        doc["messages"][-1]["content"] = text


def _swap(body: bytes, old: str, new: str) -> bytes:
    """`body` with the one JSON string `old` replaced by `new`, every other byte kept."""
    before, after = json.dumps(old).encode(), json.dumps(new).encode()
    assert body.count(before) == 1
    return body.replace(before, after)


def _read(db: DbRef, fn: Callable[[Store], Any]) -> Any:
    store = open_store(db, readonly=True)
    try:
        return fn(store)
    finally:
        store.close()


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("fmt", FORMATS)
def test_fork_at_turn_4_with_an_edited_message(
    fmt: str, fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    db, parent = _record(fake, tmp_path, db, fmt)
    recorded = [r.body for r in fake.received]
    assert len(recorded) == 5
    turn4 = recorded[3]
    expected = json.loads(turn4)
    _last_user_text(fmt, expected, EDITED)

    # --print writes the request, edited, and sends nothing.
    printed = _cli("fork", parent[:8], "--at", "4", "--message", EDITED, "--print", "--db", str(db))
    assert len(fake.received) == 5
    assert printed.stdout_bytes == _swap(turn4, ASKED, EDITED)

    # Sent: what the upstream receives is the recorded turn-4 request, the message changed.
    out = _cli("fork", parent, "--at", "4", "--message", EDITED, "--json", *_upstreams(fake),
               "--db", str(db), env={"ANTHROPIC_API_KEY": "sk-env-anthropic",
                                     "OPENAI_API_KEY": "sk-env-openai"})  # fmt: skip
    assert len(fake.received) == 6
    got = fake.received[-1]
    assert got.raw_path.endswith(
        {"anthropic": "/v1/messages", "chat": "/v1/chat/completions",
         "responses": "/v1/responses", "ollama": "/api/chat"}[fmt]
    )  # fmt: skip
    assert got.body == _swap(turn4, ASKED, EDITED)  # byte for byte, the edit aside
    assert json.loads(got.body) == expected
    assert list(json.loads(got.body)) == list(json.loads(turn4))  # key order kept
    headers = {k.lower(): v for k, v in got.headers}
    if fmt == "anthropic":
        assert headers["x-api-key"] == "sk-env-anthropic"
    elif fmt != "ollama":
        assert headers["authorization"] == "Bearer sk-env-openai"
    assert not any(k.startswith("x-tapewire-") for k in headers)

    result = json.loads(out.stdout)
    fork_id = result["session"]
    name = f"fork-{parent[:8]}-t4"
    assert (result["parent"], result["fork_turn"], result["name"]) == (parent, 4, name)
    assert result["status"] == 200 and result["output"]
    assert result["edited"].startswith("user message")

    # The link, and the branch: the fork shares the parent's nodes up to the edited message.
    def check(store: Store) -> None:
        rows = {r["id"]: r for r in query.sessions(store)}
        assert rows[fork_id]["forked_from"] == parent and rows[fork_id]["fork_turn"] == 4
        assert rows[fork_id]["name"] == name
        assert rows[parent]["forked_from"] is None
        p_turns, f_turns = store.turn_rows(parent), store.turn_rows(fork_id)
        assert len(p_turns) == 5 and len(f_turns) == 1
        assert rows[fork_id]["fork_node"] == p_turns[3]["request_node"]
        p_chain = store.node_chain(p_turns[3]["request_node"])
        f_chain = store.node_chain(f_turns[0]["request_node"])
        assert len(f_chain) == len(p_chain) >= 8  # system?, 4 user, 3 assistant messages
        assert f_chain[:-1] == p_chain[:-1]  # the same ids: the same nodes
        assert f_chain[-1] != p_chain[-1]  # the edited message branches off
        assert p_turns[2]["response_nodes"][0] in f_chain  # turn 3's answer, shared
        # The fork's new input is the whole conversation (a new thread), ending in the edit.
        assert f_turns[0]["input_nodes"] == f_chain[-len(f_turns[0]["input_nodes"]) :]
        assert set(f_turns[0]["input_nodes"][:-1]) <= set(p_chain)
        answer = store.node_rows(f_turns[0]["response_nodes"][:1])[f_turns[0]["response_nodes"][0]]
        assert answer["parent"] == f_chain[-1]
        edited = store.node_rows([f_chain[-1]])[f_chain[-1]]
        assert EDITED in json.dumps(edited["content"])
        summary = query.session_summary(store, parent)["session"]
        assert [(f["id"], f["fork_turn"], f["name"]) for f in summary["forks"]] == [
            (fork_id, 4, name)
        ]
        fork_summary = query.session_summary(store, fork_id)["session"]
        assert fork_summary["forked_from"] == parent and fork_summary["forks"] == []
        # No credential reached the store.
        row = store.exchange(f_turns[0]["exchange"])
        assert row is not None
        stored = {k.lower(): v for k, v in row.request_headers}
        assert stored.get("x-api-key", "") == "" and stored.get("authorization", "") == ""

    _read(db, check)
    _read_side_shows_the_fork(db, parent, fork_id)


def _read_side_shows_the_fork(db: DbRef, parent: str, fork_id: str) -> None:
    listing = _cli("sessions", "--db", str(db)).stdout
    assert f"⑂ {parent[:8]}@t4" in listing
    listed = json.loads(_cli("sessions", "--json", "--db", str(db)).stdout)
    assert {r["id"]: r["forked_from"] for r in listed} == {parent: None, fork_id: parent}

    shown = _cli("show", fork_id, "--db", str(db)).stdout
    assert f"forked from {parent} at turn 4" in shown
    assert f"fork {fork_id} at turn 4" in _cli("show", parent, "--db", str(db)).stdout

    # The diff of a fork against its parent starts at the fork point, in either order.
    diff = json.loads(_cli("diff", fork_id, parent, "--json", "--db", str(db), code=1).stdout)
    assert diff["aligned_from"] == {"a": 1, "b": 4}
    first = diff["first_divergence"]
    assert (first["turn"], first["reason"], first["a_turn"], first["b_turn"]) == (4, "input", 1, 4)
    assert EDITED in first["detail"] and ASKED in first["detail"]
    assert diff["deltas"]["turns"] == 1  # parent's turns 4 and 5 against the fork's one
    back = json.loads(_cli("diff", parent, fork_id, "--json", "--db", str(db), code=1).stdout)
    assert back["aligned_from"] == {"a": 4, "b": 1}
    assert back["first_divergence"]["turn"] == 4
    assert "fork of" in _cli("diff", fork_id, parent, "--db", str(db), code=1).stdout

    app = create_app(db)
    try:
        with TestClient(app) as client:
            page = client.get(f"/sessions/{fork_id}")
            assert page.status_code == 200
            assert f'href="/sessions/{parent}#t4"' in page.text
            assert f'href="/diff?a={parent}&amp;b={fork_id}"' in page.text
            assert f'href="/sessions/{fork_id}"' in client.get(f"/sessions/{parent}").text
            assert f"⑂ {parent[:8]}@t4" in client.get("/sessions").text
            # The diff page pairs the fork's turns with the parent's from the fork point.
            rows = client.get("/diff.json", params={"a": parent, "b": fork_id}).json()["rows"]
            assert [(r["a"]["index"], r["b"] and r["b"]["index"]) for r in rows] == [
                (4, 1),
                (5, None),
            ]
            api = client.get(f"/api/sessions/{fork_id}").json()["session"]
            assert (api["forked_from"], api["fork_turn"]) == (parent, 4)
            listed = client.get("/api/sessions").json()["sessions"]
            assert {s["id"]: s["fork_turn"] for s in listed} == {parent: None, fork_id: 4}
    finally:
        app.state.readers.stop()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_message_at_a_tool_result_replaces_the_result(
    fmt: str, fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    """Turn 5 ends with a tool's result: --message replaces that result, and says so."""
    db, parent = _record(fake, tmp_path, db, fmt)
    turn5 = fake.received[4].body
    out = _cli("fork", parent, "--at", "5", "--message", "0 passed, 3 failed", "--json",
               *_upstreams(fake), "--db", str(db))  # fmt: skip
    assert fake.received[-1].body == _swap(turn5, RESULT, "0 passed, 3 failed")
    result = json.loads(out.stdout)
    assert result["edited"].startswith("the tool result")
    assert result["name"] == f"fork-{parent[:8]}-t5"


def test_fork_by_node_with_an_edited_body_and_a_second_fork(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    """--at takes a node; --edit sends a person's edited body as it is; forking the same turn
    again gets a name of its own; the fork without changes resends the request byte for byte."""
    db, parent = _record(fake, tmp_path, db, "anthropic")
    turn4 = fake.received[3].body
    nodes = _read(db, lambda s: s.turn_rows(parent)[3])
    for node in (nodes["request_node"], nodes["request_node"][:12], nodes["response_nodes"][0]):
        same = _cli("fork", parent, "--at", node, "--print", "--db", str(db))
        assert same.stdout_bytes == turn4  # unchanged: the recorded bytes
    edited = tmp_path / "edited.json"
    doc = json.loads(turn4)
    doc["max_tokens"] = 77
    doc["messages"].append({"role": "assistant", "content": "Sure:"})
    edited.write_bytes(json.dumps(doc, indent=1).encode())
    out = _cli("fork", parent, "--at", nodes["request_node"], "--edit", str(edited), "--json",
               "--header", "x-api-key: sk-given", *_upstreams(fake), "--db", str(db))  # fmt: skip
    assert fake.received[-1].body == edited.read_bytes()
    assert ("x-api-key", "sk-given") in [(k.lower(), v) for k, v in fake.received[-1].headers]
    first = json.loads(out.stdout)
    assert first["name"] == f"fork-{parent[:8]}-t4"
    again = _cli("fork", parent, "--at", "4", "--json", *_upstreams(fake), "--db", str(db))
    assert fake.received[-1].body == turn4
    second = json.loads(again.stdout)
    assert second["name"] == f"fork-{parent[:8]}-t4-2" and second["session"] != first["session"]
    forks = _read(db, lambda s: query.session_summary(s, parent)["session"]["forks"])
    assert [f["id"] for f in forks] == [first["session"], second["session"]]
    # Unchanged, the fork's request is the parent's turn 4: the same node.
    assert (
        _read(db, lambda s: s.turn_rows(second["session"])[0]["request_node"])
        == nodes["request_node"]
    )


def test_fork_refuses_what_it_cannot_do(fake: FakeProvider, tmp_path: Path, db: DbRef) -> None:
    db, parent = _record(fake, tmp_path, db, "chat")
    sent = len(fake.received)
    out = _cli("fork", parent, "--at", "9", "--print", "--db", str(db), code=1)
    assert "turns 1 to 5" in out.output
    out = _cli("fork", parent, "--at", "nosuchnode", "--print", "--db", str(db), code=1)
    assert "no turn" in out.output
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    out = _cli("fork", parent, "--at", "4", "--edit", str(bad), "--db", str(db), code=1)
    assert "not JSON" in out.output
    out = _cli("fork", parent, "--at", "4", "--edit", str(bad), "--message", "x", "--db",
               str(db), code=2)  # fmt: skip
    assert len(fake.received) == sent


def _wait_for_turns(db: DbRef, name: str, turns: int) -> str:
    """The session named `name`, once a running serve has stored `turns` turns of it."""

    def count(store: Store) -> tuple[str | None, int]:
        found = store.find_sessions(name)
        return (found[0], len(store.turn_rows(found[0]))) if found else (None, 0)

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            sid, n = _read(db, count) if location.exists(db) else (None, 0)
        except FileNotFoundError:  # PostgreSQL: serve has not made the tables yet
            sid, n = None, 0
        if sid is not None and n == turns:
            return sid
        time.sleep(0.1)
    raise AssertionError(f"{name}: {turns} turns were not stored")


def test_fork_goes_through_the_running_serve(fake: FakeProvider, db: DbRef) -> None:
    """With a `tapewire serve` owning the database's journal (where serve and fork both put it
    by default), the fork goes through it (its upstreams; --upstream is refused) and waits
    until it has stored the fork."""
    fake.script("parent-chat", SCRIPT)
    with ServeProcess(db, fake.url) as serve:
        _chat(serve.url, "parent-chat")
        parent = _wait_for_turns(db, "parent-chat", 5)
        out = _cli("fork", parent, "--at", "4", "--message", EDITED, "--upstream",
                   f"openai={fake.url}", "--db", str(db), code=1)  # fmt: skip
        assert "owns this database's journal" in out.output
        out = _cli("fork", parent, "--at", "4", "--message", EDITED, "--json", "--db", str(db))
        result = json.loads(out.stdout)
        assert fake.received[-1].body == _swap(fake.received[3].body, ASKED, EDITED)
        assert result["session"] and result["output"]
        rows = {r["id"]: r for r in _read(db, query.sessions)}
        assert rows[result["session"]]["forked_from"] == parent
        assert rows[result["session"]]["fork_turn"] == 4


@pytest.mark.parametrize(
    ("api", "doc", "changed", "said"),
    [
        (  # Claude Code's shape: reminders first, the prompt last, a cache marker on it
            "anthropic.messages",
            {"messages": [{"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>x</system-reminder>"},
                {"type": "text", "text": "old", "cache_control": {"type": "ephemeral"}}]}]},
            {"messages": [{"role": "user", "content": [
                {"type": "text", "text": "<system-reminder>x</system-reminder>"},
                {"type": "text", "text": "new", "cache_control": {"type": "ephemeral"}}]}]},
            "user message 1 of 1",
        ),
        (  # a tool result followed by a reminder is still a tool result
            "anthropic.messages",
            {"messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "old"}]},
                {"type": "text", "text": "<system-reminder>x</system-reminder>"}]}]},
            {"messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "new"},
                {"type": "text", "text": "<system-reminder>x</system-reminder>"}]}]},
            "the tool result for t1 (message 1)",
        ),
        (  # an assistant prefill after the user's message
            "openai.chat",
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "old"},
                                                       {"type": "image_url", "image_url": {"url": "u"}}]},
                          {"role": "assistant", "content": "Sure"}]},
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "new"},
                                                       {"type": "image_url", "image_url": {"url": "u"}}]},
                          {"role": "assistant", "content": "Sure"}]},
            "user message 1 of 2",
        ),
        (
            "openai.responses",
            {"input": [{"type": "message", "role": "user",
                        "content": [{"type": "input_text", "text": "old"}]}]},
            {"input": [{"type": "message", "role": "user",
                        "content": [{"type": "input_text", "text": "new"}]}]},
            "user message 1 of 1 input items",
        ),
        ("openai.responses", {"input": "old", "model": "m"}, {"input": "new", "model": "m"}, "the input"),
        ("ollama.generate", {"prompt": "old", "stream": False}, {"prompt": "new", "stream": False}, "the prompt"),
    ],
)  # fmt: skip
def test_edit_message_shapes(
    api: str, doc: dict[str, Any], changed: dict[str, Any], said: str
) -> None:
    body, what = edit_message(api, json.dumps(doc).encode(), "new")
    assert json.loads(body) == changed and what == said
    assert body == json.dumps(changed).encode()  # written as the original was (with spaces)


def test_edit_message_keeps_the_bytes_and_refuses_what_it_cannot_edit() -> None:
    original = '{"messages":[{"role":"user","content":"é old"}],"z":1.50}'.encode()
    body, _ = edit_message("openai.chat", original, "ünïcode")
    assert body == '{"messages":[{"role":"user","content":"ünïcode"}],"z":1.5}'.encode()
    lone = b'{"messages":[{"role":"user","content":"\\ud83d cut"},{"role":"user","content":"x"}]}'
    body, _ = edit_message("openai.chat", lone, "new")
    assert json.loads(body)["messages"] == [
        {"role": "user", "content": "\ud83d cut"},
        {"role": "user", "content": "new"},
    ]
    for api, bad in (
        ("openai.chat", b'{"messages": []}'),
        ("openai.chat", b'{"messages": [{"role": "system", "content": "s"}]}'),
        ("openai.responses", b'{"input": [{"role": "assistant", "content": "a"}]}'),
        ("openai.chat", b"[1]"),
        (None, b"{}"),
    ):
        with pytest.raises(ForkError):
            edit_message(api, bad, "new")
