"""Streams pass through as they arrive: each chunk reaches the agent before the next is sent."""

from __future__ import annotations

import json
import time

import aiohttp
import anthropic

from conftest import stored
from fakeprovider import FakeProvider
from tapewire.service import Service


async def _arrivals(url: str, headers: dict[str, str], body: bytes) -> tuple[list[float], bytes]:
    """Seconds from sending to each chunk's arrival, and the whole body."""
    times, data = [], b""
    async with aiohttp.ClientSession() as http:
        start = time.perf_counter()
        async with http.post(url, headers=headers, data=body) as resp:
            async for chunk in resp.content.iter_any():
                times.append(time.perf_counter() - start)
                data += chunk
    return times, data


async def test_sse_is_not_buffered(fake: FakeProvider, recorder: Service) -> None:
    headers = {"x-fake-scenario": "paced", "x-fake-events": "10", "x-fake-delay-ms": "150"}
    times, body = await _arrivals(recorder.url + "/v1/chat/completions", headers, b"{}")
    # The stream takes about 1.35 s upstream; its first event must not wait for its end.
    assert times[-1] > 1.2
    assert times[0] < 0.5 * times[-1]
    assert len(times) >= 5  # arrived in many pieces, not one
    assert body.count(b"\n\n") == 10
    (row,) = stored(recorder).exchanges(with_bodies=True)
    assert row.response_body == body
    assert row.timings["first_byte"] is not None and row.timings["last_byte"] is not None
    assert row.timings["last_byte"] - row.timings["first_byte"] > 1.0


async def test_ndjson_stream_passes_line_by_line(fake: FakeProvider, recorder: Service) -> None:
    req = json.dumps({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}).encode()
    _, direct = await _arrivals(fake.url + "/api/chat", {}, req)
    _, body = await _arrivals(recorder.url + "/api/chat", {}, req)
    assert body == direct
    lines = [json.loads(line) for line in body.splitlines()]
    assert lines[-1]["done"] is True
    (row,) = stored(recorder).exchanges(with_bodies=True)
    assert row.provider == "ollama"
    assert row.response_body == body


def test_sdk_stream_events_arrive_incrementally(fake: FakeProvider, recorder: Service) -> None:
    """A real SDK user iterating a stream sees text deltas one by one through tapewire."""
    with anthropic.Anthropic(base_url=recorder.url, api_key="k") as client:
        with client.messages.stream(
            model="claude-test", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            pieces = list(stream.text_stream)
    assert len(pieces) > 1
    assert "".join(pieces) == "Hello from the fake provider."
