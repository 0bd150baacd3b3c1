"""The fake provider speaks the real wire formats: the real SDKs parse what it sends."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from fakeprovider import (
    FakeProvider,
    RecordedTurn,
    fake_bytes,
    load_recording,
    unreachable_port,
)

RECORDING = Path(__file__).parent / "fixtures" / "recordings" / "claude-20260727-019fa57e"

ANTHROPIC_TOOL: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
OPENAI_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
JSON = "application/json"
USER: Any = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def turns() -> list[RecordedTurn]:
    return load_recording(RECORDING)


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(RECORDING) as provider:
        yield provider


# --------------------------------------------------------------------------- recording


def test_recording_loads_in_order(turns: list[RecordedTurn]) -> None:
    assert len(turns) == 17
    assert [t.name for t in turns] == sorted(p.name for p in RECORDING.iterdir())
    for turn in turns:
        assert turn.status == 200
        assert turn.content_encoding == "gzip"
        assert json.loads(turn.request_body)["model"] == "claude-sonnet-4-6"
        assert ("anthropic-version", "2023-06-01") in turn.request_headers
        assert ("content-encoding", "gzip") in turn.response_headers


def test_recording_chunks_are_event_sized(turns: list[RecordedTurn]) -> None:
    for turn in turns:
        assert turn.response_body == (RECORDING / turn.name / "response.sse").read_bytes()
        assert b"".join(turn.chunks) == turn.response_body
        assert len(turn.chunks) > 1
        assert all(turn.chunks)
        # Every write completes at least one more SSE event than the writes before it.
        dec = zlib.decompressobj(wbits=31)
        decoded = b""
        events = 0
        for chunk in turn.chunks:
            decoded += dec.decompress(chunk)
            assert decoded.count(b"\n\n") > events
            events = decoded.count(b"\n\n")
        assert dec.eof
        assert decoded.endswith(b"\n\n")
        assert decoded.split(b"\n\n")[-2].startswith(b"event: message_stop\n")


async def test_recorded_turn_replayed_verbatim(
    fake: FakeProvider, turns: list[RecordedTurn]
) -> None:
    turn = turns[3]
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.post(
            fake.url + "/v1/messages?beta=true",
            data=turn.request_body,
            headers={"content-type": "application/json"},
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["content-encoding"] == "gzip"
        assert resp.headers["request-id"] == dict(turn.response_headers)["request-id"]
        assert resp.headers["transfer-encoding"] == "chunked"
        assert resp.headers["date"] != dict(turn.response_headers)["date"]
        assert "content-length" not in resp.headers
        assert await resp.read() == turn.response_body
    assert fake.received[-1].raw_path == "/v1/messages?beta=true"
    assert fake.received[-1].body == turn.request_body


def test_recorded_turn_parses_with_sdk(fake: FakeProvider, turns: list[RecordedTurn]) -> None:
    # The recording is selected by the exact request bytes, so post them as they are; the
    # SDK's HTTP stack then undoes the gzip and its SSE decoder parses the recorded events.
    for turn in turns:
        with anthropic.Anthropic(base_url=fake.url, api_key="x", max_retries=0) as client:
            stream = client.post(
                "/v1/messages",
                cast_to=anthropic.types.Message,
                content=turn.request_body,
                options={"params": {"beta": "true"}, "headers": {"content-type": JSON}},
                stream=True,
                stream_cls=anthropic.Stream[anthropic.types.RawMessageStreamEvent],
            )
            with stream:
                kinds = [event.type for event in stream]
        assert kinds[0] == "message_start"
        assert kinds[-2:] == ["message_delta", "message_stop"]
        assert fake.received[-1].raw_path == "/v1/messages?beta=true"
        assert fake.received[-1].body == turn.request_body
    assert len(fake.received) == len(turns)


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_sync(fake: FakeProvider) -> None:
    with anthropic.Anthropic(base_url=fake.url, api_key="x", max_retries=0) as client:
        message = client.messages.create(model="claude-x", max_tokens=10, messages=USER)
        assert message.model == "claude-x"
        assert message.content[0].type == "text"
        assert message.content[0].text == "Hello from the fake provider."
        assert message.stop_reason == "end_turn"
        assert message.usage.input_tokens == 12
        assert message.usage.output_tokens == 7

        stream = client.messages.create(model="claude-x", max_tokens=10, messages=USER, stream=True)
        with stream:
            events = list(stream)
        assert [e.type for e in events] == [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]

        with client.messages.stream(model="claude-x", max_tokens=10, messages=USER) as helper:
            text = "".join(helper.text_stream)
            final = helper.get_final_message()
        assert text == "Hello from the fake provider."
        assert final.content[0].type == "text"
        assert final.content[0].text == text
        assert final.stop_reason == "end_turn"
        assert final.usage.output_tokens == 7

    sent = json.loads(fake.received[-1].body)
    assert sent["stream"] is True
    assert fake.received[-1].raw_path == "/v1/messages"


def test_anthropic_tools(fake: FakeProvider) -> None:
    with anthropic.Anthropic(base_url=fake.url, api_key="x", max_retries=0) as client:
        message = client.messages.create(
            model="claude-x", max_tokens=10, messages=USER, tools=[ANTHROPIC_TOOL]
        )
        block = message.content[0]
        assert block.type == "tool_use"
        assert (block.id, block.name, block.input) == (
            "toolu_fake1",
            "get_weather",
            {"city": "Paris"},
        )
        assert message.stop_reason == "tool_use"

        with client.messages.stream(
            model="claude-x", max_tokens=10, messages=USER, tools=[ANTHROPIC_TOOL]
        ) as helper:
            partials = [
                e.delta.partial_json
                for e in helper
                if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
            ]
            final = helper.get_final_message()
        assert "".join(partials) == '{"city":"Paris"}'
        assert len(partials) > 2
        block = final.content[0]
        assert block.type == "tool_use"
        assert block.input == {"city": "Paris"}
        assert final.stop_reason == "tool_use"


async def test_anthropic_async(fake: FakeProvider) -> None:
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key="x", max_retries=0) as client:
        message = await client.messages.create(model="claude-x", max_tokens=10, messages=USER)
        assert message.content[0].type == "text"
        async with client.messages.stream(model="claude-x", max_tokens=10, messages=USER) as helper:
            final = await helper.get_final_message()
        assert final.content[0].type == "text"
        assert final.content[0].text == "Hello from the fake provider."


def test_anthropic_error_scenario(fake: FakeProvider) -> None:
    client = anthropic.Anthropic(base_url=fake.url, api_key="x", max_retries=0)
    with client, pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(
            model="claude-x",
            max_tokens=10,
            messages=USER,
            extra_headers={"x-fake-scenario": "status", "x-fake-status": "529"},
        )
    assert info.value.status_code == 529
    assert info.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


# --------------------------------------------------------------------------- OpenAI


def test_openai_sync(fake: FakeProvider) -> None:
    with openai.OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0) as client:
        completion = client.chat.completions.create(model="gpt-x", messages=USER)
        assert completion.model == "gpt-x"
        assert completion.choices[0].message.content == "Hello from the fake provider."
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None
        assert completion.usage.total_tokens == 19

        chunks = list(client.chat.completions.create(model="gpt-x", messages=USER, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == (
            "Hello from the fake provider."
        )
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert all(c.usage is None for c in chunks)

        chunks = list(
            client.chat.completions.create(
                model="gpt-x",
                messages=USER,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 7


def test_openai_tools(fake: FakeProvider) -> None:
    with openai.OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0) as client:
        completion = client.chat.completions.create(
            model="gpt-x", messages=USER, tools=[OPENAI_TOOL]
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        call = choice.message.tool_calls[0]
        assert call.id == "call_fake1"
        assert call.type == "function"
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}

        with client.chat.completions.stream(
            model="gpt-x", messages=USER, tools=[OPENAI_TOOL]
        ) as helper:
            for _ in helper:
                pass
            final = helper.get_final_completion()
        calls = final.choices[0].message.tool_calls
        assert calls is not None
        assert calls[0].id == "call_fake1"
        assert calls[0].function.name == "get_weather"
        assert calls[0].function.arguments == '{"city":"Paris"}'
        assert final.choices[0].finish_reason == "tool_calls"


async def test_openai_async(fake: FakeProvider) -> None:
    async with openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0) as client:
        completion = await client.chat.completions.create(model="gpt-x", messages=USER)
        assert completion.choices[0].message.content == "Hello from the fake provider."
        stream = await client.chat.completions.create(
            model="gpt-x", messages=USER, stream=True, tools=[OPENAI_TOOL]
        )
        pieces = [
            tc.function.arguments or ""
            async for chunk in stream
            for tc in (chunk.choices[0].delta.tool_calls or [] if chunk.choices else [])
            if tc.function is not None
        ]
        assert "".join(pieces) == '{"city":"Paris"}'


def test_openai_error_scenario(fake: FakeProvider) -> None:
    client = openai.OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0)
    with client, pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(
            model="gpt-x", messages=USER, extra_headers={"x-fake-scenario": "status"}
        )
    assert info.value.status_code == 500
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "server_error"


# --------------------------------------------------------------------------- Ollama


async def test_ollama(fake: FakeProvider) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"model": "llama-x", "messages": USER}
        async with session.post(fake.url + "/api/chat", json=body) as resp:
            assert resp.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(line) async for line in resp.content]
        assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
        assert "".join(line["message"]["content"] for line in lines) == (
            "Hello from the fake provider."
        )
        assert lines[-1]["done_reason"] == "stop"
        assert lines[-1]["eval_count"] == 7

        async with session.post(fake.url + "/api/chat", json={**body, "stream": False}) as resp:
            whole = await resp.json()
        assert whole["done"] is True
        assert whole["message"]["content"] == "Hello from the fake provider."


# --------------------------------------------------------------------------- scenarios


async def test_scenarios(fake: FakeProvider) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(
            fake.url + "/anything?q=1", data=b"\x00\xffpayload", headers={"x-fake-scenario": "echo"}
        ) as resp:
            assert resp.headers["content-type"] == "application/octet-stream"
            assert await resp.read() == b"\x00\xffpayload"
        assert fake.received[-1].raw_path == "/anything?q=1"

        headers = {"x-fake-scenario": "paced", "x-fake-events": "5", "x-fake-delay-ms": "10"}
        async with session.get(fake.url + "/p", headers=headers) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert await resp.read() == b"".join(
                f'data: {{"i": {k}}}\n\n'.encode() for k in range(5)
            )

        async with session.get(fake.url + "/r", headers={"x-fake-scenario": "reset"}) as resp:
            assert resp.status == 200
            seen = b""
            with pytest.raises(aiohttp.ClientPayloadError):
                async for data in resp.content.iter_any():
                    seen += data
            assert seen.count(b"\n\n") == 3

        async with session.post(
            fake.url + "/v1/chat/completions",
            json={"model": "m", "messages": USER},
            headers={"x-fake-scenario": "gzip"},
        ) as resp:
            assert resp.headers["content-encoding"] == "gzip"
            data = await resp.json()
            assert data["object"] == "chat.completion"

        async with session.get(
            fake.url + "/h", headers={"x-fake-scenario": "repeat-headers"}
        ) as resp:
            assert resp.headers.getall("x-repeat") == ["a", "b"]
            assert len(resp.headers.getall("set-cookie")) == 2
            assert await resp.json() == {}

        headers = {"x-fake-scenario": "hang", "x-fake-delay-ms": "50"}
        async with session.post(
            fake.url + "/api/chat", json={"model": "m", "stream": False}, headers=headers
        ) as resp:
            assert (await resp.json())["done"] is True

        async with session.get(fake.url + "/nope") as resp:
            assert resp.status == 404
            assert await resp.json() == {"error": "not found"}


async def test_big_scenario(fake: FakeProvider) -> None:
    size = 3 * 1024 * 1024 + 7
    digest = hashlib.sha256()
    async with aiohttp.ClientSession() as session:
        headers = {"x-fake-scenario": "big", "x-fake-bytes": str(size)}
        async with session.get(fake.url + "/big", headers=headers) as resp:
            async for data in resp.content.iter_chunked(1 << 16):
                digest.update(data)
    expected = hashlib.sha256(b"".join(fake_bytes(size))).hexdigest()
    assert digest.hexdigest() == expected


def test_gzip_scenario_streams_in_several_writes(fake: FakeProvider) -> None:
    # Read raw bytes off the socket: several chunked-encoding frames, a gzip member inside.
    body = json.dumps({"model": "m", "messages": USER, "stream": True}).encode()
    request = (
        f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-fake-scenario: gzip\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", fake.port)) as sock:
        sock.sendall(request)
        raw = b""
        while data := sock.recv(65536):
            raw += data
    head, _, chunked = raw.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head
    frames = []
    while True:
        size_line, _, rest = chunked.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        frames.append(rest[:size])
        chunked = rest[size + 2 :]
    assert len(frames) > 3
    text = zlib.decompress(b"".join(frames), wbits=31).decode()
    assert text.startswith("event: message_start\n")
    assert text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_hang_is_cancelled_by_stop() -> None:
    fake = FakeProvider().start()
    outcome: list[object] = []

    def call() -> None:
        with anthropic.Anthropic(
            base_url=fake.url, api_key="x", max_retries=0, timeout=30
        ) as client:
            try:
                client.messages.create(
                    model="m",
                    max_tokens=1,
                    messages=USER,
                    extra_headers={"x-fake-scenario": "hang"},
                )
            except Exception as exc:
                outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 5
    while not fake.received and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 3
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert outcome  # the hung request failed rather than being answered normally


def test_unreachable_port() -> None:
    port = unreachable_port()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
