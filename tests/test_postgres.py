"""PostgreSQL as the team backend, end to end with real `tapewire serve` processes: two proxies
recording into one database at once, and a database that is down when the proxy starts, or
restarts while traffic flows. Nothing here runs on SQLite: these are PostgreSQL's features.

The down-and-back tests run a PostgreSQL server of their own (`pgserver.PrivatePostgres`), so
stopping it cannot disturb the shared test server or other tests."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from conftest import RECORDING, Databases, settings_for, wait_ingested
from fakeprovider import FakeProvider, RecordedTurn, load_recording
from pgserver import PrivatePostgres, bin_dir
from servecli import ServeProcess, cli
from tapewire.journal.ingest import read_status
from tapewire.service import ServiceThread
from tapewire.store import Store, open_store
from tapewire.store.location import DbRef
from tapewire.store.postgres import close_pools

TURNS = load_recording(RECORDING)


# ---- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def pg_dbs(tmp_path: Path) -> Iterator[Databases]:
    """Fresh schemas of the shared test database (PostgreSQL only, whatever `backend` says)."""
    made = Databases("postgres", tmp_path)
    yield made
    made.drop()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this test's own: stopped and removed afterwards, pass or fail."""
    if bin_dir() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl)")
    with PrivatePostgres() as pg:
        try:
            yield pg
        finally:
            close_pools()  # this process's connections to it, before it goes


def serve_on(url: str, directory: Path, upstream: str) -> ServeProcess:
    """A `tapewire serve` recording into `url`, its journal `directory`.journal. ServeProcess
    names a SQLite file; the later --db and --journal win (click keeps an option's last)."""
    journal = Path(f"{directory}.journal")
    return ServeProcess(directory, upstream, "--db", url, "--journal", str(journal))


async def send_turn(http: aiohttp.ClientSession, base: str, name: str, turn: RecordedTurn) -> None:
    """One recorded Claude Code request under the session `name`; the agent must get exactly
    the fake provider's bytes (gzip SSE, as recorded)."""
    async with http.post(
        f"{base}/s/{name}/v1/messages?beta=true",
        headers=turn.request_headers,
        data=turn.request_body,
    ) as resp:
        body = await resp.read()
        assert resp.status == turn.status, (name, turn.name, resp.status, body[:300])
        assert body == turn.response_body, (name, turn.name, len(body))


def http_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        auto_decompress=False, timeout=aiohttp.ClientTimeout(total=30)
    )


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def reading(url: DbRef) -> Store:
    return open_store(url, readonly=True)


def counts(url: DbRef) -> dict[str, Any]:
    store = reading(url)
    try:
        return store.counts()
    finally:
        store.close()


def turns_by_name(url: DbRef) -> dict[str, int]:
    store = reading(url)
    try:
        return {row["name"]: row["turns"] for row in store.session_rows()}
    finally:
        store.close()


