"""WebSocket pass-through: a real aiohttp WebSocket client, through a real tapewire proxy, to a
fake Responses WebSocket provider on 127.0.0.1 (tests/fakews.py). Frames byte-identical both
ways, close codes and drops passed on and recorded, the Responses API over a WebSocket derived
into turns like its SSE form."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from conftest import settings_for, stored
from fakeprovider import FakeProvider
from fakews import CALL_ID, FakeWebSocketProvider, reply_events
from tapewire.journal.ingest import Ingester
from tapewire.model import ExchangeEnd, Frame, Outcome, Turn, ws_messages
from tapewire.providers import parse_exchange
from tapewire.query import resolve_session
from tapewire.redact import Redactor
from tapewire.service import ServiceThread
from tapewire.store import ExchangeRow, Store
from tapewire.store.location import DbRef
from test_derive_sdk import _turns

Scenario = Callable[[FakeWebSocketProvider, str], Awaitable[None]]
CODEX_HEADERS = {
    "Authorization": "Bearer sk-secret-ws",
    "OpenAI-Beta": "responses_websockets=2026-02-06",
    "session_id": "codex-ws-session",
}
FIRST = {"type": "response.create", "model": "gpt-fake", "instructions": "Be brief.",
         "tools": [{"type": "function", "name": "get_weather", "parameters": {}}],
         "input": [{"type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": "Weather in Oslo?"}]}]}  # fmt: skip


def _second(previous: str) -> dict[str, Any]:
    return {"type": "response.create", "model": "gpt-fake", "previous_response_id": previous,
            "input": [{"type": "function_call_output", "call_id": CALL_ID,
                       "output": "sunny, 21 C"}]}  # fmt: skip


def _run(
    fake: FakeProvider, tmp_path: Path, db: DbRef, scenario: Scenario
) -> tuple[Store, FakeWebSocketProvider]:
    """Play a scenario through tapewire to a fresh fake WebSocket provider; the store after."""
    ws_fake = FakeWebSocketProvider()
    settings = settings_for(fake, tmp_path, db=db, upstreams=[f"openai={ws_fake.url}"])
    with ServiceThread(settings) as service:

        async def play() -> None:
            await ws_fake.start()
            try:
                await scenario(ws_fake, service.url)
            finally:
                await ws_fake.stop()

        asyncio.run(play())
        return stored(service), ws_fake


async def _reply(ws: aiohttp.ClientWebSocketResponse) -> list[bytes]:
    """The server's text frames up to response.completed, as bytes."""
    got = []
    while True:
        msg = await ws.receive()
        assert msg.type is WSMsgType.TEXT, msg
        got.append(msg.data.encode())
        if json.loads(msg.data)["type"] == "response.completed":
            return got


def _ws_rows(store: Store) -> list[ExchangeRow]:
    rows = [store.exchange(r.id) for r in store.exchanges(limit=100)]
    return sorted((r for r in rows if r is not None and r.method == "WS"),
                  key=lambda r: r.started_at)  # fmt: skip


