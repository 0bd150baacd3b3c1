"""Bad input and failures, through the real proxy: forwarded as they are, recorded with their
outcome, and nothing crashes (after each, a normal request through the same proxy works)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from conftest import settings_for, stored, wait_ingested
from failhelpers import ReadOnly, open_connections, raw_request, request_head, tiny_tmpfs
from fakeprovider import FakeProvider, fake_bytes, unreachable_port
from tapewire.service import Service, ServiceThread
from tapewire.store import ExchangeRow, Store, open_store
from tapewire.store.location import DbRef

TAPEWIRE = str(Path(sys.executable).with_name("tapewire"))
CHAT = {"model": "gpt-fake", "messages": [{"role": "user", "content": "Hi"}]}
MESSAGES = {
    "model": "claude-fake",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Hi"}],
}
TEXT = "Hello from the fake provider."
MB = 1024 * 1024


# --------------------------------------------------------------------------- helpers


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def paced_events(n: int) -> bytes:
    return b"".join(f'data: {{"i": {k}}}\n\n'.encode() for k in range(n))


@contextlib.contextmanager
def store_of(service: Service, timeout: float = 10.0) -> Iterator[Store]:
    wait_ingested(service, timeout)
    store = stored(service)
    try:
        yield store
    finally:
        store.close()


def by_case(store: Store, case: str) -> ExchangeRow:
    """The one exchange whose request carried `x-case: <case>`, bodies read back."""
    rows = [
        r
        for r in store.exchanges(limit=10_000)
        if ("x-case", case) in [(k.lower(), v) for k, v in r.request_headers]
    ]
    assert len(rows) == 1, f"expected one exchange for x-case {case}, found {len(rows)}"
    row = store.exchange(rows[0].id)
    assert row is not None
    return row


def upstream_view(sent: list[tuple[str, str]], fake: FakeProvider) -> list[tuple[str, str]]:
    """What the upstream must see of these request headers: all of them, in order, with Host
    naming the upstream."""
    host = fake.url.split("://", 1)[1]
    return [(k, host) if k.lower() == "host" else (k, v) for k, v in sent]


def header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


async def assert_still_works(
    service: Service, fake: FakeProvider, providers: tuple[str, ...] = ("openai", "anthropic")
) -> None:
    """A plain chat completion and a plain Anthropic message through the same proxy."""
    before = len(fake.received)
    async with aiohttp.ClientSession() as session:
        if "openai" in providers:
            async with session.post(service.url + "/v1/chat/completions", json=CHAT) as resp:
                assert resp.status == 200, await resp.text()
                doc = await resp.json()
                assert doc["choices"][0]["message"]["content"] == TEXT
        if "anthropic" in providers:
            async with session.post(service.url + "/v1/messages", json=MESSAGES) as resp:
                assert resp.status == 200, await resp.text()
                doc = await resp.json()
                assert doc["content"][0]["text"] == TEXT
    assert len(fake.received) == before + len(providers)


def still_works_sync(service: Service, fake: FakeProvider, providers: tuple[str, ...]) -> None:
    asyncio.run(assert_still_works(service, fake, providers))


@contextlib.contextmanager
def running(fake: FakeProvider, tmp_path: Path, db: DbRef, **overrides: Any) -> Iterator[Service]:
    with ServiceThread(settings_for(fake, tmp_path, db=db, **overrides)) as service:
        yield service


async def tapewire_status(db: DbRef, journal: Path) -> dict[str, Any]:
    """`tapewire status --json`, run as the user would run it."""
    proc = await asyncio.create_subprocess_exec(
        TAPEWIRE,
        "status",
        "--db",
        str(db),
        "--journal",
        str(journal),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    report: dict[str, Any] = json.loads(out)
    return report


async def poll(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture(autouse=True)
def no_proxy_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing crashes: the proxy's thread logs no error besides the drops a test provokes."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.get_records("call")
        if r.threadName == "tapewire-proxy"
        and r.levelno >= logging.ERROR
        and not r.getMessage().startswith("journal write failed")
    ]
    assert errors == [], "the proxy logged errors"


# --------------------------------------------------------------------------- client disconnect


async def test_client_disconnect_cancels_upstream(fake: FakeProvider, recorder: Service) -> None:
    headers = {"x-fake-scenario": "paced", "x-fake-events": "200", "x-fake-delay-ms": "50"}
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            recorder.url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
        )
        assert resp.status == 200
        first = await resp.content.readuntil(b"\n\n")
        assert first == paced_events(1)
        assert [s.state for s in open_connections(fake.port)] == ["ESTABLISHED"] * 2
        resp.close()  # hang up mid-stream: the connection is closed, not pooled

    # The proxy closes its upstream connection and the fake stops writing: no socket on the
    # fake's port is left open, long before the 10 s the stream would have taken.
    await poll(lambda: not open_connections(fake.port), 3.0, "the upstream connection to close")
    await poll(lambda: not recorder.recorder.open, 3.0, "the exchange to end")
    assert time.monotonic() - started < 5.0

    with store_of(recorder) as store:
        (row,) = store.exchanges(with_bodies=True)
    assert row.outcome == "client_disconnect"
    assert row.status == 200
    assert row.provider == "openai"
    body = row.response_body or b""
    full = paced_events(200)
    assert body.startswith(first)
    assert full.startswith(body)
    events = body.count(b"\n\n")
    assert events < 50, f"{events} of 200 events were read upstream"
    assert row.response_size == len(body)

    await assert_still_works(recorder, fake)


async def test_client_disconnect_before_upstream_answers(
    fake: FakeProvider, recorder: Service
) -> None:
    """The upstream is still thinking (no headers yet) when the agent hangs up: nothing is
    being written, yet the upstream request is cancelled at once."""
    headers = {"x-fake-scenario": "hang", "x-fake-delay-ms": "30000"}
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(
            session.post(recorder.url + "/v1/messages", json=MESSAGES, headers=headers)
        )
        await poll(lambda: len(fake.received) == 1, 3.0, "the request to reach the fake")
        assert [s.state for s in open_connections(fake.port)] == ["ESTABLISHED"] * 2
        task.cancel()  # the agent gives up: aiohttp closes its connection
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await poll(lambda: not open_connections(fake.port), 3.0, "the upstream connection to close")
    await poll(lambda: not recorder.recorder.open, 3.0, "the exchange to end")
    assert time.monotonic() - started < 5.0

    with store_of(recorder) as store:
        (row,) = store.exchanges(with_bodies=True)
    assert row.outcome == "client_disconnect"
    assert row.status is None
    assert json.loads(row.request_body or b"") == MESSAGES
    await assert_still_works(recorder, fake)


@pytest.mark.parametrize(
    ("declared", "partial"),
    [(1000, b'{"model": "m"'), (3 * MB, b"y" * (3 * MB // 2))],
    ids=["inline", "streamed"],
)
async def test_client_disconnect_mid_request(
    fake: FakeProvider, recorder: Service, declared: int, partial: bytes
) -> None:
    """The agent hangs up halfway through its request body: nothing complete goes upstream,
    the exchange is recorded as a client disconnect with the bytes that did arrive."""
    head = request_head(
        "POST",
        "/v1/chat/completions",
        [("Host", "x"), ("x-fake-scenario", "echo"), ("Content-Length", str(declared))],
    )
    _, writer = await asyncio.open_connection("127.0.0.1", recorder.port)
    writer.write(head + partial)
    await writer.drain()
    await poll(lambda: recorder.recorder.open, 3.0, "the exchange to begin")
    await asyncio.sleep(0.1)
    writer.close()
    await writer.wait_closed()
    await poll(lambda: not recorder.recorder.open, 3.0, "the exchange to end")

    await assert_still_works(recorder, fake)
    assert len(fake.received) == 2  # only the two normal requests arrived whole

    with store_of(recorder) as store:
        row = next(r for r in store.exchanges(limit=10) if r.outcome != "complete")
        row = store.exchange(row.id) or row
    assert row.outcome == "client_disconnect"
    assert row.status is None
    assert row.request_size == len(partial)
    assert row.request_body == partial


# --------------------------------------------------------------------------- upstream refused


@contextlib.contextmanager
def refusing(fake: FakeProvider, tmp_path: Path, db: DbRef, name: str) -> Iterator[Service]:
    """A recorder whose upstream `name` has nothing listening; the others go to the fake."""
    upstreams = [f"{n}={fake.url}" for n in ("anthropic", "openai", "ollama") if n != name]
    upstreams.append(f"{name}=http://127.0.0.1:{unreachable_port()}")
    with running(fake, tmp_path, db, upstreams=upstreams) as service:
        yield service


def test_upstream_refused_anthropic_sdk(fake: FakeProvider, tmp_path: Path, db: DbRef) -> None:
    with refusing(fake, tmp_path, db, "anthropic") as service:
        dead_url = service.upstreams["anthropic"].origin
        with (
            anthropic.Anthropic(base_url=service.url, api_key="sk-test", max_retries=0) as client,
            pytest.raises(anthropic.APIStatusError) as info,
        ):
            client.messages.create(**MESSAGES)
        err = info.value
        assert err.status_code == 502
        assert "tapewire" in err.message
        assert dead_url in err.message
        assert isinstance(err.body, dict)
        assert set(err.body) == {"type", "error"}
        assert err.body["type"] == "error"
        assert err.body["error"]["type"] == "api_error"
        message = err.body["error"]["message"]
        assert message.startswith("tapewire:")
        assert "upstream anthropic" in message
        assert dead_url in message
        assert err.response.headers["content-type"].startswith("application/json")
        assert fake.received == []

        with store_of(service) as store:
            (row,) = store.exchanges(with_bodies=True)
        assert row.outcome == "upstream_error"
        assert row.status == 502
        assert row.provider == "anthropic"
        assert row.upstream == "anthropic"
        assert row.error is not None
        assert dead_url in row.error
        assert json.loads(row.request_body or b"") == MESSAGES
        assert json.loads(row.response_body or b"") == err.body
        still_works_sync(service, fake, ("openai",))


def test_upstream_refused_openai_sdk(fake: FakeProvider, tmp_path: Path, db: DbRef) -> None:
    with refusing(fake, tmp_path, db, "openai") as service:
        dead_url = service.upstreams["openai"].origin
        with (
            openai.OpenAI(base_url=service.url + "/v1", api_key="sk-test", max_retries=0) as client,
            pytest.raises(openai.APIStatusError) as info,
        ):
            client.chat.completions.create(**CHAT)
        err = info.value
        assert err.status_code == 502
        assert "tapewire" in err.message
        assert isinstance(err.body, dict)  # the SDK hands over the "error" object
        assert set(err.body) >= {"message", "type", "param", "code"}
        assert err.body["message"].startswith("tapewire:")
        assert "upstream openai" in err.body["message"]
        assert dead_url in err.body["message"]
        assert err.body["type"] == "tapewire_error"
        raw = json.loads(err.response.content)
        assert set(raw) == {"error"}
        assert fake.received == []

        with store_of(service) as store:
            (row,) = store.exchanges(with_bodies=True)
        assert row.outcome == "upstream_error"
        assert row.status == 502
        assert row.provider == "openai"
        assert json.loads(row.request_body or b"") == CHAT
        assert json.loads(row.response_body or b"") == raw
        still_works_sync(service, fake, ("anthropic",))


# --------------------------------------------------------------------------- upstream reset


async def test_upstream_reset_mid_stream(fake: FakeProvider, recorder: Service) -> None:
    sent = paced_events(3)
    headers = {"x-fake-scenario": "reset", "x-case": "aiohttp"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            recorder.url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
        ) as resp,
    ):
        assert resp.status == 200
        seen = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in resp.content.iter_any():
                seen += data
    assert seen == sent

    # The same on a raw socket: the chunked body has no terminating 0-length chunk.
    body = json.dumps({**CHAT, "stream": True}).encode()
    raw = await raw_request(
        recorder.port,
        "POST",
        "/v1/chat/completions",
        [
            ("Host", "tapewire"),
            ("Content-Type", "application/json"),
            ("x-fake-scenario", "reset"),
            ("x-case", "raw"),
            ("Content-Length", str(len(body))),
        ],
        body,
    )
    assert raw.status == 200
    assert raw.header("transfer-encoding") == "chunked"
    assert not raw.complete
    assert not raw.raw.endswith(b"0\r\n\r\n")
    assert raw.body == sent

    with store_of(recorder) as store:
        for case in ("aiohttp", "raw"):
            row = by_case(store, case)
            assert row.outcome == "upstream_reset", row
            assert row.status == 200
            assert row.response_body == sent
            assert row.error is not None
    await assert_still_works(recorder, fake)


# --------------------------------------------------------------------------- upstream timeout


async def test_upstream_timeout(fake: FakeProvider, tmp_path: Path, db: DbRef) -> None:
    with running(fake, tmp_path, db, read_timeout=0.5) as service:
        hang = {"x-fake-scenario": "hang", "x-fake-delay-ms": "30000"}
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            async with session.post(
                service.url + "/v1/messages", json=MESSAGES, headers={**hang, "x-case": "a"}
            ) as resp:
                assert resp.status == 504
                assert resp.headers["content-type"].startswith("application/json")
                doc = await resp.json()
            assert time.monotonic() - started < 5.0
            assert doc["type"] == "error"
            assert doc["error"]["type"] == "timeout_error"
            assert doc["error"]["message"].startswith("tapewire:")
            assert "anthropic" in doc["error"]["message"]

            async with session.post(
                service.url + "/v1/chat/completions", json=CHAT, headers={**hang, "x-case": "o"}
            ) as resp:
                assert resp.status == 504
                odoc = await resp.json()
            assert set(odoc) == {"error"}
            assert odoc["error"]["message"].startswith("tapewire:")
            assert "openai" in odoc["error"]["message"]
            assert odoc["error"]["code"] == "upstream_timeout"

        # The upstream answers, then stalls mid-stream: the agent's stream is cut short too.
        stall = [
            ("Host", "x"),
            ("x-fake-scenario", "paced"),
            ("x-fake-events", "5"),
            ("x-fake-delay-ms", "3000"),
            ("x-case", "stall"),
        ]
        started = time.monotonic()
        resp = await raw_request(service.port, "GET", "/v1/chat/completions", stall)
        assert time.monotonic() - started < 2.5
        assert resp.status == 200
        assert not resp.complete
        assert resp.body == paced_events(1)

        with store_of(service) as store:
            for case, provider, expected in (("a", "anthropic", doc), ("o", "openai", odoc)):
                row = by_case(store, case)
                assert row.outcome == "timeout"
                assert row.status == 504
                assert row.provider == provider
                assert json.loads(row.response_body or b"") == expected
            row = by_case(store, "stall")
            assert row.outcome == "timeout"
            assert row.status == 200
            assert row.response_body == paced_events(1)
        await assert_still_works(service, fake)


def test_upstream_timeout_openai_sdk(fake: FakeProvider, tmp_path: Path, db: DbRef) -> None:
    with running(fake, tmp_path, db, read_timeout=0.5) as service:
        with (
            openai.OpenAI(base_url=service.url + "/v1", api_key="sk-test", max_retries=0) as client,
            pytest.raises(openai.APIStatusError) as info,
        ):
            client.chat.completions.create(
                **CHAT, extra_headers={"x-fake-scenario": "hang", "x-fake-delay-ms": "30000"}
            )
        assert info.value.status_code == 504
        assert "tapewire" in info.value.message
        with store_of(service) as store:
            (row,) = store.exchanges()
        assert row.outcome == "timeout"
        still_works_sync(service, fake, ("openai", "anthropic"))


# --------------------------------------------------------------------------- bad request bodies

BAD_BODIES: list[tuple[str, str, bytes, list[tuple[str, str]]]] = [
    ("malformed-json", "/v1/messages", b'{"model": "claude", "messages": [', []),
    ("malformed-json-openai", "/v1/chat/completions", b'{"model": gpt, }}', []),
    ("empty", "/v1/chat/completions", b"", []),
    ("non-utf8", "/v1/messages", b'{"text": "caf\xe9 \xff\xfe\x80 \xc3\x28"}\x00\x01', []),
    (
        "wrong-encoding",
        "/v1/chat/completions",
        json.dumps(CHAT).encode(),
        [("Content-Encoding", "gzip")],
    ),
]


@pytest.mark.parametrize(
    ("case", "path", "body", "extra"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_body_forwarded_byte_exact(
    fake: FakeProvider,
    recorder: Service,
    case: str,
    path: str,
    body: bytes,
    extra: list[tuple[str, str]],
) -> None:
    sent = [
        ("Host", f"127.0.0.1:{recorder.port}"),
        ("Content-Type", "application/json"),
        ("x-fake-scenario", "echo"),
        ("x-case", case),
        *extra,
        ("Content-Length", str(len(body))),
    ]
    resp = await raw_request(recorder.port, "POST", path, sent, body)
    assert resp.status == 200
    assert resp.complete
    assert resp.body == body

    (got,) = fake.received
    assert got.method == "POST"
    assert got.raw_path == path
    assert got.body == body
    assert got.headers == upstream_view(sent, fake)

    with store_of(recorder) as store:
        row = by_case(store, case)
    assert row.outcome == "complete"
    assert row.status == 200
    assert row.request_body == body
    assert row.response_body == body
    assert row.request_size == len(body)
    assert row.response_size == len(body)
    assert not row.request_truncated
    assert not row.response_truncated
    assert row.request_headers == sent  # no credentials among them: stored as received
    await assert_still_works(recorder, fake)


async def test_wrong_content_encoding_is_named_in_store(
    fake: FakeProvider, recorder: Service
) -> None:
    body = b"plain text, not gzip at all"
    sent = [
        ("Host", "x"),
        ("Content-Encoding", "gzip"),
        ("x-fake-scenario", "echo"),
        ("Content-Length", str(len(body))),
    ]
    resp = await raw_request(recorder.port, "POST", "/v1/chat/completions", sent, body)
    assert resp.status == 200
    assert resp.body == body
    assert fake.received[0].body == body
    with store_of(recorder) as store:
        (row,) = store.exchanges(with_bodies=True)
        (encoding,) = store.conn.execute(  # type: ignore[attr-defined]
            "SELECT request_encoding FROM exchanges WHERE id = ?", (row.id,)
        ).fetchone()
    assert row.request_body == body
    assert encoding == "gzip"
    await assert_still_works(recorder, fake)


async def test_50mb_body_forwarded_and_stored_byte_exact(
    fake: FakeProvider, recorder: Service
) -> None:
    size = 50 * MB
    body = b"".join(fake_bytes(size))
    digest = sha(body)
    sent = [
        ("Host", "x"),
        ("Content-Type", "application/octet-stream"),
        ("x-fake-scenario", "echo"),
        ("Content-Length", str(size)),
    ]
    resp = await raw_request(recorder.port, "POST", "/v1/chat/completions", sent, body)
    assert resp.status == 200
    assert resp.complete
    assert len(resp.body) == size
    assert sha(resp.body) == digest
    (got,) = fake.received
    assert sha(got.body) == digest
    assert got.headers == upstream_view(sent, fake)
    del resp, got

    with store_of(recorder, timeout=60) as store:
        (row,) = store.exchanges(with_bodies=True)
    assert row.outcome == "complete"
    assert row.request_size == row.response_size == size
    assert not row.request_truncated
    assert not row.response_truncated
    assert sha(row.request_body or b"") == digest
    assert sha(row.response_body or b"") == digest
    await assert_still_works(recorder, fake)


async def test_chunked_request_body_forwarded_byte_exact(
    fake: FakeProvider, recorder: Service
) -> None:
    """A body of unknown length (chunked) streams through; Transfer-Encoding is per hop."""
    pieces = [b'{"model": "m", ', b"\xff\x00 not json", b"", b"tail}"]
    body = b"".join(pieces)
    framing = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
    sent = [
        ("Host", "x"),
        ("x-fake-scenario", "echo"),
        ("Transfer-Encoding", "chunked"),
        ("x-after", "1"),
    ]
    resp = await raw_request(recorder.port, "POST", "/v1/messages", sent, framing)
    assert resp.status == 200
    assert resp.body == body
    (got,) = fake.received
    assert got.body == body
    end_to_end = [(k, v) for k, v in got.headers if k.lower() != "transfer-encoding"]
    assert end_to_end == upstream_view([h for h in sent if h[0] != "Transfer-Encoding"], fake)

    with store_of(recorder) as store:
        (row,) = store.exchanges(with_bodies=True)
    assert row.outcome == "complete"
    assert row.request_body == body
    assert row.request_size == len(body)
    assert row.response_body == body
    await assert_still_works(recorder, fake)


# UTF-8 in a header value, as some agents send titles. (A value that is not UTF-8, a lone
# obs-text byte, is re-encoded by aiohttp's writer: a known difference, in the README.)
NON_ASCII = {"utf-8": "café ✓".encode()}


@pytest.mark.parametrize("charset", list(NON_ASCII))
async def test_non_ascii_request_header_bytes_forwarded_unchanged(
    fake: FakeProvider, recorder: Service, charset: str
) -> None:
    """Header values are bytes (RFC 9110 obs-text allows 0x80-0xFF): whatever the agent put
    there must reach the upstream as it was, not re-encoded."""
    value = NON_ASCII[charset]
    body = b"{}"
    sent = [
        ("Host", "x"),
        ("x-fake-scenario", "echo"),
        ("x-title", value.decode("latin-1")),  # raw_request writes headers as latin-1: bytes
        ("Content-Length", str(len(body))),
    ]
    resp = await raw_request(recorder.port, "POST", "/v1/chat/completions", sent, body)
    assert resp.status == 200
    assert resp.body == body
    await assert_still_works(recorder, fake)
    got = fake.received[0]
    # Received decodes the raw bytes as latin-1, so encoding back gives the wire bytes.
    assert [v.encode("latin-1") for v in header_values(got.headers, "x-title")] == [value]
    assert got.headers == upstream_view(sent, fake)


async def test_non_ascii_response_header_bytes_forwarded_unchanged(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    """The same for a response header: the agent gets the upstream's bytes."""
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-title: "
        + NON_ASCII["utf-8"]
        + b"\r\nContent-Length: 2\r\n\r\n{}"
    )

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        lines = request.lower().split(b"\r\n")
        sizes = [int(x.split(b":")[1]) for x in lines if x.startswith(b"content-length:")]
        await reader.readexactly(sizes[0] if sizes else 0)
        writer.write(head)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstreams = [f"anthropic={fake.url}", f"openai={fake.url}", f"raw=http://127.0.0.1:{port}"]
    try:
        with running(fake, tmp_path, db, upstreams=upstreams) as service:
            resp = await raw_request(
                service.port, "GET", "/u/raw/v1/models", [("Host", "x"), ("Connection", "close")]
            )
            assert resp.status == 200
            assert resp.body == b"{}"
            await assert_still_works(service, fake)
            got = {k.lower(): v.encode("latin-1") for k, v in resp.headers}
            assert got["x-title"] == NON_ASCII["utf-8"]
    finally:
        server.close()
        await server.wait_closed()


