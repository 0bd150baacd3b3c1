"""The read API (docs/api.md) over the recorded Claude Code session: in process for the content
(the same figures the query layer, and so the CLI's --json, gives), schemathesis against its own
OpenAPI document, and over real sockets for `tapewire ui`, `tapewire serve` and the token."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import settings
from schemathesis.checks import positive_data_acceptance

from conftest import Databases, settings_for, stored
from fakeprovider import FakeProvider
from servecli import ServeProcess, cli
from tapewire import query
from tapewire.capture.headers import CREDENTIAL_HEADERS
from tapewire.service import ServiceThread
from tapewire.store import open_store
from tapewire.store.location import DbRef
from tapewire.web import ReadServer, create_app

SESSION = "ac9b5a71-50d4-47c2-b771-4d5c3e96d899"  # the harness's session id
NOT_FOUND = "flibbertigibbet: command not found"
RECORDED_AUTH = "<redacted:115>"  # the authorization value the recording's requests carry
URL_LINE = re.compile(r"UI: (http://\S+)/ ")


@pytest.fixture(scope="module")
def app(recorded_db: DbRef) -> Iterator[FastAPI]:
    app = create_app(recorded_db)
    yield app
    app.state.readers.stop()


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def sid(recorded_db: DbRef) -> str:
    store = open_store(recorded_db, readonly=True)
    try:
        return query.resolve_session(store, SESSION)
    finally:
        store.close()


def _twin(value: Any) -> Any:
    """What the query layer returned, as it reads once it has been JSON."""
    return json.loads(json.dumps(value))


def _read(db: DbRef, fn: Any) -> Any:
    store = open_store(db, readonly=True)
    try:
        return _twin(fn(store))
    finally:
        store.close()


def _ok(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    return resp.json()


def _error(resp: httpx.Response, status: int, *words: str) -> str:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-content-type-options"] == "nosniff"
    message: str = resp.json()["error"]
    for word in words:
        assert word in message
    return message


# ---- in process, over the recording ---------------------------------------------------------


def test_sessions_are_the_query_layers(client: TestClient, recorded_db: DbRef) -> None:
    page = _ok(client.get("/api/sessions"))
    assert page["next_cursor"] is None
    assert page["sessions"] == _read(recorded_db, query.sessions)
    (s,) = page["sessions"]
    assert s["harness_session_id"] == SESSION
    assert s["title"] == "Run generate-claude-fixture skill"
    assert (s["turns"], s["threads"], s["tool_calls"], s["tool_errors"]) == (17, 2, 25, 5)
    assert _ok(client.get("/api/sessions", params={"harness": "codex"}))["sessions"] == []
    assert _ok(client.get("/api/sessions", params={"model": s["models"][0]}))["sessions"] == [s]
    # `since`: ISO, naive is local time; the session ended long before the year 3000
    assert _ok(client.get("/api/sessions", params={"since": "3000-01-01"}))["sessions"] == []
    assert _ok(client.get("/api/sessions", params={"since": "2000-01-01T00:00:00+00:00"}))[
        "sessions"
    ] == [s]
    _error(client.get("/api/sessions", params={"since": "yesterday"}), 400, "since")
    _error(client.get("/api/sessions", params={"limit": 0}), 400, "limit")
    _error(client.get("/api/sessions", params={"limit": "many"}), 400, "limit")


def test_session_by_any_ref_with_its_threads(
    client: TestClient, recorded_db: DbRef, sid: str
) -> None:
    detail = _ok(client.get(f"/api/sessions/{sid}"))
    assert set(detail) == {"session", "threads"}
    twin = _read(recorded_db, lambda store: query.session_detail(store, sid))
    assert detail == {"session": twin["session"], "threads": twin["threads"]}
    assert [t["kind"] for t in detail["threads"]] == ["main", "subagent"]
    for ref in (sid[:8], SESSION, SESSION[:8]):  # a prefix, the harness's id, its prefix
        assert _ok(client.get(f"/api/sessions/{ref}")) == detail
    _error(client.get("/api/sessions/nosuchsession"), 404, "no session matches")
    _error(client.get("/api/sessions/nosuchsession/timeline"), 404, "no session matches")
    _error(client.get("/api/sessions/"), 404)


def test_timeline_lists_the_tool_error_in_its_call(
    client: TestClient, recorded_db: DbRef, sid: str
) -> None:
    timeline = _ok(client.get(f"/api/sessions/{SESSION}/timeline"))
    assert timeline["session"] == sid
    turns = timeline["turns"]
    assert turns == _read(recorded_db, lambda store: query.session_detail(store, sid))["turns"]
    assert [t["index"] for t in turns] == list(range(1, 18))
    (call,) = [c for t in turns for c in t["tool_calls"] if NOT_FOUND in (c["result"] or "")]
    assert call["name"] == "Bash" and call["is_error"] is True and call["answered"] is True
    assert call["arguments"]["command"] == "flibbertigibbet --help"


def test_raw_exchange_decoded_without_credentials(client: TestClient, sid: str) -> None:
    turns = _ok(client.get(f"/api/sessions/{sid}/timeline"))["turns"]
    n = next(t["index"] for t in turns if any(NOT_FOUND in (c["result"] or "")
                                              for c in t["tool_calls"]))  # fmt: skip
    after = turns[n]  # the turn that sent the error back to the model
    resp = client.get(f"/api/exchanges/{after['exchange_id']}/raw")
    raw = _ok(resp)
    assert raw["id"] == after["exchange_id"] and raw["outcome"] == "complete"
    assert NOT_FOUND in raw["request_body"]["text"]
    assert raw["response_encoding"] == "gzip"
    assert raw["response_body"]["text"].startswith("event: message_start")  # gunzipped
    headers = {k.lower(): v for k, v in raw["request_headers"]}
    assert headers["x-claude-code-session-id"] == SESSION
    assert headers["authorization"] == ""  # forwarded upstream, never stored
    assert all(v == "" for k, v in raw["request_headers"] if k.lower() in CREDENTIAL_HEADERS)
    assert RECORDED_AUTH not in resp.text
    _error(client.get("/api/exchanges/nosuchexchange/raw"), 404, "no exchange")


def test_search_finds_the_turn_with_the_tool_error(
    client: TestClient, sid: str, backend: str
) -> None:
    page = _ok(client.get("/api/search", params={"q": "flibbertigibbet"}))
    assert page["next_offset"] is None
    hits = page["hits"]
    (result,) = [h for h in hits if h["where"] == "tool_result"]
    assert result["session"] == sid and NOT_FOUND in result["snippet"]
    start, end = result["highlights"][0]
    assert result["snippet"][start:end] == "flibbertigibbet"
    timeline = _ok(client.get(f"/api/sessions/{sid}/timeline"))["turns"]
    turn = timeline[result["turn"] - 1]
    assert turn["exchange_id"] == result["exchange_id"]
    assert any(NOT_FOUND in json.dumps(m["parts"]) for m in turn["input"])
    # filters: the tool, the role, the session by any ref; paging by offset
    by_tool = _ok(client.get("/api/search", params={"q": "flibbertigibbet", "tool": "Bash"}))
    assert {h["where"] for h in by_tool["hits"]} == {"tool_arguments", "tool_result"}
    by_role = _ok(client.get("/api/search", params={"q": "flibbertigibbet", "role": "user"}))
    assert {h["role"] for h in by_role["hits"]} == {"user"}
    in_session = client.get("/api/search", params={"q": "flibbertigibbet", "session": SESSION})
    assert _ok(in_session)["hits"] == hits
    first = _ok(client.get("/api/search", params={"q": "flibbertigibbet", "limit": 1}))
    assert first["hits"] == hits[:1] and first["next_offset"] == 1
    second = client.get("/api/search", params={"q": "flibbertigibbet", "limit": 1, "offset": 1})
    assert _ok(second)["hits"] == hits[1:2]
    unclosed = client.get("/api/search", params={"q": '"flibbertigibbet'})
    if backend == "sqlite":  # an FTS5 syntax error, said in words
        _error(unclosed, 400, "q:")
    else:  # PostgreSQL's web-search syntax reads any text: here, the word
        assert _ok(unclosed)["hits"] == hits
    _error(client.get("/api/search"), 400, "q")
    _error(client.get("/api/search", params={"q": "x", "session": "nosuch"}), 404)


def test_tools_with_their_error_counts(client: TestClient, recorded_db: DbRef, sid: str) -> None:
    tools = _ok(client.get("/api/tools"))["tools"]
    assert tools == _read(recorded_db, query.tool_stats)
    timeline = _ok(client.get(f"/api/sessions/{sid}/timeline"))["turns"]
    bash = [c for t in timeline for c in t["tool_calls"] if c["name"] == "Bash"]
    (entry,) = [t for t in tools if t["name"] == "Bash"]
    assert entry["calls"] == len(bash) and entry["errors"] == sum(bool(c["is_error"]) for c in bash)
    assert entry["errors"] >= 1
    assert _ok(client.get("/api/tools", params={"session": SESSION[:8]}))["tools"] == tools
    _error(client.get("/api/tools", params={"session": "nosuch"}), 404)


def test_export_streams_jsonl(client: TestClient, recorded_db: DbRef, sid: str) -> None:
    resp = client.get("/api/export")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/x-ndjson"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.text.endswith("\n")
    records = [json.loads(line) for line in resp.text.splitlines()]
    assert all(r["schema_version"] == query.EXPORT_SCHEMA for r in records)
    assert [r["type"] for r in records] == ["session"] + ["turn"] * 17
    assert records == _read(recorded_db, lambda store: list(query.export_records(store)))
    twice = client.get("/api/export", params=[("session", SESSION), ("session", sid[:8])])
    assert [json.loads(line) for line in twice.text.splitlines()] == records * 2
    _error(client.get("/api/export", params={"session": "nosuch"}), 404, "no session matches")


def test_diff_of_the_run_with_itself(client: TestClient, sid: str) -> None:
    result = _ok(client.get("/api/diff", params={"a": sid, "b": SESSION}))
    assert result["identical"] is True and result["first_divergence"] is None
    _error(client.get("/api/diff", params={"a": sid}), 400, "b")
    _error(client.get("/api/diff", params={"a": sid, "b": "nosuch"}), 404)
    # A NUL (which PostgreSQL text cannot hold) names no session, as any other text would.
    _error(client.get("/api/diff", params={"a": sid, "b": "no\x00such"}), 404, "no session")
    nul_model = client.get("/api/search", params={"q": "flibbertigibbet", "model": "a\x00b"})
    assert _ok(nul_model)["hits"] == []


def test_errors_are_json(client: TestClient) -> None:
    _error(client.get("/api/nothing"), 404)
    _error(client.post("/api/sessions"), 405)
    _error(client.get("/api/sessions", params={"cursor": "bm90IGEgY3Vyc29y"}), 400, "cursor")


def test_openapi_document_and_docs(client: TestClient) -> None:
    doc = _ok(client.get("/api/openapi.json"))
    assert set(doc["paths"]) == {
        "/api/sessions", "/api/sessions/{id}", "/api/sessions/{id}/timeline",
        "/api/exchanges/{id}/raw", "/api/search", "/api/diff", "/api/tools", "/api/export",
        "/api/sessions/{id}/findings", "/api/findings",
    }  # fmt: skip
    for operation in (op for ops in doc["paths"].values() for op in ops.values()):
        assert "422" not in operation["responses"] and "400" in operation["responses"]
    assert (
        "application/x-ndjson" in doc["paths"]["/api/export"]["get"]["responses"]["200"]["content"]
    )
    assert "security" not in doc  # no token, no scheme
    docs = client.get("/api/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    script_src = docs.headers["content-security-policy"].split("script-src")[1].split(";")[0]
    (inline,) = re.findall(r"<script>(.*?)</script>", docs.text, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in script_src and "'unsafe-inline'" not in script_src


# ---- pagination over many sessions ---------------------------------------------------------


async def _one_turn_sessions(url: str, count: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for i in range(count):
            body = {"model": "claude-test", "max_tokens": 16,
                    "messages": [{"role": "user", "content": f"hello number {i}"}]}  # fmt: skip
            async with http.post(f"{url}/s/run-{i}/v1/messages", json=body) as resp:
                assert resp.status == 200
                await resp.read()


@pytest.fixture(scope="module")
def five_sessions_db(session_dbs: Databases, tmp_path_factory: pytest.TempPathFactory) -> DbRef:
    tmp = tmp_path_factory.mktemp("five")
    with FakeProvider() as fake:
        settings = settings_for(fake, tmp, db=session_dbs.new("five"))
        with ServiceThread(settings) as service:
            asyncio.run(_one_turn_sessions(service.url, 5))
            stored(service).close()
    return settings.db


def test_cursor_pages_through_every_session(five_sessions_db: DbRef) -> None:
    app = create_app(five_sessions_db)
    with TestClient(app) as client:
        every = _ok(client.get("/api/sessions"))["sessions"]
        assert len(every) == 5 and every == _read(five_sessions_db, query.sessions)
        assert [s["name"] for s in every] == [f"run-{i}" for i in reversed(range(5))]
        pages, cursor = [], None
        while True:
            page = _ok(client.get("/api/sessions", params={"limit": 2, "cursor": cursor} if
                                  cursor else {"limit": 2}))  # fmt: skip
            pages.append(page["sessions"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)  # opaque, URL-safe
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [s for p in pages for s in p] == every
        exact = _ok(client.get("/api/sessions", params={"limit": 5}))
        assert exact["next_cursor"] is None  # no empty last page
        for bad in ("%%%", "e30", base64.urlsafe_b64encode(b'["x", 1]').decode(), "W10"):
            _error(client.get("/api/sessions", params={"cursor": bad}), 400, "cursor")


# ---- schemathesis: every operation, its documented responses only, never a 500 --------------


# Schemathesis's lazy loader (schemathesis.pytest.from_fixture) sets pytest's private
# Function._nodeid, which pytest 9 no longer has; so the document is loaded at import, from an
# app whose database (it opens it lazily) is named once the recording is stored.
SCHEMA_APP = create_app(Path("/nonexistent/tapewire.db"))
schema = schemathesis.openapi.from_asgi("/api/openapi.json", SCHEMA_APP)


@pytest.fixture(scope="module")
def schema_db(recorded_db: DbRef) -> Iterator[DbRef]:
    SCHEMA_APP.state.readers.db = recorded_db
    yield recorded_db
    SCHEMA_APP.state.readers.stop()


@schema.parametrize()
@settings(max_examples=20, deadline=None)
def test_api_conforms_to_its_openapi_document(case: Any, schema_db: DbRef) -> None:
    excluded = []
    if case.operation.path in ("/api/sessions", "/api/search", "/api/findings"):
        # A full-text query (FTS5 on SQLite), an ISO date-time (naive: local) and an opaque cursor are strings whose
        # grammar the document cannot state: a string outside it is a 400, said in words.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(excluded_checks=excluded)


# ---- over real sockets ----------------------------------------------------------------------


def _wait_for_url(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if m := URL_LINE.search(line):
            return m.group(1)
    raise AssertionError(f"no read API URL: {''.join(seen)}")


def test_ui_serves_an_existing_database_over_a_socket(recorded_db: DbRef) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "tapewire", "ui", "--db", str(recorded_db), "--listen",
         "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        try:
            url = _wait_for_url(proc)
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url) and not url.endswith(":0")
            resp = httpx.get(url + "/api/sessions")
            assert _ok(resp)["sessions"][0]["harness_session_id"] == SESSION
            export = httpx.get(url + "/api/export", params={"session": SESSION})
            assert export.headers["content-type"] == "application/x-ndjson"
            assert len(export.text.splitlines()) == 18
            # A name some web page rebinds to 127.0.0.1 is not loopback to the API.
            rebound = httpx.get(url + "/api/sessions", headers={"host": "rebound.example"})
            _error(rebound, 400, "Host")
            assert _ok(httpx.get(url.replace("127.0.0.1", "localhost") + "/api/tools"))["tools"]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_export_cut_short_and_stop_let_go_of_every_store(recorded_db: DbRef) -> None:
    before = set(threading.enumerate())
    server = ReadServer(recorded_db, "127.0.0.1", 0)
    server.start()
    try:
        # 800 sessions' worth (68 MB), each named by a short prefix to keep the URL short, read
        # through a small receive buffer, fixed: loopback's autotuning would let the client's
        # grow to 32 MB, and a smaller export could then end rather than be cut short.
        prefix = _ok(httpx.get(server.url + "/api/sessions"))["sessions"][0]["id"][:8]
        params = [("session", prefix)] * 800
        small = [(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)]
        with (
            httpx.Client(transport=httpx.HTTPTransport(socket_options=small)) as client,
            client.stream("GET", server.url + "/api/export", params=params) as resp,
        ):
            assert resp.status_code == 200
            first = next(resp.iter_bytes())
            assert first.startswith(b'{"schema_version":1,"type":"session"')
            assert any(t.name.startswith("tapewire-export") for t in threading.enumerate())
        deadline = time.monotonic() + 10
        while any(t.name.startswith("tapewire-export") for t in threading.enumerate()):
            assert time.monotonic() < deadline  # the client went away: its thread, its store
            time.sleep(0.02)
        assert _ok(httpx.get(server.url + "/api/tools"))["tools"]
        started = set(threading.enumerate()) - before
        readers = [t for t in started if t.name.startswith("tapewire-read-")]
        assert len(readers) == server.app.state.readers.size
    finally:
        server.stop()
    # Each of tapewire's threads closed its store on its way out. (AnyIO keeps idle worker
    # threads of its own for a while; they hold no store. A PostgreSQL pool's threads serve
    # the process's stores of that database, whoever opens one next, until it exits.)
    pools = ("tapewire-ro-", "tapewire-scheduler", "tapewire-worker-")
    assert not [
        t for t in started
        if t.is_alive() and t.name.startswith("tapewire") and not t.name.startswith(pools)
    ]  # fmt: skip


def test_ui_needs_a_database(db: DbRef) -> None:
    # No file at that path; a server whose schema holds no tapewire tables.
    out = cli("ui", "--db", str(db), "--listen", "127.0.0.1:0", check=False)
    assert out.returncode != 0 and "no database" in out.stderr


def test_serve_starts_and_stops_the_read_api(fake: FakeProvider, db: DbRef) -> None:
    with ServeProcess(db, fake.url, "--ui-listen", "127.0.0.1:0") as serve:
        deadline = time.monotonic() + 20
        while not (m := URL_LINE.search(serve.log.read_text())):
            assert time.monotonic() < deadline, serve.log.read_text()
            time.sleep(0.05)
        url = m.group(1)
        assert url != serve.url
        httpx.post(serve.url + "/v1/messages", json={
            "model": "claude-test", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hello over the proxy"}]})  # fmt: skip
        while True:  # the ingest worker derives it in its own time
            page = httpx.get(url + "/api/sessions")
            if page.status_code == 200 and page.json()["sessions"]:
                break
            assert page.status_code in (200, 503), page.text
            assert time.monotonic() < deadline, page.text
            time.sleep(0.1)
        hits = _ok(httpx.get(url + "/api/search", params={"q": "proxy"}))["hits"]
        assert hits and hits[0]["where"] == "prompt"
        assert serve.terminate() == 0
    log = serve.log.read_text()
    assert "Traceback" not in log
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/api/sessions")


# ---- beyond loopback: the token ------------------------------------------------------------


def _own_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    candidates = []
    with contextlib.suppress(OSError):
        candidates.append(socket.gethostbyname(socket.gethostname()))
    try:
        out = subprocess.run(
            ["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=10, check=False
        )
        candidates += re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", out.stdout)
    except (OSError, subprocess.SubprocessError):
        pass
    for address in candidates:
        if address.startswith("127."):
            continue
        with socket.socket() as s:
            try:
                s.bind((address, 0))
            except OSError:
                continue
        return address
    return None


@pytest.fixture(scope="module")
def own_address() -> str:
    address = _own_address()
    if address is None:
        pytest.skip("this machine has no IPv4 address beyond loopback to listen on")
    return address


def test_beyond_loopback_no_start_without_a_token(
    own_address: str, recorded_db: DbRef, db: DbRef, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="without --token"):
        ReadServer(recorded_db, own_address, 0)
    out = cli("ui", "--db", str(recorded_db), "--listen", f"{own_address}:0", check=False)
    assert out.returncode != 0 and "without --token" in out.stderr
    journal = tmp_path / "t.journal"
    out = cli("serve", "--db", str(db), "--journal", str(journal), "--listen", "127.0.0.1:0",
              "--ui-listen", f"{own_address}:0", check=False)  # fmt: skip
    assert out.returncode != 0 and "without --token" in out.stderr
    assert not journal.exists()  # refused before anything started


def test_beyond_loopback_every_request_needs_the_token(
    own_address: str, recorded_db: DbRef
) -> None:
    server = ReadServer(recorded_db, own_address, 0, token="read-token-123")
    server.start()
    try:
        assert server.url == f"http://{own_address}:{server.port}" and server.port != 0
        for path in ("/api/sessions", "/api/openapi.json", "/api/docs", "/api/nothing"):
            resp = httpx.get(server.url + path)
            _error(resp, 401, "Bearer")
            assert resp.headers["www-authenticate"].startswith("Bearer")
        wrong = httpx.get(server.url + "/api/sessions", headers={"authorization": "Bearer nope"})
        _error(wrong, 401)
        as_proxy = httpx.get(server.url + "/api/sessions",
                             headers={"x-tapewire-token": "read-token-123"})  # fmt: skip
        _error(as_proxy, 401)
        auth = {"authorization": "Bearer read-token-123"}
        page = _ok(httpx.get(server.url + "/api/sessions", headers=auth))
        assert page["sessions"][0]["harness_session_id"] == SESSION
        doc = _ok(httpx.get(server.url + "/api/openapi.json", headers=auth))
        assert doc["security"] == [{"bearer": []}]
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert all("401" in op["responses"] for ops in doc["paths"].values() for op in ops.values())
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/api/sessions", headers=auth)