def status(url: str, journal: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(
        cli("status", "--db", url, "--journal", str(journal), "--json").stdout
    )
    return report


def drained(url: DbRef, journals: list[Path], exchanges: int) -> bool:
    """Every journal empty, every exchange stored, ended and derived."""
    if any(read_status(j)["backlog_bytes"] for j in journals):
        return False
    try:
        c = counts(url)
    except Exception:  # the server is not back yet
        return False
    return c["exchanges"] == exchanges == c["turns"] and c["outcomes"] == {"complete": exchanges}


def duplicates(url: str) -> dict[str, tuple[int, int]]:
    """Per table with a natural key: (rows, distinct keys)."""
    keys = {
        "nodes": "id",
        "blobs": "id",
        "exchanges": "id",
        "turns": "exchange",
        "sessions": "id",
        "node_turns": "node, exchange",
        "search_rows": "node, ordinal",
        "tool_calls": "call_exchange, call_id",
    }
    with psycopg.connect(url) as conn:
        return {
            table: tuple(  # type: ignore[misc]
                conn.execute(
                    f"SELECT count(*), count(DISTINCT ({key})) FROM {table}".encode()
                ).fetchone()
                or (0, 0)
            )
            for table, key in keys.items()
        }


def derived_shape(store: Store) -> dict[str, Any]:
    """What must not depend on the backend, the number of proxies or the order of arrival."""
    c = store.counts()
    sessions = store.session_rows()
    return {
        "nodes": c["nodes"],
        "turns": c["turns"],
        "sessions": sorted((s["name"], s["turns"], s["tool_calls"]) for s in sessions),
    }


def verify_ok(url: str) -> None:
    done = cli("verify", "--db", url, "--json", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"]


# ---- two proxies, one database -----------------------------------------------------------------

NAMES = ["team-a", "team-b", "team-c", "team-d"]


async def _replay_split(urls: list[str], names: list[str]) -> int:
    """Each name's 17 turns in order (a turn waits for the previous answer, as an agent does),
    alternating between the proxies; all names at once."""

    async def one(k: int, name: str) -> int:
        async with http_session() as http:
            for i, turn in enumerate(TURNS):
                await send_turn(http, urls[(i + k) % len(urls)], name, turn)
        return len(TURNS)

    return sum(await asyncio.gather(*(one(k, name) for k, name in enumerate(names))))


@pytest.mark.timeout(90)
def test_two_proxies_record_into_one_database(
    fake: FakeProvider, tmp_path: Path, pg_dbs: Databases
) -> None:
    url = str(pg_dbs.new("two_proxies"))
    a = serve_on(url, tmp_path / "a", fake.url)
    b = serve_on(url, tmp_path / "b", fake.url)
    with a, b:  # both migrate the fresh schema at once (an advisory lock makes that safe)
        sent = asyncio.run(_replay_split([a.url, b.url], NAMES))
        assert sent == len(NAMES) * len(TURNS)
        # Both proxies really took part, each with its own journal and recorder.
        assert len(fake.received) == sent
        wait_for("both journals ingested", lambda: drained(url, [a.journal, b.journal], sent), 30)
        assert a.terminate() == 0
        assert b.terminate() == 0

    c = counts(url)
    assert c["exchanges"] == sent
    assert c["outcomes"] == {"complete": sent}
    assert c["drops"] == {}
    # One session per name, each with every one of its turns, wherever they were recorded.
    assert turns_by_name(url) == dict.fromkeys(NAMES, len(TURNS))
    with psycopg.connect(url) as conn:
        recorders = conn.execute("SELECT count(DISTINCT recorder) FROM exchanges").fetchone()
    assert recorders == (2,)
    store = reading(url)
    try:
        pg_shape = derived_shape(store)
    finally:
        store.close()
    # Content addressing across proxies: no row twice, however the two raced.
    for table, (rows, distinct) in duplicates(url).items():
        assert rows == distinct, f"{table}: {rows} rows, {distinct} distinct"

    # The same names through one proxy into SQLite: the same nodes, sessions, turns, tool calls.
    with ServiceThread(settings_for(fake, tmp_path / "ref", db=tmp_path / "ref.db")) as service:
        for name in NAMES:
            asyncio.run(_replay_split([service.url], [name]))
        wait_ingested(service, timeout=30)
    sqlite = open_store(tmp_path / "ref.db", readonly=True)
    try:
        assert pg_shape == derived_shape(sqlite)
    finally:
        sqlite.close()

    verify_ok(url)


# ---- PostgreSQL down, and back -----------------------------------------------------------------


@pytest.mark.timeout(90)
def test_database_down_at_start_then_back(
    fake: FakeProvider, tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    url = private_pg.create_database("tapewire")
    private_pg.stop()
    names = ["down-1", "down-2"]
    with serve_on(url, tmp_path / "s", fake.url) as serve:
        # The agent's traffic does not wait for the database: byte for byte, as upstream sent.
        sent = asyncio.run(_replay_split([serve.url], names))
        journal = serve.journal

        def failing() -> dict[str, Any] | None:
            ingest = read_status(journal)
            return ingest if ingest["last_error"] and ingest["backlog_bytes"] else None

        wait_for("the ingester to report the database down", failing, 20)
        report = status(url, journal)
        assert report["journal_backlog_bytes"] > 0
        assert report["ingest"]["last_error"]
        assert "store_error" in report  # status says the store is unreachable, and returns

        private_pg.start()
        wait_for("the backlog to drain once the database is back", lambda: drained(url, [journal], sent), 30)
        report = status(url, journal)
        assert report["journal_backlog_bytes"] == 0
        assert report["store"]["exchanges"] == sent
        assert serve.terminate() == 0

    assert turns_by_name(url) == dict.fromkeys(names, len(TURNS))
    verify_ok(url)


async def _steady_load(
    url: str, workers: int, per_worker: int, sent: list[int], pace: float
) -> list[str]:
    """`workers` clients, each sending the recorded turns in order, `per_worker` requests in
    all (a new session name every 17); returns the failures (none expected)."""
    failures: list[str] = []

    async def worker(w: int) -> None:
        async with http_session() as http:
            for i in range(per_worker):
                turn = TURNS[i % len(TURNS)]
                try:
                    await send_turn(http, url, f"load-{w}-{i // len(TURNS)}", turn)
                except (AssertionError, aiohttp.ClientError, OSError) as e:
                    failures.append(f"worker {w} request {i}: {e!r}")
                sent[0] += 1
                await asyncio.sleep(pace)

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return failures


@pytest.mark.timeout(90)
def test_database_restarts_under_load(
    fake: FakeProvider, tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    url = private_pg.create_database("tapewire")
    workers, per_worker = 2, 30
    total = workers * per_worker
    with serve_on(url, tmp_path / "s", fake.url) as serve:
        sent = [0]
        outage: dict[str, float] = {}

        def restart_midway() -> None:
            deadline = time.monotonic() + 30
            while sent[0] < total // 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            outage["stop"] = time.monotonic()
            private_pg.stop("fast")  # terminates every connection, the ingester's too
            time.sleep(1.5)
            private_pg.start()
            outage["start"] = time.monotonic()
            outage["sent_at_start"] = sent[0]

        restarter = threading.Thread(target=restart_midway)
        restarter.start()
        try:
            failures = asyncio.run(_steady_load(serve.url, workers, per_worker, sent, pace=0.15))
        finally:
            restarter.join(timeout=40)
        assert failures == []
        assert sent[0] == total
        assert outage["sent_at_start"] < total, "the restart came after the load: pace it slower"

        wait_for("every exchange in the store", lambda: drained(url, [serve.journal], total), 30)
        ingest = read_status(serve.journal)
        assert ingest["last_error"], "the restart went unnoticed: did the test stop the server?"
        assert ingest["last_ingest_at"] > ingest["last_error_at"]
        assert serve.terminate() == 0

    c = counts(url)
    assert c["exchanges"] == total == c["turns"]
    assert c["outcomes"] == {"complete": total}
    full, rest = divmod(per_worker, len(TURNS))
    expected = {
        f"load-{w}-{j}": len(TURNS) if j < full else rest
        for w in range(workers)
        for j in range(full + (1 if rest else 0))
    }
    assert turns_by_name(url) == expected
    verify_ok(url)
