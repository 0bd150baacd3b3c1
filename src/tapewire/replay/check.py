"""`tapewire replay --check`: a self-test of the record. Every recorded request is sent to a
fresh replay server of the session, and what comes back must be the recorded response, status
and body byte for byte."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import aiohttp
from aiohttp import WSMsgType

from tapewire.replay.match import Recorded, Recording
from tapewire.replay.server import ReplayServer


@dataclass(frozen=True)
class Checked:
    turn: int
    exchange: str
    ok: bool
    detail: str


async def _ask(url: str, recorded: Recorded, http: aiohttp.ClientSession) -> Checked:
    if recorded.messages is not None:
        return await _ask_websocket(url, recorded, http)
    headers = {"content-type": "application/json"}
    async with http.post(url + recorded.path, data=recorded.request, headers=headers) as resp:
        body = await resp.read()
    if resp.status != recorded.status:
        detail = f"status {resp.status}, recorded {recorded.status}"
    elif body != recorded.body:
        at = next((i for i, (a, b) in enumerate(zip(body, recorded.body, strict=False))
                   if a != b), min(len(body), len(recorded.body)))  # fmt: skip
        detail = f"body differs from byte {at} ({len(body)} bytes, recorded {len(recorded.body)})"
    else:
        return Checked(recorded.turn, recorded.exchange, True, f"{len(body)} bytes")
    return Checked(recorded.turn, recorded.exchange, False, detail)


async def _ask_websocket(url: str, recorded: Recorded, http: aiohttp.ClientSession) -> Checked:
    """The recorded agent message over a WebSocket of its own; the recorded upstream messages
    must come back, each byte for byte."""
    assert recorded.messages is not None
    want = [data for data, _, _ in recorded.messages]
    got: list[bytes] = []
    async with http.ws_connect(url + recorded.path, max_msg_size=0) as ws:
        try:
            await ws.send_str(recorded.request.decode())
        except UnicodeDecodeError:
            await ws.send_bytes(recorded.request)
        while len(got) < len(want):
            msg = await ws.receive(timeout=30)
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            got.append(msg.data.encode() if msg.type is WSMsgType.TEXT else msg.data)
    if got == want:
        return Checked(recorded.turn, recorded.exchange, True,
                       f"{len(got)} messages, {sum(map(len, got))} bytes")  # fmt: skip
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), len(got))
    detail = f"message {at + 1} differs ({len(got)} messages, recorded {len(want)})"
    return Checked(recorded.turn, recorded.exchange, False, detail)


async def _check_all(url: str, recording: Recording) -> list[Checked]:
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        return [await _ask(url, r, http) for r in recording.exchanges]


def check(recording: Recording) -> list[Checked]:
    """Each recorded exchange, asked of a replay server of the same recording in order."""
    fresh = Recording(replace(r, served=0) for r in recording.exchanges)
    with ReplayServer(fresh) as server:
        return asyncio.run(_check_all(server.url, recording))
