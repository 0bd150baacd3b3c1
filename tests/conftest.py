"""Shared fixtures: a fake provider on 127.0.0.1 and a real tapewire recorder in front of it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakeprovider import FakeProvider
from tapewire.service import Service, ServiceThread, Settings
from tapewire.store import Store, open_store

RECORDING = Path(__file__).parent / "fixtures" / "recordings" / "claude-20260727-019fa57e"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(RECORDING) as provider:
        yield provider


def settings_for(fake: FakeProvider, tmp_path: Path, **overrides: object) -> Settings:
    base = Settings(
        db=tmp_path / "tapewire.db",
        port=0,
        upstreams=[f"anthropic={fake.url}", f"openai={fake.url}", f"ollama={fake.url}"],
        grace=2.0,
    )
    for key, value in overrides.items():
        setattr(base, key, value)
    return base


@pytest.fixture
def recorder(fake: FakeProvider, tmp_path: Path) -> Iterator[Service]:
    """tapewire running on its own thread, forwarding every provider to the fake."""
    with ServiceThread(settings_for(fake, tmp_path)) as service:
        yield service


def stored(service: Service) -> Store:
    """The recorder's store, once everything journaled so far has been ingested."""
    wait_ingested(service)
    return open_store(service.settings.db)


def wait_ingested(service: Service, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.recorder.open and service.ingester.status()["backlog_bytes"] == 0:
            return
        time.sleep(0.02)
    raise AssertionError(f"ingest did not catch up: {service.ingester.status()}")


async def _replay_recording(url: str) -> None:
    import aiohttp

    from fakeprovider import load_recording

    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for turn in load_recording(RECORDING):
            async with http.post(
                url + "/v1/messages?beta=true", headers=turn.request_headers, data=turn.request_body
            ) as resp:
                await resp.read()


@pytest.fixture(scope="session")
def recorded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding the 17 recorded Claude Code turns, replayed through a real proxy
    from the fake provider, stored and derived. Shared: tests only read it (copy it first
    to change it)."""
    import asyncio

    tmp = tmp_path_factory.mktemp("recorded")
    with FakeProvider(RECORDING) as fake:
        settings = settings_for(fake, tmp)
        with ServiceThread(settings) as service:
            asyncio.run(_replay_recording(service.url))
            stored(service).close()
    return settings.db


@pytest.fixture(scope="session")
def scenarios_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A database holding the labelled synthetic sessions of tests/scenarios.py (loops,
    cycles, retries, errors, a cost spike, a stall, drifting runs), played with the real SDKs
    through a real proxy against the scripted fake provider, stored and derived. Returns the
    database's path and {label: session id}. Shared: tests only read it (copy it first to
    change it)."""
    from scenarios import SCENARIOS, record_scenarios
    from tapewire.query import sessions

    tmp = tmp_path_factory.mktemp("scenarios")
    with FakeProvider() as fake:
        settings = settings_for(fake, tmp)
        with ServiceThread(settings) as service:
            record_scenarios(service.url, fake)
            store = stored(service)
    try:
        by_name = {row["name"]: row["id"] for row in sessions(store)}
    finally:
        store.close()
    return settings.db, {label: by_name[label] for label in SCENARIOS}
