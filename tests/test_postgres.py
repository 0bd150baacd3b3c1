"""PostgreSQL as the team backend, end to end with real `tapewire serve` processes: two proxies
recording into one database at once, and a database that is down when the proxy starts, or
restarts while traffic flows. Nothing here runs on SQLite: these are PostgreSQL's features.

The down-and-back tests run a PostgreSQL server of their own (`pgserver.PrivatePostgres`), so
stopping it cannot disturb the shared test server or other tests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from conftest import RECORDING, Databases, settings_for, wait_ingested
from fakeprovider import FakeProvider, RecordedTurn, load_recording
from pgserver import PrivatePostgres, bin_dir
from servecli import ServeProcess, cli
from shapes import derived_shape, recorded_exchange
from tapewire.derive import Deriver
from tapewire.journal.ingest import read_status
from tapewire.model import Evidence, Exchange, new_id
from tapewire.service import ServiceThread
from tapewire.store import Batch, Store, open_store
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
    """A `tapewire serve` recording into `url`, its journal `directory`.journal, its log
    `directory`.log."""
    return ServeProcess(
        url, upstream, journal=Path(f"{directory}.journal"), log=Path(f"{directory}.log")
    )


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
    return aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=30))


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
    out = {}
    with psycopg.connect(url) as conn:
        for table, key in keys.items():
            sql = f"SELECT count(*), count(DISTINCT ({key})) FROM {table}"
            row = conn.execute(sql.encode()).fetchone()
            out[table] = (int(row[0]), int(row[1])) if row else (0, 0)
    return out


def shape_of(db: DbRef, arrival: bool = True) -> dict[str, Any]:
    store = reading(db)
    try:
        return derived_shape(store, arrival)
    finally:
        store.close()


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


@dataclass
class TwoProxies:
    url: str
    sent: int
    journals: list[Path]
    live: dict[str, Any]  # the derived layer as the two ingesters left it
    reference: Path  # the same names through one proxy into SQLite


@pytest.fixture(scope="module")
def two_proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoProxies]:
    """Two `tapewire serve` processes with journals of their own recording into one fresh
    schema, the four names' turns alternating between them, all names at once; then the same
    names through one proxy into SQLite. The tests read it; only the last may rederive it."""
    tmp = tmp_path_factory.mktemp("two_proxies")
    made = Databases("postgres", tmp)
    try:
        url = str(made.new("two_proxies"))
        with FakeProvider(RECORDING) as fake:
            a, b = serve_on(url, tmp / "a", fake.url), serve_on(url, tmp / "b", fake.url)
            with a, b:  # both migrate the fresh schema at once (an advisory lock serialises it)
                sent = asyncio.run(_replay_split([a.url, b.url], NAMES))
                assert sent == len(fake.received) == len(NAMES) * len(TURNS)
                journals = [a.journal, b.journal]
                wait_for("both journals ingested", lambda: drained(url, journals, sent), 30)
                assert a.terminate() == 0
                assert b.terminate() == 0
            reference = tmp / "ref.db"
            with ServiceThread(settings_for(fake, tmp / "ref", db=reference)) as service:
                for name in NAMES:
                    asyncio.run(_replay_split([service.url], [name]))
                wait_ingested(service, timeout=30)
        yield TwoProxies(url, sent, journals, shape_of(url), reference)
    finally:
        made.drop()


@pytest.mark.timeout(90)
def test_two_proxies_record_into_one_database(two_proxies: TwoProxies) -> None:
    url, sent = two_proxies.url, two_proxies.sent
    c = counts(url)
    assert c["exchanges"] == sent
    assert c["outcomes"] == {"complete": sent}
    assert c["drops"] == {}
    # One session per name, each with every one of its turns, wherever they were recorded.
    assert turns_by_name(url) == dict.fromkeys(NAMES, len(TURNS))
    with psycopg.connect(url) as conn:  # both proxies took part, each under its own name
        recorders = conn.execute("SELECT count(DISTINCT recorder) FROM exchanges").fetchone()
    assert recorders == (2,)
    # Content addressing across proxies: no row twice, however the two raced.
    for table, (rows, distinct) in duplicates(url).items():
        assert rows == distinct, f"{table}: {rows} rows, {distinct} distinct"
    # As one proxy into SQLite: the same nodes (names share them), the same sessions, threads,
    # turns and tool calls.
    assert shape_of(url, arrival=False) == shape_of(two_proxies.reference, arrival=False)
    verify_ok(url)


def test_two_proxies_derive_live_as_one_proxy(two_proxies: TwoProxies) -> None:
    assert two_proxies.live == shape_of(two_proxies.reference)


@pytest.mark.timeout(60)
def test_two_proxies_rederived_as_one_proxy(two_proxies: TwoProxies) -> None:
    """Derived again in the order the exchanges ended: exactly the single proxy's record."""
    url = two_proxies.url
    done = cli("rederive", "--db", url, "--journal", str(two_proxies.journals[0]))
    assert f"rederived {two_proxies.sent} exchanges into {len(NAMES)} sessions" in done.stdout
    assert shape_of(url) == shape_of(two_proxies.reference)
    verify_ok(url)


