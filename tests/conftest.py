"""Shared fixtures: a fake provider on 127.0.0.1 and a real tapewire recorder in front of it."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakeprovider import FakeProvider
from tapewire.service import Service, ServiceThread, Settings
from tapewire.store import Store, open_store
from tapewire.store.location import DbRef

RECORDING = Path(__file__).parent / "fixtures" / "recordings" / "claude-20260727-019fa57e"

# Where a journal goes by default for a PostgreSQL store (the user data directory), and any
# other per-user file: never the real user's, in tests.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="tapewire-test-data-")

# The PostgreSQL server the store suite runs on as well as SQLite (.ci/run starts it and
# makes this role and database). Each test gets a schema of its own in it.
POSTGRES_URL = os.environ.get(
    "TAPEWIRE_TEST_POSTGRES", "postgresql://tapewire:tapewire@127.0.0.1:5432/tapewire_test"
)
BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The store backend a test runs on: every test that asks for a store runs on both."""
    return str(request.param)


class Databases:
    """Fresh, empty stores of one backend: SQLite files in a directory, or PostgreSQL schemas
    of the test database (a URL whose search_path names the schema)."""

    def __init__(self, backend: str, directory: Path) -> None:
        self.backend = backend
        self.directory = directory
        self.schemas: list[str] = []

    def new(self, name: str = "tapewire") -> DbRef:
        if self.backend == "sqlite":
            return self.directory / f"{name}.db"
        import psycopg

        schema = f"t_{name.replace('-', '_')}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}".encode())
        self.schemas.append(schema)
        return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"

    def clone(self, db: DbRef, name: str = "copy") -> DbRef:
        """A copy of a store to change, row for row (a test copies a shared database first)."""
        if isinstance(db, Path):
            import shutil

            target = self.directory / f"{name}.db"
            shutil.copy(db, target)
            return target
        import psycopg

        target = self.new(name)
        open_store(target).close()  # the same schema, migrated
        source_schema = db.rsplit("%3D", 1)[1]
        target_schema = str(target).rsplit("%3D", 1)[1]
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            tables = [
                r[0]
                for r in admin.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (source_schema,),
                )
            ]
            for table in tables:
                admin.execute(
                    f"INSERT INTO {target_schema}.{table} OVERRIDING SYSTEM VALUE"  # type: ignore[arg-type]
                    f" SELECT * FROM {source_schema}.{table} ON CONFLICT DO NOTHING"
                )
            # Rows copied with their identity values leave the sequences behind: move them on,
            # or the copy's next row collides with a copied one.
            identities = admin.execute(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = %s AND is_identity = 'YES'",
                (target_schema,),
            ).fetchall()
            for table, column in identities:
                admin.execute(
                    f"SELECT setval(pg_get_serial_sequence('{target_schema}.{table}', '{column}'),"  # type: ignore[arg-type]
                    f" (SELECT max({column}) FROM {target_schema}.{table}))"
                    f" WHERE EXISTS (SELECT 1 FROM {target_schema}.{table})"
                )
        return target

    def drop(self) -> None:
        if not self.schemas:
            return
        import psycopg

        from tapewire.store.postgres import close_pools

        close_pools()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            for schema in self.schemas:
                admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())
        self.schemas.clear()


@pytest.fixture
def dbs(backend: str, tmp_path: Path) -> Iterator[Databases]:
    made = Databases(backend, tmp_path)
    yield made
    made.drop()


@pytest.fixture
def db(dbs: Databases) -> DbRef:
    """A fresh, empty store's location, on each backend in turn."""
    return dbs.new()


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(RECORDING) as provider:
        yield provider


def settings_for(fake: FakeProvider, tmp_path: Path, **overrides: object) -> Settings:
    """A recorder in front of the fake; db= a store from the `db` fixture (a SQLite file in
    tmp_path by default). The journal stays in tmp_path whatever the backend."""
    base = Settings(
        db=tmp_path / "tapewire.db",
        journal=tmp_path / "tapewire.db.journal",
        port=0,
        upstreams=[
            f"{name}={fake.url}" for name in ("anthropic", "openai", "ollama", "gemini", "chatgpt")
        ],
        grace=2.0,
    )
    for key, value in overrides.items():
        setattr(base, key, value)
    return base


@pytest.fixture
def recorder(fake: FakeProvider, tmp_path: Path, db: DbRef) -> Iterator[Service]:
    """tapewire running on its own thread, forwarding every provider to the fake, into a
    store of each backend in turn."""
    with ServiceThread(settings_for(fake, tmp_path, db=db)) as service:
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
def session_dbs(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    """Stores that live for the whole run (shared, read-only databases), per backend."""
    made = Databases(backend, tmp_path_factory.mktemp(f"shared-{backend}"))
    yield made
    made.drop()


@pytest.fixture(scope="session")
def recorded_db(session_dbs: Databases, tmp_path_factory: pytest.TempPathFactory) -> DbRef:
    """A database holding the 17 recorded Claude Code turns, replayed through a real proxy
    from the fake provider, stored and derived. Shared: tests only read it (copy it first
    to change it)."""
    import asyncio

    tmp = tmp_path_factory.mktemp("recorded")
    with FakeProvider(RECORDING) as fake:
        settings = settings_for(fake, tmp, db=session_dbs.new("recorded"))
        with ServiceThread(settings) as service:
            asyncio.run(_replay_recording(service.url))
            stored(service).close()
    return settings.db


@pytest.fixture(scope="session")
def scenarios_db(
    session_dbs: Databases, tmp_path_factory: pytest.TempPathFactory
) -> tuple[DbRef, dict[str, str]]:
    """A database holding the labelled synthetic sessions of tests/scenarios.py (loops,
    cycles, retries, errors, a cost spike, a stall, drifting runs), played with the real SDKs
    through a real proxy against the scripted fake provider, stored and derived. Returns the
    database's path and {label: session id}. Shared: tests only read it (copy it first to
    change it)."""
    from scenarios import SCENARIOS, record_scenarios
    from tapewire.query import sessions

    tmp = tmp_path_factory.mktemp("scenarios")
    with FakeProvider() as fake:
        settings = settings_for(fake, tmp, db=session_dbs.new("scenarios"))
        with ServiceThread(settings) as service:
            record_scenarios(service.url, fake)
            store = stored(service)
    try:
        by_name = {row["name"]: row["id"] for row in sessions(store)}
    finally:
        store.close()
    return settings.db, {label: by_name[label] for label in SCENARIOS}
