"""Claude Code with a subscription login sends an OAuth access token as `Authorization: Bearer`
with `anthropic-beta: oauth-…`, not an `x-api-key`. Through tapewire (the real anthropic SDK
with `auth_token=`, as Claude Code's own client does): both reach the upstream unchanged, the
token reaches no stored exchange and no journal file, and the turn is derived as usual."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic

from conftest import stored
from fakeprovider import TEXT, FakeProvider
from tapewire.query import resolve_session
from tapewire.service import Service

TOKEN = "sk-ant-oat01-SECRET-oauth-access-token"
BETA = "oauth-2025-04-20"


def test_oauth_bearer_forwarded_never_stored(recorder: Service, fake: FakeProvider) -> None:
    with anthropic.Anthropic(
        base_url=f"{recorder.url}/s/claude-sub", auth_token=TOKEN,
        default_headers={"anthropic-beta": BETA},
    ) as client:  # fmt: skip
        message = client.messages.create(
            model="claude-sonnet-4-5", max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
        )  # fmt: skip
        assert message.content[0].type == "text" and message.content[0].text == TEXT
        with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=64,
            messages=[{"role": "user", "content": "hi again"}],
        ) as events:  # fmt: skip
            assert events.get_final_text() == TEXT

    sent = [r for r in fake.received if r.raw_path.startswith("/v1/messages")]
    assert len(sent) == 2
    for request in sent:
        headers = {k.lower(): v for k, v in request.headers}
        assert headers["authorization"] == f"Bearer {TOKEN}"
        assert headers["anthropic-beta"] == BETA
        assert "x-api-key" not in headers

    store = stored(recorder)
    try:
        rows = store.exchanges(limit=10, with_bodies=True)
        assert len(rows) == 2 and {r.provider for r in rows} == {"anthropic"}
        for row in rows:
            assert ("authorization", "") in [(k.lower(), v) for k, v in row.request_headers]
            assert ("anthropic-beta", BETA) in row.request_headers  # not a secret: kept
            assert TOKEN not in json.dumps([row.path, row.upstream_url, row.request_headers,
                                            row.response_headers])  # fmt: skip
            assert TOKEN.encode() not in (row.request_body or b"") + (row.response_body or b"")
        turns = store.turn_rows(resolve_session(store, "claude-sub"))
        assert [(t["api"], t["error"]) for t in turns] == [("anthropic.messages", None)] * 2
    finally:
        store.close()
    journal = Path(recorder.settings.journal)
    files = [journal] if journal.is_file() else [p for p in journal.rglob("*") if p.is_file()]
    assert files and all(TOKEN.encode() not in p.read_bytes() for p in files)
