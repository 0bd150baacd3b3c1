"""`tapewire run` configures Codex for the login it finds in its auth.json: a ChatGPT login
goes to the ChatGPT backend's path (routed to the `chatgpt` upstream), an API key to /v1. A
stand-in `codex` (a script of that name) prints what it was given and makes the request Codex
would, with the openai SDK; no real Codex is needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fakeprovider import FakeProvider
from tapewire.cli.codex import codex_login
from tapewire.query import resolve_session
from tapewire.store import open_store
from tapewire.store.location import DbRef

ACCESS_TOKEN = "eyJ-chatgpt-access-token-SECRET"
ACCOUNT = "acct-SECRET-123"

FAKE_CODEX = f"""#!{sys.executable}
import json, os, sys
import openai
if sys.argv[1:] == ["--version"]:
    print("codex-cli 0.0.0-fake")
    sys.exit(0)
base = os.environ["OPENAI_BASE_URL"]
headers = {{"chatgpt-account-id": "{ACCOUNT}", "originator": "codex_cli_rs"}}
with openai.OpenAI(base_url=base, api_key="{ACCESS_TOKEN}", default_headers=headers) as client:
    client.responses.create(model="gpt-5-codex", input="hi")
print(json.dumps({{"argv": sys.argv[1:], "base": base}}))
"""


def _codex(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "codex"
    script.write_text(FAKE_CODEX)
    script.chmod(0o755)
    return script


def _auth(home: Path, auth: dict[str, Any]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "auth.json").write_text(json.dumps(auth))


CHATGPT_AUTH = {
    "OPENAI_API_KEY": None,
    "tokens": {"id_token": "x", "access_token": ACCESS_TOKEN, "refresh_token": "r",
               "account_id": ACCOUNT},
    "last_refresh": "2026-01-01T00:00:00Z",
}  # fmt: skip


def _run(
    tmp_path: Path, db: DbRef, fake: FakeProvider, codex: Path, env: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    upstreams = [f"--upstream={n}={fake.url}" for n in ("openai", "chatgpt")]
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("OPENAI_", "CODEX_", "ANTHROPIC_"))}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "tapewire", "run", "--db", str(db), *upstreams,
         "--", str(codex), "exec", "hi"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env={**base, **env},
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session = done.stderr.strip().splitlines()[-1].split()[2]
    return session, json.loads(done.stdout.strip().splitlines()[-1])


def test_chatgpt_login_goes_to_the_chatgpt_backend(
    fake: FakeProvider, tmp_path: Path, db: DbRef
) -> None:
    home = tmp_path / "home"
    _auth(home / ".codex", CHATGPT_AUTH)
    session, seen = _run(tmp_path, db, fake, _codex(tmp_path), {"HOME": str(home)})

    proxy = seen["base"].split("/s/")[0]
    assert seen["base"] == f"{proxy}/s/{session}/backend-api/codex"
    assert seen["argv"] == [
        "-c", f'openai_base_url="{proxy}/s/{session}/backend-api/codex"',
        "-c", f'chatgpt_base_url="{proxy}/s/{session}/backend-api/"',
        "exec", "hi",
    ]  # fmt: skip
    # The ChatGPT backend got the request as Codex sent it, tokens included.
    (sent,) = [r for r in fake.received if r.method == "POST"]
    assert sent.raw_path == "/backend-api/codex/responses"
    assert ("authorization", f"Bearer {ACCESS_TOKEN}") in sent.headers
    assert ("chatgpt-account-id", ACCOUNT) in sent.headers

    store = open_store(db)
    try:
        (row,) = [r for r in store.exchanges() if r.method == "POST"]
        assert (row.upstream, row.provider, row.session) == ("chatgpt", "openai", session)
        assert row.upstream_url == f"{fake.url}/backend-api/codex/responses"
        stored = json.dumps([row.request_headers, row.path, row.upstream_url])
        assert ACCESS_TOKEN not in stored and ACCOUNT not in stored
        (turn,) = store.turn_rows(resolve_session(store, session))
        assert (turn["api"], turn["model"], turn["error"]) == ("openai.responses", "gpt-5-codex",
                                                              None)  # fmt: skip
        ctx = store.run_context(session)
    finally:
        store.close()
    assert ctx is not None
    assert ctx["agent"] == "codex" and ctx["agent_login"] == "chatgpt"
    assert ctx["args_added_by_tapewire"] == seen["argv"][:4]


def test_api_key_login_goes_to_v1(fake: FakeProvider, tmp_path: Path, db: DbRef) -> None:
    home = tmp_path / "codex-home"
    _auth(home, {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-test"})
    session, seen = _run(tmp_path, db, fake, _codex(tmp_path), {"CODEX_HOME": str(home)})
    proxy = seen["base"].split("/s/")[0]
    assert seen["base"] == f"{proxy}/s/{session}/v1"
    assert seen["argv"] == ["-c", f'openai_base_url="{proxy}/s/{session}/v1"', "exec", "hi"]
    (sent,) = [r for r in fake.received if r.method == "POST"]
    assert sent.raw_path == "/v1/responses"
    store = open_store(db)
    try:
        (row,) = [r for r in store.exchanges() if r.method == "POST"]
        assert (row.upstream, row.provider, row.session) == ("openai", "openai", session)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("auth", "login"),
    [
        (CHATGPT_AUTH, "chatgpt"),
        ({**CHATGPT_AUTH, "auth_mode": "chatgpt"}, "chatgpt"),
        ({"auth_mode": "chatgptAuthTokens", "tokens": {}}, "chatgpt"),
        ({"OPENAI_API_KEY": "sk-x"}, "apikey"),
        ({"OPENAI_API_KEY": "sk-x", "tokens": {"access_token": "t"}}, "apikey"),
        ({"OPENAI_API_KEY": None}, None),
        ([], None),
    ],
)
def test_codex_login(tmp_path: Path, auth: Any, login: str | None) -> None:
    (tmp_path / "auth.json").write_text(json.dumps(auth))
    assert codex_login(tmp_path) == login


def test_codex_login_without_a_file(tmp_path: Path) -> None:
    assert codex_login(tmp_path) is None
    (tmp_path / "auth.json").write_text("{not json")
    assert codex_login(tmp_path) is None