def test_responses_over_websocket_pass_through_and_derive(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    """Codex's upgrade (GET /v1/responses, OpenAI-Beta) is accepted and proxied; every frame
    arrives unchanged both ways; two response.create turns derive with their tool call linked
    to its result; the close handshake passes through, codes and reasons included."""
    agent_got: list[bytes] = []
    close: dict[str, Any] = {}

    async def scenario(ws_fake: FakeWebSocketProvider, url: str) -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{url}/s/wsrun/v1/responses", headers=CODEX_HEADERS) as ws,
        ):
            assert ws._response.headers["x-fake-upgrade"] == "yes"  # the upstream's 101 headers
            await ws.send_str(json.dumps(FIRST))
            first = await _reply(ws)
            await ws.send_str(json.dumps(_second(json.loads(first[-1])["response"]["id"])))
            agent_got.extend(first + await _reply(ws))
            await ws.close(code=4000, message=b"agent done")
            close["code"] = ws.close_code
            await asyncio.wait_for(ws_fake.ended.wait(), 30)

    store, ws_fake = _run(fake, tmp_path, db, scenario)
    # Byte-identical both ways: what the fake sent is what the agent got, and the reverse.
    assert agent_got == [payload for kind, payload in ws_fake.sent if kind == "TEXT"]
    sent = [json.dumps(FIRST).encode(), json.dumps(_second("resp_ws_1")).encode()]
    assert [p for kind, p in ws_fake.received if kind == "TEXT"] == sent
    # The close handshake, code and reason, each way.
    assert ws_fake.received[-1] == ("CLOSE", (4000).to_bytes(2, "big") + b"agent done")
    assert close["code"] == 4001
    # The upgrade's headers reached the upstream, credentials included.
    (handshake,) = ws_fake.handshakes
    assert handshake["Authorization"] == "Bearer sk-secret-ws"
    assert handshake["OpenAI-Beta"] == "responses_websockets=2026-02-06"
    assert handshake["Host"] == ws_fake.url.removeprefix("http://")

    # Recorded: one exchange per agent message, then the close; credentials never stored.
    rows = _ws_rows(store)
    assert [r.request_body for r in rows] == [*sent, b""]
    assert [r.outcome for r in rows] == ["complete"] * 3
    assert all(r.status == 101 and r.path == "/s/wsrun/v1/responses" for r in rows)
    assert all(dict(r.request_headers)["Authorization"] == "" for r in rows)
    assert b"sk-secret-ws" not in b"".join(json.dumps(r.as_json()).encode() for r in rows)
    for row, replies in zip(rows, (agent_got[:7], agent_got[7:]), strict=False):
        assert row.ws_frames is not None
        assert row.response_body == b"".join(replies)
        assert [(f.source, f.opcode) for f in row.ws_frames] == [
            ("agent", 1),
            *[("upstream", 1)] * len(replies),
        ]
        assert [f.size for f in row.ws_frames[1:]] == [len(p) for p in replies]
        assert [f.ms for f in row.ws_frames] == sorted(f.ms for f in row.ws_frames)
    assert rows[2].ws_frames is not None
    assert [(f.source, f.opcode, f.data) for f in rows[2].ws_frames] == [
        ("agent", 8, (4000).to_bytes(2, "big") + b"agent done"),
        ("upstream", 8, (4001).to_bytes(2, "big") + b"bye from fake"),
    ]

    # Derived like the SSE form: a tool call, then its result and the answer, one thread.
    session = resolve_session(store, "wsrun")
    first, second = _turns(store, session)
    assert (first["api"], first["stop_reason"]) == ("openai.responses", "completed")
    rows_t = store.turn_rows(session)
    assert [r["stream"] for r in rows_t] == [True, True]
    assert len({r["thread"] for r in rows_t}) == 1
    assert first["output"][0]["type"] == "tool_call"
    (call,) = first["tool_calls"]
    assert (call["id"], call["name"], call["answered"]) == (CALL_ID, "get_weather", True)
    assert call["arguments"] == {"city": "Oslo"}
    (tool_message,) = second["input"]
    assert tool_message["parts"][0]["id"] == CALL_ID
    assert second["output"][0]["text"] == "It is sunny."
    assert all(t["error"] is None for t in (first, second))
    store.close()


def test_close_codes_pings_and_binary_pass_through(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    """Ping and pong each way, a binary frame and its answer, and a close the upstream starts:
    forwarded as they are and recorded in order; such an exchange carries no turn."""
    got: list[tuple[str, Any, Any]] = []

    async def scenario(ws_fake: FakeWebSocketProvider, url: str) -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                f"{url}/v1/responses?access_token=tok-ws-9&x=1", autoping=False, autoclose=False
            ) as ws,
        ):
            await ws.ping(b"agent-ping")
            got.append(("pong", *(await _one(ws))))
            await ws.send_str("ping fake-ping")
            got.append(("ping", *(await _one(ws))))
            await ws.pong(b"fake-ping")
            await ws.send_bytes(b"\x00\x01binary\xff")
            got.append(("binary", *(await _one(ws))))
            await ws.send_str("close 4002 server says bye")
            got.append(("close", *(await _one(ws))))
            await ws.close(code=4003, message=b"agent answers")
            await asyncio.wait_for(ws_fake.ended.wait(), 30)  # the fake has the answer

    store, ws_fake = _run(fake, tmp_path, db, scenario)
    assert got == [
        ("pong", WSMsgType.PONG, b"agent-ping"),
        ("ping", WSMsgType.PING, b"fake-ping"),
        ("binary", WSMsgType.BINARY, b"\xffyranib\x01\x00"),
        ("close", WSMsgType.CLOSE, 4002),
    ]
    assert ("PONG", b"fake-ping") in ws_fake.received
    assert ws_fake.received[-1] == ("CLOSE", (4003).to_bytes(2, "big") + b"agent answers")
    # A credential in the query reaches the upstream as sent, and no record.
    assert ws_fake.targets == ["/v1/responses?access_token=tok-ws-9&x=1"]
    rows = _ws_rows(store)
    assert {(r.path, r.upstream_url.split("/", 3)[-1]) for r in rows} == {
        ("/v1/responses?access_token=&x=1", "v1/responses?access_token=&x=1")
    }
    frames = [(f.source, f.opcode) for r in rows for f in r.ws_frames or []]
    assert frames == [
        ("agent", 9), ("upstream", 10),  # ping, pong
        ("agent", 1), ("upstream", 9), ("agent", 10),  # "ping fake-ping", ping, pong
        ("agent", 2), ("upstream", 2),  # binary and its answer
        ("agent", 1), ("upstream", 8), ("agent", 8),  # "close ...", the two closes
    ]  # fmt: skip
    assert rows[-1].outcome == "complete"
    closes = [f.data for f in rows[-1].ws_frames or [] if f.opcode == 8]
    assert closes == [(4002).to_bytes(2, "big") + b"server says bye",
                      (4003).to_bytes(2, "big") + b"agent answers"]  # fmt: skip
    store.close()


