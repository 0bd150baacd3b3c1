"""An agent that hangs up once it has a stream's last event: SDKs stop reading at `[DONE]` or
`message_stop`, sometimes before the upstream's end of body arrives. The exchange is complete;
a hang-up before the last event is still recorded as one."""

from __future__ import annotations

import aiohttp

from conftest import stored
from tapewire.service import Service

HEADERS = {"x-fake-scenario": "paced", "x-fake-events": "3", "x-fake-delay-ms": "10",
           "x-fake-hold-ms": "1500"}  # fmt: skip


async def _read_until(url: str, headers: dict[str, str], marker: bytes) -> bytes:
    """Read the stream until `marker` has arrived, then hang up (as an SDK does)."""
    seen = b""
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=b"{}", headers=headers) as resp:
            async for chunk in resp.content.iter_any():
                seen += chunk
                if marker in seen:
                    resp.close()  # the connection goes, the upstream's end of body not yet here
                    break
    return seen


async def test_hanging_up_after_the_last_event_is_complete(recorder: Service) -> None:
    seen = await _read_until(
        recorder.url + "/v1/chat/completions", {**HEADERS, "x-fake-done": "1"}, b"[DONE]"
    )
    assert seen.endswith(b"data: [DONE]\n\n")
    (row,) = stored(recorder).exchanges(with_bodies=True)
    assert row.outcome == "complete" and row.error is None
    assert row.response_body == seen


async def test_hanging_up_before_the_last_event_is_a_disconnect(recorder: Service) -> None:
    await _read_until(recorder.url + "/v1/chat/completions", HEADERS, b'{"i": 1}')
    (row,) = stored(recorder).exchanges(with_bodies=True)
    assert row.outcome == "client_disconnect"
