"""Keeping a store, on both backends: copy between them, delete and prune what only some
sessions held, migrate. Real recordings, real proxies, real SQLite files and PostgreSQL schemas."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp

from conftest import RECORDING, Databases, settings_for, stored
from fakeprovider import FakeProvider, load_recording
from servecli import ServeProcess, cli
from tapewire import maintenance
from tapewire.derive.verify import verify
from tapewire.query import search
from tapewire.service import ServiceThread
from tapewire.store import Store, open_store
from tapewire.store.location import DbRef

OTHER = {"sqlite": "postgres", "postgres": "sqlite"}


async def _replay(url: str, turns: int | None = None) -> None:
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for turn in load_recording(RECORDING)[:turns]:
            async with http.post(
                url + "/v1/messages?beta=true", headers=turn.request_headers, data=turn.request_body
            ) as resp:
                await resp.read()


def _record(fake: FakeProvider, tmp_path: Path, db: DbRef, runs: dict[str, int | None]) -> None:
    """Each named run replays the recording (its first N turns) under /s/<name>."""
    with ServiceThread(settings_for(fake, tmp_path, db=db)) as service:
        for name, turns in runs.items():
            asyncio.run(_replay(f"{service.url}/s/{name}", turns))
        stored(service).close()


def _snapshot(store: Store) -> dict[str, Any]:
    """What a user sees of a store: sessions with their figures, turns, nodes, findings."""
    sessions = store.session_rows()
    return {
        "sessions": sessions,
        "turns": {s["id"]: store.turn_rows(s["id"]) for s in sessions},
        "tool_calls": {s["id"]: store.tool_call_rows(s["id"]) for s in sessions},
        "nodes": sorted(n[0] for n in store.iter_nodes()),
        "findings": store.finding_rows(),
        "exchanges": sorted(
            (e.id, e.status, e.outcome, e.request_sha256) for e in store.exchanges(limit=10**6)
        ),
    }


def test_copy_to_the_other_backend_and_back_keeps_sessions_ids_and_figures(
    scenarios_db: tuple[DbRef, dict[str, str]], backend: str, tmp_path: Path
) -> None:
    source, _ = scenarios_db
    other = Databases(OTHER[backend], tmp_path / "other")
    back = Databases(backend, tmp_path / "back")
    (tmp_path / "other").mkdir()
    (tmp_path / "back").mkdir()
    try:
        middle, final = other.new("middle"), back.new("final")
        src = open_store(source, readonly=True)
        try:
            before = _snapshot(src)
            hits_before = search(src, "error", limit=20)
        finally:
            src.close()
        assert before["sessions"] and before["nodes"] and before["findings"]

        out = json.loads(cli("copy", "--from", str(source), "--to", str(middle), "--json").stdout)
        assert out["copied"] == out["exchanges"] == len(before["exchanges"])
        assert out["target"]["sessions"] == len(before["sessions"])
        report = maintenance.copy_store(open_store(middle, readonly=True), open_store(final))
        assert report.copied == report.exchanges == len(before["exchanges"])

        for db in (middle, final):
            store = open_store(db, readonly=True)
            try:
                assert _snapshot(store) == before
                assert search(store, "error", limit=20) == hits_before
                assert verify(store).problems == []
            finally:
                store.close()

        # Run again: nothing new, nothing doubled.
        again = json.loads(cli("copy", "--from", str(source), "--to", str(middle), "--json").stdout)
        assert again["copied"] == 0 and again["derived"] == 0 and again["blobs"] == 0
        store = open_store(middle, readonly=True)
        try:
            assert _snapshot(store) == before
            assert store.counts()["drops"] == open_store(source, readonly=True).counts()["drops"]
        finally:
            store.close()
    finally:
        other.drop()
        back.drop()


def test_delete_keeps_what_another_session_shares(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    # Two runs of one task: "short" is the first 10 turns of "long", so it shares their
    # nodes and request bodies; "long" also holds 7 turns of its own.
    _record(fake, tmp_path, db, {"long": None, "short": 10})
    store = open_store(db)
    try:
        ids = {s["name"]: s["id"] for s in store.session_rows()}
        short_before = _session_view(store, ids["short"])
        long_nodes = _nodes_of(store, ids["long"])
        short_nodes = _nodes_of(store, ids["short"])
        assert short_nodes < long_nodes  # shared, content-addressed
        counts = store.counts()
        blobs_before = dict(store.blob_rows())
        gone_word, kept_word = _distinct_words(store, long_nodes - short_nodes, short_nodes)
        assert {h["session"] for h in search(store, gone_word)} == {ids["long"]}
        assert {h["session"] for h in search(store, kept_word)} == {ids["long"], ids["short"]}
    finally:
        store.close()
    size_before = _stored_bytes(db)

    out = json.loads(cli("delete", "long", "--db", str(db), "--json").stdout)

    store = open_store(db)
    try:
        assert [s["id"] for s in store.session_rows()] == [ids["short"]]
        assert _session_view(store, ids["short"]) == short_before
        assert verify(store).problems == []
        after = store.counts()
        assert after["nodes"] == len(short_nodes)
        assert out["nodes"] == counts["nodes"] - len(short_nodes) == len(long_nodes - short_nodes)
        assert after["exchanges"] == counts["exchanges"] - out["exchanges"] == 10
        # The bodies only "long" sent went; the 10 it shared with "short" stayed.
        kept = dict(store.blob_rows())
        assert set(kept) < set(blobs_before) and out["blobs"] == len(blobs_before) - len(kept)
        assert after["body_bytes_stored"] == counts["body_bytes_stored"] - out["blob_bytes"]
        assert search(store, gone_word) == []
        if isinstance(db, Path):  # the contentless FTS5 index forgot them too, not just rows
            (left,) = store.conn.execute(  # type: ignore[attr-defined]
                "SELECT count(*) FROM search WHERE search MATCH ?", (gone_word,)
            ).fetchone()
            assert left == 0
        assert {h["session"] for h in search(store, kept_word)} == {ids["short"]}
    finally:
        store.close()
    assert _stored_bytes(db) < size_before
    assert cli("verify", "--db", str(db)).returncode == 0

    # Deleting the last one leaves an empty store that still verifies and records again.
    cli("delete", "short", "--db", str(db))
    store = open_store(db)
    try:
        empty = store.counts()
        assert (empty["sessions"], empty["exchanges"], empty["nodes"]) == (0, 0, 0)
        assert list(store.blob_rows()) == []
    finally:
        store.close()
    _record(fake, tmp_path, db, {"again": 3})
    assert cli("verify", "--db", str(db)).returncode == 0


def test_prune_deletes_sessions_that_ended_before_the_cutoff(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    _record(fake, tmp_path, db, {"old": 4})
    time.sleep(0.05)
    cutoff = time.time()
    time.sleep(0.05)
    _record(fake, tmp_path, db, {"new": 4})
    moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(cutoff))
    moment += f".{int(cutoff % 1 * 1e6):06d}"
    out = json.loads(cli("prune", "--before", moment, "--db", str(db), "--json").stdout)
    assert out["sessions"] == 1 and out["exchanges"] == 4
    store = open_store(db, readonly=True)
    try:
        assert [s["name"] for s in store.session_rows()] == ["new"]
    finally:
        store.close()
    assert cli("verify", "--db", str(db)).returncode == 0
    # An age: nothing here is a day old.
    out = json.loads(cli("prune", "--before", "1d", "--db", str(db), "--json").stdout)
    assert out["sessions"] == 0
    bad = cli("prune", "--before", "soon", "--db", str(db), check=False)
    assert bad.returncode == 2 and "neither an ISO date" in bad.stderr


def test_serve_retain_prunes_old_sessions_and_refuses_manual_prune_meanwhile(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    _record(fake, tmp_path, db, {"old": 3})
    time.sleep(1.2)
    serve = ServeProcess(db, fake.url, "--retain", "1s", journal=tmp_path / "journal").start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            store = open_store(db, readonly=True)
            try:
                names = [s["name"] for s in store.session_rows()]
            finally:
                store.close()
            if not names:
                break
            time.sleep(0.1)
        assert names == []
        busy = cli("prune", "--before", "1d", "--db", str(db), "--journal",
                   str(tmp_path / "journal"), check=False)  # fmt: skip
        assert busy.returncode == 1 and "serve is running" in busy.stderr
        status = json.loads(cli("status", "--db", str(db), "--journal",
                                str(tmp_path / "journal"), "--json").stdout)  # fmt: skip
        assert status["ingest"]["last_prune"]["sessions"] == 1
    finally:
        serve.terminate()


def test_migrate_shows_then_applies_pending_migrations(db: DbRef) -> None:
    dry = json.loads(cli("migrate", "--db", str(db), "--dry-run", "--json").stdout)
    assert dry["applied"] == [] and dry["pending"][0] == "0001_raw_layer"
    assert "0005_retention" in dry["pending"]
    done = json.loads(cli("migrate", "--db", str(db), "--json").stdout)
    assert done["applied_now"] == dry["pending"] and done["pending"] == []
    again = json.loads(cli("migrate", "--db", str(db), "--json").stdout)
    assert [m["name"] for m in again["applied"]] == dry["pending"]
    assert again["applied_now"] == [] and again["pending"] == []
    assert "up to date" in cli("migrate", "--db", str(db)).stdout


def test_a_password_in_the_url_is_never_shown(db: DbRef, backend: str) -> None:
    if backend == "sqlite":
        text = cli("migrate", "--db", str(db), "--dry-run").stdout
        assert str(db) in text
        return
    text = (
        cli("migrate", "--db", str(db), "--dry-run").stdout + cli("status", "--db", str(db)).stdout
    )
    assert ":tapewire@" not in text and ":***@" in text


def _session_view(store: Store, session: str) -> Any:
    rows = store.session_rows(ids=[session])
    return rows, store.turn_rows(session), store.tool_call_rows(session)


def _nodes_of(store: Store, session: str) -> set[str]:
    nodes: set[str] = set()
    for turn in store.turn_rows(session):
        for node in [*turn["input_nodes"], *turn["response_nodes"]]:
            nodes.update(store.node_chain(node))
    return nodes


def _distinct_words(store: Store, gone: set[str], kept: set[str]) -> tuple[str, str]:
    """A word only the nodes that go hold, and one the kept nodes hold (the first prompt's)."""

    def texts(nodes: set[str]) -> list[str]:
        rows = store.node_rows(sorted(nodes))
        return [t for n in rows.values()
                for t in maintenance.search_texts(n["id"], n["role"], n["content"])]  # fmt: skip

    kept_text = " ".join(texts(kept)).lower()
    gone_word = next(w for t in texts(gone) for w in re.findall(r"[a-z]{9,}", t.lower())
                     if w not in kept_text)  # fmt: skip
    kept_word = next(w for w in re.findall(r"[a-z]{9,}", kept_text))
    return gone_word, kept_word


def _stored_bytes(db: DbRef) -> int:
    """What a store takes: the SQLite file, or on PostgreSQL the bodies and nodes stored (a
    VACUUM there makes deleted rows' space reusable rather than shrinking files)."""
    store = open_store(db, readonly=True)
    try:
        if isinstance(db, Path):
            return store.size_bytes()
        counts = store.counts()
        return int(counts["body_bytes_stored"]) + counts["nodes"]
    finally:
        store.close()