async def _one(ws: aiohttp.ClientWebSocketResponse) -> tuple[WSMsgType, Any]:
    msg = await ws.receive()
    return msg.type, msg.data


@pytest.mark.parametrize("who", ["agent", "upstream"])
def test_a_drop_on_either_side_is_passed_on_and_recorded(
    fake: FakeProvider, tmp_path: Path, db: DbRef, who: str
) -> None:
    """A side that vanishes without a close frame: the other side's link is cut too (no close
    frame made up for it), and the exchange says who went."""
    seen: dict[str, Any] = {}

    async def scenario(ws_fake: FakeWebSocketProvider, url: str) -> None:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{url}/v1/responses", autoclose=False)
            await ws.send_str(json.dumps(FIRST))
            await _reply(ws)
            if who == "agent":
                ws._response.connection.transport.abort()  # type: ignore[union-attr]
                await asyncio.wait_for(ws_fake.ended.wait(), 30)
            else:
                await ws.send_str("drop")
                msg = await ws.receive()
                seen["agent saw"] = msg.type
            seen["fake saw"] = ws_fake.how_ended

    store, _ = _run(fake, tmp_path, db, scenario)
    rows = _ws_rows(store)
    if who == "agent":
        assert seen["fake saw"] == "dropped"  # no close frame reached the upstream
        assert rows[-1].outcome == "client_disconnect"
    else:
        assert seen["agent saw"] in (WSMsgType.CLOSED, WSMsgType.ERROR)  # not a CLOSE frame
        assert rows[-1].outcome == "upstream_reset"
    assert "without a close" in (rows[-1].error or "")
    assert rows[0].outcome == "complete"  # the reply before the drop was whole
    assert not any(f.opcode == 8 for r in rows for f in r.ws_frames or [])
    store.close()