def _exchange(body: bytes) -> Exchange:
    return Exchange(
        id=new_id(), run_id="r", started_at=1.0, method="POST", path="/v1/messages",
        upstream="anthropic", upstream_url="http://x/v1/messages", provider="anthropic",
        request_headers=[("content-type", "application/json")], request_body=body,
        request_size=len(body), evidence=Evidence(session="s"), recorder="j",
    )  # fmt: skip


def _lock_waiters(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.timeout(30)
def test_two_ingesters_store_one_body_at_once(pg_dbs: Databases) -> None:
    url = str(pg_dbs.new("blob_race"))
    body = b'{"model": "m", "messages": []}' * 64
    store = open_store(url)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            store.write(Batch(begins=[_exchange(body)]))
        except Exception as e:
            errors.append(e)

    try:
        with psycopg.connect(url) as other:  # another proxy's ingester, its batch not committed
            other.execute(
                "INSERT INTO blobs (id, size, codec, dict_id, depth, chain, data)"
                " VALUES (%s, %s, 'raw', NULL, 0, NULL, %s)",
                (hashlib.sha256(body).hexdigest(), len(body), body),
            )
            writer = threading.Thread(target=write)
            writer.start()
            wait_for("the second ingester to wait for the first", lambda: _lock_waiters(url), 10)
            other.commit()
            writer.join(timeout=10)
        assert errors == []
        assert store.counts()["exchanges"] == 1
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_two_ingesters_deriving_into_the_same_sessions_lose_no_turn(pg_dbs: Databases) -> None:
    url = str(pg_dbs.new("deadlock"))
    turn = next(t for t in TURNS if len(json.loads(t.request_body)["messages"]) > 1)
    warm, *pairs = (
        recorded_exchange(turn, k, s, own=True) for k, s in enumerate(["w", "s1", "s2", "s2", "s1"])
    )
    store = open_store(url)
    store.write(Batch(begins=[e for e, _ in (warm, *pairs)], ends=[e for _, e in (warm, *pairs)]))
    Deriver(store, analyze=False).derive_ids([warm[0].id])  # the shared system prompt, committed
    store.close()

    # Two ingesters, each deriving a batch of two exchanges: A s1 then s2, B s2 then s1. Each
    # waits for the other after its first, so that each holds the session the other needs.
    batches = [[pairs[0][0].id, pairs[1][0].id], [pairs[2][0].id, pairs[3][0].id]]
    meet = threading.Barrier(2, timeout=15)
    raised: list[BaseException | None] = [None, None]

    def ingester(i: int) -> None:
        own = open_store(url)
        write = own.write_derived
        written = [0]

        def write_then_meet(items: list[Any]) -> None:
            write(items)
            written[0] += 1
            if written[0] == 1:
                meet.wait()

        own.write_derived = write_then_meet  # type: ignore[method-assign]
        try:
            Deriver(own, analyze=False).derive_ids(batches[i])
        except Exception as e:  # a batch that fails is retried whole by the ingester: fine
            raised[i] = e
        finally:
            own.close()

    threads = [threading.Thread(target=ingester, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    derived = {t["exchange"] for s in turns_of(url) for t in s}
    for i, batch in enumerate(batches):
        if raised[i] is None:
            assert set(batch) <= derived, f"ingester {i} skipped {set(batch) - derived}"


def turns_of(url: str) -> list[list[dict[str, Any]]]:
    store = reading(url)
    try:
        return [store.turn_rows(s["id"]) for s in store.session_rows()]
    finally:
        store.close()


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
        began = time.monotonic()
        report = status(url, journal)
        assert time.monotonic() - began < 8  # the store's error is said at once, not after 10 s
        assert report["journal_backlog_bytes"] > 0
        assert report["ingest"]["last_error"]
        assert "store_error" in report  # status says the store is unreachable, and returns

        private_pg.start()
        wait_for(
            "the backlog to drain once the database is back",
            lambda: drained(url, [journal], sent),
            30,
        )
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


@pytest.mark.timeout(60)
def test_a_store_opened_while_the_server_is_down_fails_at_once_and_opens_when_back(
    private_pg: PrivatePostgres,
) -> None:
    """psycopg_pool retries a server that is down in the background, waiting twice as long
    each time, and getconn waits its whole timeout meanwhile: opening a store must not wait
    10 s to say the server is down, nor for the pool's next try once it is back."""
    url = private_pg.create_database("tapewire")
    private_pg.stop()
    for _ in range(2):
        began = time.monotonic()
        with pytest.raises(ConnectionError, match="Connection refused"):
            open_store(url)
        assert time.monotonic() - began < 3
    private_pg.start()
    began = time.monotonic()
    open_store(url).close()
    assert time.monotonic() - began < 3

    # Down again, with a pool whose connection the restart broke: the first open waits for the
    # pool (its timeout), which is then dropped, so the next ones fail at once, and the one
    # after the server is back connects at once.
    private_pg.stop()
    with pytest.raises(ConnectionError):
        open_store(url)
    began = time.monotonic()
    with pytest.raises(ConnectionError, match="Connection refused"):
        open_store(url)
    assert time.monotonic() - began < 3
    private_pg.start()
    began = time.monotonic()
    open_store(url).close()
    assert time.monotonic() - began < 3
