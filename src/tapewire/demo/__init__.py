"""`tapewire demo`'s recording: a fake provider on 127.0.0.1 (`provider.py`), a real tapewire
proxy in front of it, and the demo's agents (`client.py`) sending the bundled Claude Code
recording (`recording.py`) and a scripted OpenAI conversation (`script.py`) through it, into
a new store. No agent, no API key, no network beyond loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tapewire import query
from tapewire.capture.routing import PROVIDER_NAMES
from tapewire.demo.client import DemoError, play_conversation, replay_recording
from tapewire.demo.provider import FakeProvider
from tapewire.demo.recording import RecordedTurn, load_recording
from tapewire.demo.script import REPLIES, SESSION
from tapewire.service import Service, ServiceThread, Settings
from tapewire.store import open_store

__all__ = ["DemoError", "record_demo"]

INGEST_TIMEOUT = 30.0


async def _send_all(proxy_url: str, turns: list[RecordedTurn]) -> None:
    # Side by side, as two agents on one proxy would be.
    await asyncio.gather(replay_recording(proxy_url, turns), play_conversation(proxy_url))


def _wait_ingested(service: Service, timeout: float) -> None:
    """Until no exchange is open and the journal is in the store. The ingester derives a
    batch before it checkpoints, so an empty backlog means derived too."""
    deadline = time.monotonic() + timeout
    while service.recorder.open or service.ingester.status()["backlog_bytes"]:
        if time.monotonic() > deadline:
            raise DemoError(f"ingest did not catch up in {timeout:.0f} s")
        time.sleep(0.02)


def _check(sessions: list[dict[str, Any]], turns: list[RecordedTurn]) -> None:
    """Every exchange sent is a turn of a session: derive has caught up."""
    derived = sum(int(s["turns"]) for s in sessions)
    named = [s for s in sessions if s["name"] == SESSION]
    if derived != len(turns) + len(REPLIES) or not named:
        raise DemoError(f"the store holds {derived} turns, expected {len(turns) + len(REPLIES)}")


def record_demo(db: Path, *, timeout: float = INGEST_TIMEOUT) -> list[dict[str, Any]]:
    """Record the demo into a new store at `db`; returns its sessions, as `query.sessions`."""
    turns = load_recording()
    with FakeProvider(turns) as provider:
        settings = Settings(
            db=db,
            port=0,
            upstreams=[f"{name}={provider.url}" for name in PROVIDER_NAMES],
            grace=2.0,
        )
        with ServiceThread(settings) as service:
            asyncio.run(_send_all(service.url, turns))
            _wait_ingested(service, timeout)
    store = open_store(db, readonly=True)
    try:
        sessions = query.sessions(store)
    finally:
        store.close()
    _check(sessions, turns)
    return sessions