def test_the_upstream_refusing_the_upgrade_reaches_the_agent(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    """A refused upgrade is the upstream's HTTP answer to the agent (so Codex falls back to
    HTTP), recorded as such."""
    seen: dict[str, Any] = {}

    async def scenario(ws_fake: FakeWebSocketProvider, url: str) -> None:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{url}/v1/responses/elsewhere")
            seen["status"] = refused.value.status

    store, _ = _run(fake, tmp_path, db, scenario)
    assert seen["status"] == 404
    (row,) = [r for r in store.exchanges(limit=10) if r.path == "/v1/responses/elsewhere"]
    assert (row.method, row.status, row.outcome) == ("GET", 404, "upstream_error")
    store.close()


def _sse(events: list[bytes]) -> bytes:
    return b"".join(b"event: " + json.loads(e)["type"].encode() + b"\ndata: " + e + b"\n\n"
                    for e in events)  # fmt: skip


@pytest.mark.parametrize("request_body", [FIRST, _second("resp_ws_1")])
def test_websocket_messages_give_the_turn_the_sse_stream_gives(
    request_body: dict[str, Any],
) -> None:
    """The same events over a WebSocket (one message each) and as SSE: the same Turn."""
    events = reply_events(request_body, 1)
    post = {k: v for k, v in request_body.items() if k != "type"} | {"stream": True}
    over_sse = parse_exchange("openai.responses", json.dumps(post).encode(), None, _sse(events),
                              None, "text/event-stream", 200)  # fmt: skip
    over_ws = parse_exchange("openai.responses", json.dumps(request_body).encode(), None, b"",
                             None, None, 101, events)  # fmt: skip
    assert over_ws == over_sse
    assert over_ws.error is None and over_ws.outputs
    assert isinstance(over_ws, Turn)


def test_a_websocket_reply_is_redacted_message_by_message(tmp_path: Path) -> None:
    """Redaction that shortens a message leaves each frame's size cutting the stored body
    where its message now lies; control frames and untouched messages keep theirs."""
    messages = [b'{"type":"a","text":"password=hunter22"}', b'{"type":"b"}',
                b'{"type":"c","text":"password=x"}']  # fmt: skip
    frames = [Frame("agent", 1, 0.0, 10), Frame("upstream", 9, 0.5, 2, b"hi")]
    frames += [Frame("upstream", 1, 1.0 + i, len(m)) for i, m in enumerate(messages)]
    end = ExchangeEnd(id="x", status=101, response_headers=[], response_body=b"".join(messages),
                      response_truncated=False, response_size=sum(map(len, messages)),
                      upstream_headers_at=None, first_byte_at=None, last_byte_at=None,
                      outcome=Outcome.COMPLETE, error=None, frames=frames)  # fmt: skip
    ingester = Ingester(tmp_path, lambda: None, recorder="r", run="run",  # type: ignore[arg-type, return-value]
                        redactor=Redactor([r"password=(\w+)"], defaults=False))  # fmt: skip
    ingester._redact_response(end)
    assert end.redactions == 2 and end.frames is not None
    got = [json.loads(m) for m in ws_messages(end.frames, end.response_body, "upstream")]
    assert [m["type"] for m in got] == ["a", "b", "c"]
    assert got[0]["text"] == got[2]["text"] == "password=[REDACTED:custom-1]"
    assert end.frames[:2] == frames[:2] and end.frames[3] == frames[3]


def test_a_session_recorded_over_websocket_replays_over_websocket(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    """`tapewire replay` of a Codex-style session: the same messages, sent to the replay server
    over a WebSocket, are answered with the recorded upstream messages, byte for byte; one the
    recording does not hold gets an error event naming the turn it left the recording at."""
    from tapewire.replay.check import check
    from tapewire.replay.server import ReplayServer, load

    recorded: list[bytes] = []

    async def scenario(ws_fake: FakeWebSocketProvider, url: str) -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{url}/s/wsreplay/v1/responses", headers=CODEX_HEADERS) as ws,
        ):
            await ws.send_str(json.dumps(FIRST))
            first = await _reply(ws)
            await ws.send_str(json.dumps(_second(json.loads(first[-1])["response"]["id"])))
            recorded.extend(first + await _reply(ws))

    store, _ = _run(fake, tmp_path, db, scenario)
    recording = load(store, resolve_session(store, "wsreplay"))
    assert [r.messages is not None for r in recording.exchanges] == [True, True]

    async def replay(url: str) -> tuple[list[bytes], dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{url}/s/again/v1/responses") as ws,
        ):
            await ws.send_str(json.dumps(FIRST))
            first = await _reply(ws)
            await ws.send_str(json.dumps(_second(json.loads(first[-1])["response"]["id"])))
            got = first + await _reply(ws)
            await ws.send_str(json.dumps({**FIRST, "instructions": "Be verbose."}))
            miss = await ws.receive_json(timeout=10)
            return got, miss

    with ReplayServer(recording) as server:
        got, miss = asyncio.run(replay(server.url))
    assert got == recorded
    assert miss["type"] == "error" and miss["error"]["code"] == "tapewire_replay_miss"
    assert "nearest is turn 1" in miss["error"]["message"]
    assert "Be verbose." in miss["error"]["message"]
    assert len(server.misses) == 1 and recording.unserved() == []
    # `tapewire replay --check`: each recorded message asked again, its answer byte for byte.
    checked = check(recording)
    assert [(c.turn, c.ok) for c in checked] == [(1, True), (2, True)], checked
