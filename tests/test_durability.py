"""No exchange the agent finished is lost: not to kill -9, not to a restart; a graceful stop
lets streams finish; exchanges cut off are stored as interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import aiohttp

from fakeprovider import FakeProvider
from servecli import ServeProcess, cli
from tapewire.store import open_store
from tapewire.store.location import DbRef


async def _client(url: str, n: int, done: list[str], stop: asyncio.Event) -> None:
    """Sends requests one after another, each marked; notes the ones it got whole."""
    async with aiohttp.ClientSession() as http:
        i = 0
        while not stop.is_set():
            marker = f"req-{n}-{i}"
            body = json.dumps({"model": "m", "messages": [{"role": "user", "content": marker}]})
            headers = {}
            if i % 2:  # every other one a short stream
                headers = {
                    "x-fake-scenario": "paced",
                    "x-fake-events": "5",
                    "x-fake-delay-ms": "20",
                }
            try:
                async with http.post(url + "/v1/chat/completions", data=body, headers=headers) as r:
                    await r.read()  # raises if the body was cut short
                    if r.status == 200:
                        done.append(marker)
            except (aiohttp.ClientError, OSError):
                return
            i += 1


def _stored_markers(db: DbRef) -> dict[str, str]:
    store = open_store(db)
    try:
        rows = store.exchanges(limit=100_000, with_bodies=True)
    finally:
        store.close()
    out = {}
    for row in rows:
        body = json.loads(row.request_body or b"{}")
        out[body["messages"][0]["content"]] = row.outcome
    return out


async def test_kill9_under_load_loses_no_finished_exchange(fake: FakeProvider, db: DbRef) -> None:
    serve = ServeProcess(db, fake.url).start()
    done: list[str] = []
    stop = asyncio.Event()
    clients = [asyncio.create_task(_client(serve.url, n, done, stop)) for n in range(8)]
    await asyncio.sleep(1.5)
    serve.kill9()
    stop.set()
    await asyncio.gather(*clients)
    assert len(done) > 50

    with ServeProcess(db, fake.url) as again:  # a restart ingests what the journal holds
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            report = json.loads(cli("status", "--db", str(db), "--json").stdout)
            if (
                report["journal_backlog_bytes"] == 0
                and report["store"]["outcomes"].get("in_flight", 0) == 0
            ):
                break
            await asyncio.sleep(0.1)
        assert again.terminate() == 0

    markers = _stored_markers(db)
    missing = [m for m in done if m not in markers]
    assert missing == []
    assert all(markers[m] == "complete" for m in done)
    # What was in flight at the kill is there too, said to be interrupted, not left open.
    assert set(markers.values()) <= {"complete", "interrupted"}
    assert json.loads(cli("status", "--db", str(db), "--json").stdout)["journal_backlog_bytes"] == 0


async def test_sigterm_lets_streams_finish(fake: FakeProvider, db: DbRef) -> None:
    serve = ServeProcess(db, fake.url).start()
    headers = {"x-fake-scenario": "paced", "x-fake-events": "10", "x-fake-delay-ms": "100"}
    async with aiohttp.ClientSession() as http:
        async with http.post(serve.url + "/v1/chat/completions", data=b"{}", headers=headers) as r:
            first = await r.content.readline()
            code = await asyncio.to_thread(serve.terminate)  # returns once serve has exited
            rest = await r.read()
    assert code == 0
    assert first.startswith(b"data:")
    assert (first + rest).count(b"\n\n") == 10
    store = open_store(db)
    (row,) = store.exchanges()
    assert row.outcome == "complete"
    store.close()
    log = serve.log.read_text()
    assert "stopped; 1 exchanges recorded" in log
    assert "Fatal Python error" not in log  # the ingest worker exits cleanly too


async def test_stop_with_a_stream_past_the_grace_records_it_interrupted(
    fake: FakeProvider, db: DbRef
) -> None:
    serve = ServeProcess(db, fake.url, "--grace", "0.3").start()
    headers = {"x-fake-scenario": "paced", "x-fake-events": "100", "x-fake-delay-ms": "100"}
    async with aiohttp.ClientSession() as http:
        async with http.post(serve.url + "/v1/chat/completions", data=b"{}", headers=headers) as r:
            await r.content.readline()
            code = await asyncio.to_thread(serve.terminate)
            with contextlib.suppress(aiohttp.ClientError):
                await r.read()
    assert code == 0
    store = open_store(db)
    (row,) = store.exchanges(with_bodies=True)
    store.close()
    assert row.outcome == "interrupted"
    assert row.response_body and row.response_body.startswith(b"data:")


async def test_a_killed_ingest_worker_is_restarted(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    from conftest import settings_for, stored
    from tapewire.service import ServiceThread

    with ServiceThread(settings_for(fake, tmp_path, db=db)) as service:
        first = service.ingester.proc
        assert first is not None
        first.kill()
        first.wait()
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.post(service.url + "/v1/chat/completions", data=b"{}") as r:
                    assert r.status == 200
        rows = stored(service).exchanges()  # waits for the restarted worker to catch up
        assert service.ingester.proc is not first
    assert len(rows) == 3


def test_an_idle_serve_stops_cleanly_with_its_read_api(fake: FakeProvider, db: DbRef) -> None:
    """SIGTERM to a serve that recorded nothing: the proxy, the read API and the ingest worker
    all stop, and none of them aborts on its way out."""
    serve = ServeProcess(db, fake.url).start()
    time.sleep(0.5)  # the worker is up and waiting on its stdin
    assert serve.terminate() == 0
    log = serve.log.read_text()
    assert "stopped; 0 exchanges recorded" in log
    assert "Fatal Python error" not in log