# --------------------------------------------------------------------------- routing failures


async def test_unknown_path_goes_to_default_upstream(fake: FakeProvider, recorder: Service) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(recorder.url + "/foo/bar?x=1", headers={"x-case": "unknown"}) as resp,
    ):
        assert resp.status == 404
        assert await resp.json() == {"error": "not found"}
    (got,) = fake.received
    assert got.method == "GET"
    assert got.raw_path == "/foo/bar?x=1"

    with store_of(recorder) as store:
        row = by_case(store, "unknown")
    assert row.provider is None
    assert row.upstream == "openai"
    assert row.upstream_url == fake.url + "/foo/bar?x=1"
    assert row.path == "/foo/bar?x=1"
    assert row.status == 404
    assert row.outcome == "complete"
    assert json.loads(row.response_body or b"") == {"error": "not found"}
    await assert_still_works(recorder, fake)


async def test_unknown_upstream_name(fake: FakeProvider, recorder: Service) -> None:
    body = json.dumps(CHAT).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            recorder.url + "/u/nope/v1/chat/completions",
            data=body,
            headers={"Content-Type": "application/json", "x-case": "nope"},
        ) as resp,
    ):
        assert resp.status == 502
        doc = await resp.json()
    message = doc["error"]["message"]
    assert message.startswith("tapewire:")
    assert "'nope'" in message
    assert "--upstream nope=URL" in message
    assert fake.received == []
    await assert_still_works(recorder, fake)

    with store_of(recorder) as store:
        row = by_case(store, "nope")
    assert row.outcome == "upstream_error"
    assert row.status == 502
    assert row.path == "/u/nope/v1/chat/completions"
    assert row.error is not None
    assert "--upstream" in row.error
    assert json.loads(row.response_body or b"") == doc
    # Raw is the truth: the request the agent sent is kept as it crossed the wire.
    assert row.request_size == len(body)
    assert row.request_body == body


