"""Secrets in bodies reach the upstream intact and are stored redacted; credentials in headers
are forwarded and never stored."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import aiohttp

from conftest import settings_for, stored
from fakeprovider import FakeProvider
from tapewire.service import Service, ServiceThread
from tapewire.store.location import DbRef

# Built from pieces so this file holds no key-shaped literal.
ANTHROPIC_KEY = "sk-ant-api03-" + "Zq3" * 30 + "AA"
AWS_KEY = "AKIA" + "Q7RT3VXZ2PLM9KDW"
ENV_FILE = f"ANTHROPIC_API_KEY={ANTHROPIC_KEY}\nAWS_ACCESS_KEY_ID={AWS_KEY}\nDEBUG=1\n"


def _body() -> bytes:
    return json.dumps({
        "model": "claude-test",
        "max_tokens": 16,
        "messages": [
            {"role": "user", "content": "Read .env"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {"path": ".env"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": ENV_FILE}]},
        ],
    }).encode()  # fmt: skip


async def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/messages", data=body, headers=headers or {}) as resp:
            assert resp.status == 200
            return await resp.read()


async def test_secret_in_body_is_forwarded_intact_and_stored_redacted(
    fake: FakeProvider, recorder: Service
) -> None:
    body = _body()
    await _post(recorder.url, body)
    assert fake.received[-1].body == body  # the upstream needs the real bytes
    (row,) = stored(recorder).exchanges(with_bodies=True)
    assert row.request_body is not None
    assert ANTHROPIC_KEY.encode() not in row.request_body
    assert AWS_KEY.encode() not in row.request_body
    assert row.redactions == 2
    stored_doc = json.loads(row.request_body)  # still valid JSON
    assert "[REDACTED:" in stored_doc["messages"][2]["content"][0]["content"]
    assert "DEBUG=1" in stored_doc["messages"][2]["content"][0]["content"]
    # The hash of the body as it crossed the wire is kept, to prove what was sent.
    assert row.request_sha256 == hashlib.sha256(body).hexdigest()


async def test_secret_in_a_compressed_body_is_redacted(
    fake: FakeProvider, recorder: Service
) -> None:
    """A gzip-encoded request body (and its echo): forwarded compressed, stored decoded and
    redacted, since compressed bytes cannot be scanned."""
    payload = gzip.compress(f"data: {json.dumps({'text': ENV_FILE})}\n\n".encode())
    headers = {"x-fake-scenario": "echo"}
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.post(
            recorder.url + "/v1/messages",
            data=payload,
            headers={**headers, "Content-Encoding": "gzip"},
        ) as resp,
    ):
        assert await resp.read() == payload  # forwarded as the upstream sent it
    (row,) = stored(recorder).exchanges(with_bodies=True)
    assert row.redactions >= 2
    assert row.request_body is not None and ANTHROPIC_KEY.encode() not in row.request_body
    assert b"DEBUG=1" in row.request_body  # decoded to be scanned, kept decoded
    assert row.request_encoding == "identity"  # and the record says so,
    assert ("Content-Encoding", "gzip") in row.request_headers  # beside what was sent


async def test_no_redact_keeps_bodies_whole(fake: FakeProvider, tmp_path: Path, db: DbRef) -> None:
    with ServiceThread(settings_for(fake, tmp_path, db=db, redact=False)) as service:
        await _post(service.url, _body())
        (row,) = stored(service).exchanges(with_bodies=True)
    assert row.request_body == _body()
    assert row.redactions == 0


async def test_custom_pattern_and_credential_header(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    settings = settings_for(
        fake, tmp_path, db=db, redact_patterns=[r"internal-id-(\d+)"],
        extra_credential_headers=["x-team-secret"],
    )  # fmt: skip
    body = json.dumps({"messages": [{"role": "user", "content": "internal-id-48213"}]}).encode()
    with ServiceThread(settings) as service:
        await _post(service.url, body, {"x-team-secret": "hunter2-team", "x-api-key": "sk-x-9"})
        (row,) = stored(service).exchanges(with_bodies=True)
    upstream = dict(fake.received[-1].headers)
    assert upstream["x-team-secret"] == "hunter2-team"  # forwarded
    assert upstream["x-api-key"] == "sk-x-9"
    assert ("x-team-secret", "") in row.request_headers  # never stored
    assert ("x-api-key", "") in row.request_headers
    assert row.request_body is not None and b"48213" not in row.request_body
    assert b"internal-id-[REDACTED:custom-1]" in row.request_body


async def test_a_conversation_is_redacted_turn_after_turn(
    fake: FakeProvider, recorder: Service
) -> None:
    """Bodies grow turn by turn and are scanned only past what an earlier clean turn held:
    a secret arriving late, then resent in the old part, is caught each time."""
    messages: list[dict[str, str]] = [{"role": "user", "content": "hello " * 5000}]
    tools = [{"name": f"tool{i}", "description": "does things " * 300} for i in range(10)]

    def body() -> bytes:  # Claude Code's shape: messages first, then what never changes
        return json.dumps({"model": "m", "messages": messages, "tools": tools}).encode()

    headers = {"x-tapewire-session": "conv-1"}
    await _post(recorder.url, body(), headers)  # clean
    messages.append({"role": "user", "content": "no secret here " * 100})
    await _post(recorder.url, body(), headers)  # clean, grows
    messages.append({"role": "user", "content": f"key: {ANTHROPIC_KEY}"})
    await _post(recorder.url, body(), headers)  # the secret in the new part
    messages.append({"role": "assistant", "content": "ok"})
    await _post(recorder.url, body(), headers)  # resent in the old part
    rows = sorted(stored(recorder).exchanges(with_bodies=True), key=lambda r: r.started_at)
    assert [r.redactions for r in rows] == [0, 0, 1, 1]
    for row in rows:
        assert row.request_body is not None and ANTHROPIC_KEY.encode() not in row.request_body
    assert [r.session for r in rows] == ["conv-1"] * 4
