"""`tapewire replay --check`: a self-test of the record. Every recorded request is sent to a
fresh replay server of the session, and what comes back must be the recorded response, status
and body byte for byte."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from tapewire.replay.match import Recorded, Recording
from tapewire.replay.server import ReplayServer


@dataclass(frozen=True)
class Checked:
    turn: int
    exchange: str
    ok: bool
    detail: str


async def _ask(url: str, recorded: Recorded, http: aiohttp.ClientSession) -> Checked:
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


async def _check_all(url: str, recording: Recording) -> list[Checked]:
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        return [await _ask(url, r, http) for r in recording.exchanges]


def check(recording: Recording) -> list[Checked]:
    """Each recorded exchange, asked of a replay server of the same recording in order."""
    fresh = Recording(
        Recorded(r.exchange, r.turn, r.path, r.request, r.status, r.headers, r.body, r.chunks,
                 r.ttfb_ms)
        for r in recording.exchanges
    )  # fmt: skip
    with ReplayServer(fresh) as server:
        return asyncio.run(_check_all(server.url, recording))