# --------------------------------------------------------------------------- headers


async def test_repeated_request_headers_arrive_in_order(
    fake: FakeProvider, recorder: Service
) -> None:
    body = json.dumps(CHAT).encode()
    sent = [
        ("Host", "x"),
        ("x-multi", "first"),
        ("Content-Type", "application/json"),
        ("x-multi", "second"),
        ("Content-Length", str(len(body))),
    ]
    resp = await raw_request(recorder.port, "POST", "/v1/chat/completions", sent, body)
    assert resp.status == 200
    (got,) = fake.received
    assert got.headers == upstream_view(sent, fake)
    assert header_values(got.headers, "x-multi") == ["first", "second"]

    # aiohttp with a list of pairs: the same.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            recorder.url + "/v1/chat/completions",
            json=CHAT,
            headers=[("x-multi", "a"), ("x-multi", "b")],  # type: ignore[arg-type]
        ) as r2,
    ):
        assert r2.status == 200
    assert header_values(fake.received[1].headers, "x-multi") == ["a", "b"]

    with store_of(recorder) as store:
        rows = store.exchanges()
    values = sorted(header_values(r.request_headers, "x-multi") for r in rows)
    assert values == [["a", "b"], ["first", "second"]]
    await assert_still_works(recorder, fake)


async def test_repeated_request_headers_differing_in_case(
    fake: FakeProvider, recorder: Service
) -> None:
    """HTTP header names are case-insensitive: `X-Multi` repeats `x-multi`, and every value
    must still reach the upstream, in order. (aiohttp's client collapses repeats spelt
    differently, so tapewire spells them all like the first.)"""
    body = json.dumps(CHAT).encode()
    sent = [
        ("Host", "x"),
        ("X-Multi", "first"),
        ("Content-Type", "application/json"),
        ("x-multi", "second"),
        ("X-MULTI", "third"),
        ("Content-Length", str(len(body))),
    ]
    resp = await raw_request(recorder.port, "POST", "/v1/chat/completions", sent, body)
    assert resp.status == 200
    await assert_still_works(recorder, fake)
    got = fake.received[0]
    assert header_values(got.headers, "x-multi") == ["first", "second", "third"]
    assert [(k.lower(), v) for k, v in got.headers] == [
        (k.lower(), v) for k, v in upstream_view(sent, fake)
    ]


