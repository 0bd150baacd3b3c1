"""Replay: a recorded session served again with no provider: the same client script gets the
same bytes in the same chunks, the recorded Claude session passes `--check`, a client that
deviates gets a miss naming the turn and the difference, and with passthrough the new branch
is recorded and `diff` shows the split."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx
import pytest
from click.testing import CliRunner

from conftest import Databases, settings_for, stored
from fakeprovider import FakeProvider
from scenarios import SCRIPTS, _play_anthropic, _play_openai
from tapewire import query
from tapewire.cli import main
from tapewire.replay.check import check
from tapewire.replay.match import Recorded, request_key
from tapewire.replay.server import ReplayServer, load, pieces
from tapewire.service import ServiceThread
from tapewire.store import open_store
from tapewire.store.location import DbRef


def recording(db: DbRef, session: str) -> Any:
    store = open_store(db, readonly=True)
    try:
        return load(store, session)
    finally:
        store.close()


async def _raw_chunks(url: str, r: Recorded) -> tuple[int, list[bytes]]:
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.post(
            url + r.path, data=r.request, headers={"content-type": "application/json"}
        ) as resp:
            return resp.status, [c async for c in resp.content.iter_any()]


@pytest.mark.parametrize("label", ["clean", "drift-1"])
def test_the_same_client_script_plays_again_with_no_provider(
    label: str, scenarios_db: tuple[DbRef, dict[str, str]]
) -> None:
    """The scripted SDK conversation (Anthropic, then OpenAI) runs against the replay exactly
    as it ran against the provider: every reply the SDK decodes is the scripted one."""
    db, ids = scenarios_db
    rec = recording(db, ids[label])
    scenario = SCRIPTS[label]
    with ReplayServer(rec) as server:
        if scenario.api == "anthropic":
            _play_anthropic(server.url, scenario)
        else:
            _play_openai(server.url, scenario)
        assert server.misses == []
    assert [r.served for r in rec.exchanges] == [1] * len(rec.exchanges)


def test_each_answer_is_the_recorded_bytes_in_the_recorded_chunks(
    scenarios_db: tuple[DbRef, dict[str, str]],
) -> None:
    db, ids = scenarios_db
    rec = recording(db, ids["drift-1"])
    with ReplayServer(rec) as server:
        for r in rec.exchanges:
            status, chunks = asyncio.run(_raw_chunks(server.url, r))
            assert status == r.status
            assert b"".join(chunks) == r.body
            expected = [p for p, _ in pieces(r)]
            # Each recorded chunk leaves on its own: the client may see two at once over
            # loopback, never one cut where the recording was not.
            assert len(chunks) <= len(expected)
            joined, at = set(), 0
            for c in expected:
                at += len(c)
                joined.add(at)
            at = 0
            for c in chunks:
                at += len(c)
                assert at in joined


def test_check_serves_the_recorded_claude_session_byte_exact(recorded_db: DbRef) -> None:
    store = open_store(recorded_db, readonly=True)
    try:
        (session,) = query.sessions(store)
        threads = {t["kind"] for t in query.session_summary(store, session["id"])["threads"]}
    finally:
        store.close()
    assert "subagent" in threads  # its subagent's turns are replayed too
    results = check(recording(recorded_db, session["id"]))
    assert len(results) == 17 and all(r.ok for r in results), results
    cli = CliRunner().invoke(main, ["replay", session["id"], "--check", "--db", str(recorded_db)])
    assert cli.exit_code == 0, cli.output
    assert "17 of 17 exchanges served byte-exact" in cli.output


def test_a_request_that_differs_is_a_miss_naming_the_turn(
    scenarios_db: tuple[DbRef, dict[str, str]],
) -> None:
    db, ids = scenarios_db
    rec = recording(db, ids["clean"])
    third = json.loads(rec.exchanges[2].request)
    third["messages"][-1]["content"][0]["content"] = "a different tool result"
    with ReplayServer(rec) as server:
        client = anthropic.Anthropic(base_url=server.url, api_key="sk-x", max_retries=0)
        first = json.loads(rec.exchanges[0].request)  # streamed, as recorded
        assert [e.type for e in client.messages.create(**first)][-1] == "message_stop"
        with pytest.raises(anthropic.BadRequestError) as raised:
            client.messages.create(**third)
    message = raised.value.message
    assert "turn 3" in message
    assert "+" in message and "a different tool result" in message  # the diff of the request
    assert len(server.misses) == 1 and server.misses[0].nearest is not None
    assert server.misses[0].nearest.turn == 3


def test_what_varies_between_runs_does_not_miss() -> None:
    body = {
        "model": "m",
        "system": [{"type": "text", "text": "Today is 2026-07-27 09:30.", "cache_control": {}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                                                   "cache_control": {"type": "ephemeral"}}]}],
        "metadata": {"user_id": "run-1"},
    }  # fmt: skip
    other = json.loads(json.dumps(body))
    other["system"][0]["text"] = "Today is 2026-11-25 17:02."
    other["metadata"]["user_id"] = "run-2"
    del other["messages"][0]["content"][0]["cache_control"]
    key = request_key("/v1/messages", json.dumps(body).encode())
    assert key == request_key("/v1/messages?beta=true", json.dumps(other).encode())
    other["messages"][0]["content"][0]["text"] = "hello"
    assert key != request_key("/v1/messages", json.dumps(other).encode())


def test_passthrough_records_the_new_branch_and_diff_shows_the_split(
    scenarios_db: tuple[DbRef, dict[str, str]], dbs: Databases, tmp_path: Path
) -> None:
    """The replayed run goes through a recording proxy whose upstream is the replay; the turn
    the recording does not hold goes on to the (fake) provider, and the run is a new session."""
    db, ids = scenarios_db
    work = dbs.clone(db, "work")
    scenario = SCRIPTS["clean"]
    # Turn 3's tool result differs in this run, so from turn 3 on the provider answers.
    steps = list(scenario.steps)
    steps[1] = replace(steps[1], results=("a different tool result",))
    changed = replace(scenario, label="replayed", steps=tuple(steps))
    with FakeProvider() as fake:
        fake.script(changed.label, changed.replies()[2:])
        rec = recording(work, ids["clean"])
        with ReplayServer(rec, forward={"anthropic": fake.url}) as server:
            every = [f"{name}={server.url}" for name in ("anthropic", "openai", "ollama")]
            settings = settings_for(fake, tmp_path, db=work, upstreams=every)
            with ServiceThread(settings) as service:
                _play_anthropic(service.url, changed)  # as session "replayed"
                store = stored(service)
        assert server.forwarded == len(changed.steps) - 2
    try:
        replayed = query.resolve_session(store, "replayed")
        result = query.diff(store, ids["clean"], replayed)
    finally:
        store.close()
    assert result["first_divergence"]["turn"] == 3
    assert result["first_divergence"]["reason"] == "input"


def test_replay_runs_a_command_against_the_recording(
    scenarios_db: tuple[DbRef, dict[str, str]],
) -> None:
    db, ids = scenarios_db
    rec = recording(db, ids["clean"])
    first = json.loads(rec.exchanges[0].request)
    child = (
        "import anthropic, json\n"
        "c = anthropic.Anthropic(api_key='sk-x', max_retries=0)\n"  # ANTHROPIC_BASE_URL is set
        f"events = c.messages.create(**json.loads({json.dumps(json.dumps(first))}))\n"
        "print([e.type for e in events][-1])\n"
    )
    result = CliRunner().invoke(
        main,
        ["replay", ids["clean"], "--listen", "127.0.0.1:0", "--db", str(db), "--",
         sys.executable, "-c", child],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "served 1 of 4 recorded exchanges" in result.output


async def _arrival_gaps(url: str, r: Recorded) -> list[float]:
    loop = asyncio.get_running_loop()
    times = []
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.post(url + r.path, data=r.request) as resp:
            async for _ in resp.content.iter_any():
                times.append(loop.time() * 1000)
    return [b - a for a, b in itertools.pairwise(times)]


def test_recorded_timing_keeps_the_recorded_gaps(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    """A stream whose events arrived 50 ms apart is replayed 50 ms apart with
    `--timing recorded`, and at once with `--timing fast`."""
    body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": "pace me"}]}).encode()  # fmt: skip
    headers = {"x-fake-scenario": "paced", "x-fake-events": "5", "x-fake-delay-ms": "50",
               "content-type": "application/json"}  # fmt: skip
    with ServiceThread(settings_for(fake, tmp_path, db=db)) as service:
        httpx.post(f"{service.url}/s/paced/v1/chat/completions", content=body, headers=headers)
        store = stored(service)
    try:
        rec = load(store, query.resolve_session(store, "paced"))
    finally:
        store.close()
    (recorded,) = rec.exchanges
    assert recorded.chunks is not None and len(recorded.chunks) == 5
    with ReplayServer(rec, timing="recorded") as server:
        gaps = asyncio.run(_arrival_gaps(server.url, recorded))
    assert len(gaps) == 4 and all(abs(g - 50) < 15 for g in gaps), gaps
    with ReplayServer(rec, timing="fast") as server:
        gaps = asyncio.run(_arrival_gaps(server.url, recorded))
    assert sum(gaps) < 40, gaps