async def test_repeated_response_headers_stay_repeated(
    fake: FakeProvider, recorder: Service
) -> None:
    headers = {"x-fake-scenario": "repeat-headers"}
    async with aiohttp.ClientSession() as session:
        async with session.get(fake.url + "/h", headers=headers) as direct:
            direct_headers = [(k.decode(), v.decode()) for k, v in direct.raw_headers]
            direct_body = await direct.read()
        async with session.get(recorder.url + "/h", headers=headers) as proxied:
            proxied_headers = [(k.decode(), v.decode()) for k, v in proxied.raw_headers]
            proxied_body = await proxied.read()
    assert proxied_body == direct_body
    assert header_values(proxied_headers, "set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert header_values(proxied_headers, "x-repeat") == ["a", "b"]
    # The whole head as the upstream sent it, in order (Date may tick between the two).
    assert [(k, v) for k, v in proxied_headers if k != "Date"] == [
        (k, v) for k, v in direct_headers if k != "Date"
    ]

    with store_of(recorder) as store:
        (row,) = store.exchanges()
    assert header_values(row.response_headers, "x-repeat") == ["a", "b"]
    assert len(header_values(row.response_headers, "set-cookie")) == 2  # values kept out
    await assert_still_works(recorder, fake)


async def test_hop_by_hop_headers_not_forwarded(fake: FakeProvider, recorder: Service) -> None:
    body = json.dumps(CHAT).encode()
    sent = [
        ("Host", "x"),
        ("Connection", "x-drop-me"),
        ("X-Keep-1", "one"),
        ("X-Drop-Me", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Content-Type", "application/json"),
        ("TE", "trailers"),
        ("X-Keep-2", "two"),
        ("Content-Length", str(len(body))),
    ]
    resp = await raw_request(recorder.port, "POST", "/v1/chat/completions", sent, body)
    assert resp.status == 200
    assert json.loads(resp.body)["choices"][0]["message"]["content"] == TEXT
    (got,) = fake.received
    hop = {"connection", "x-drop-me", "keep-alive", "te"}
    assert got.headers == upstream_view([(k, v) for k, v in sent if k.lower() not in hop], fake)
    assert got.body == body
    await assert_still_works(recorder, fake)


# --------------------------------------------------------------------------- compression


async def test_gzip_response_stays_compressed(fake: FakeProvider, recorder: Service) -> None:
    headers = {"x-fake-scenario": "gzip", "Accept-Encoding": "gzip"}
    body = {**CHAT, "stream": True}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(
            fake.url + "/v1/chat/completions", json=body, headers=headers
        ) as direct:
            direct_bytes = await direct.read()
        async with session.post(
            recorder.url + "/v1/chat/completions", json=body, headers=headers
        ) as proxied:
            assert proxied.status == 200
            assert proxied.headers["Content-Encoding"] == "gzip"
            proxied_bytes = await proxied.read()
    assert proxied_bytes == direct_bytes
    assert proxied_bytes[:2] == b"\x1f\x8b"
    text = gzip.decompress(proxied_bytes)
    assert text.endswith(b"data: [DONE]\n\n")
    assert len(fake.received) == 2
    assert header_values(fake.received[1].headers, "accept-encoding") == ["gzip"]

    with store_of(recorder) as store:
        (row,) = store.exchanges(with_bodies=True)
        (encoding,) = store.conn.execute(  # type: ignore[attr-defined]
            "SELECT response_encoding FROM exchanges WHERE id = ?", (row.id,)
        ).fetchone()
    assert row.response_body == direct_bytes
    assert header_values(row.response_headers, "content-encoding") == ["gzip"]
    assert encoding == "gzip"
    assert row.outcome == "complete"
    await assert_still_works(recorder, fake)


# --------------------------------------------------------------------------- memory cap


async def test_capture_cap_truncates_record_not_traffic(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    cap = 1 * MB
    size = 5 * MB
    body = b"".join(fake_bytes(size))
    with running(fake, tmp_path, db, exchange_cap=cap) as service:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                service.url + "/v1/chat/completions",
                data=io.BytesIO(body),
                headers={"x-fake-scenario": "echo", "Content-Type": "application/octet-stream"},
            ) as resp,
        ):
            assert resp.status == 200
            echoed = await resp.read()
        assert sha(echoed) == sha(body)
        assert sha(fake.received[0].body) == sha(body)
        assert service.recorder.status()["drops"] == {"truncated": 2}  # request and response

        with store_of(service) as store:
            (row,) = store.exchanges(with_bodies=True)
            drops = store.counts()["drops"]
        assert row.outcome == "complete"
        assert row.request_truncated
        assert row.response_truncated
        assert row.request_size == row.response_size == size
        for kept in (row.request_body or b"", row.response_body or b""):
            assert 0 < len(kept) <= cap
            assert body.startswith(kept)
        assert drops["truncated"]["count"] == 2
        await assert_still_works(service, fake)
        assert service.recorder.inflight_bytes == 0


# --------------------------------------------------------------------------- store unwritable


# SQLite only: about the database's own folder made read-only (PostgreSQL has no file here).
async def test_store_read_only_keeps_traffic_and_backlog(
    fake: FakeProvider, tmp_path: Path
) -> None:
    dbdir = tmp_path / "db"
    dbdir.mkdir()
    db = dbdir / "tapewire.db"
    open_store(db).close()  # the database exists beforehand
    journal = tmp_path / "journal"
    readonly = ReadOnly(dbdir)
    try:
        readonly.apply()
    except OSError as e:
        pytest.skip(f"cannot make a directory read-only here: {e}")
    try:
        with running(fake, tmp_path, db, journal=journal) as service:
            async with aiohttp.ClientSession() as session:
                for _ in range(3):
                    async with session.post(service.url + "/v1/chat/completions", json=CHAT) as r:
                        assert r.status == 200
                        assert (await r.json())["choices"][0]["message"]["content"] == TEXT
            await poll(
                lambda: service.ingester.status()["last_error"] is not None,
                5.0,
                "the ingester to report the store error",
            )
            ingest = service.ingester.status()
            assert ingest["backlog_bytes"] > 0
            assert ingest["ingested_records"] == 0

            report = await tapewire_status(db, journal)
            assert report["journal_backlog_bytes"] > 0
            live = report["serving"]
            assert live is not None
            assert "unreachable" not in live
            assert live["ingest"]["last_error"]
            assert live["ingest"]["backlog_bytes"] > 0
            assert live["capture"]["exchanges"] == 3
            human = (
                await asyncio.to_thread(
                    subprocess.run,
                    [TAPEWIRE, "status", "--db", str(db), "--journal", str(journal)],
                    capture_output=True, text=True, timeout=30, check=True,
                )
            ).stdout  # fmt: skip
            assert "ingest failing" in human  # with the store's own error after it
            assert "exchanges  0" in human  # the read-only store is still read

            readonly.release()  # writable again: the ingester drains
            with store_of(service, timeout=15) as store:
                rows = store.exchanges()
            assert len(rows) == 3
            assert {r.outcome for r in rows} == {"complete"}
            assert service.ingester.status()["backlog_bytes"] == 0
            await assert_still_works(service, fake)
        report = await tapewire_status(db, journal)
        assert report["store"]["exchanges"] == 5
        assert report["journal_backlog_bytes"] == 0
    finally:
        readonly.release()


# --------------------------------------------------------------------------- full disk


@pytest.fixture
def full_journal(tmp_path: Path) -> Iterator[Path]:
    try:
        with tiny_tmpfs(tmp_path / "journal", "256k") as directory:
            yield directory
    except PermissionError as e:
        pytest.skip(f"needs a tiny tmpfs for the journal: {e}")


async def test_full_disk_traffic_succeeds_drops_counted(
    fake: FakeProvider, tmp_path: Path, db: DbRef, full_journal: Path
) -> None:
    """The journal's disk is full (the store's is not: it is on either backend)."""
    with running(fake, tmp_path, db, journal=full_journal) as service:
        async with aiohttp.ClientSession() as session:
            for i in range(12):
                body = bytes([i]) * (40 * 1024)
                async with session.post(
                    service.url + "/v1/chat/completions",
                    data=body,
                    headers={"x-fake-scenario": "echo", "Content-Type": "application/octet-stream"},
                ) as resp:
                    assert resp.status == 200
                    assert await resp.read() == body, f"request {i}"
            assert len(fake.received) == 12

            drops = service.recorder.status()["drops"]
            assert drops.get("journal_write_failed", 0) > 0, drops

            async with session.get(service.url + "/_tapewire/status") as resp:
                live = await resp.json()
            assert live["capture"]["drops"]["journal_write_failed"] > 0
            assert live["capture"]["last_drop"]["reason"] == "journal_write_failed"

        report = await tapewire_status(db, full_journal)
        assert report["serving"] is not None
        assert "unreachable" not in report["serving"]
        assert report["drops"]["journal_write_failed"] > 0
        await assert_still_works(service, fake)
