"""`tapewire run -- COMMAND`: the child's traffic becomes one session, with the run's context."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fakeprovider import FakeProvider
from servecli import ServeProcess
from tapewire.store import open_store
from tapewire.store.location import DbRef

# A child agent: one call with each SDK, through whatever the environment points it at.
SDK_CALLS = """
import os, sys
import anthropic, openai
with openai.OpenAI(api_key="sk-child") as client:
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
with anthropic.Anthropic(api_key="sk-child") as client:
    client.messages.create(model="claude-test", max_tokens=8,
                           messages=[{"role": "user", "content": "hi"}])
"""
AGENT = (
    SDK_CALLS
    + """print("base", os.environ["OPENAI_BASE_URL"])
sys.exit(3)
"""
)


def _git_repo(path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)

    git("init", "-q", "-b", "feature/recording")
    git("config", "user.email", "t@example.invalid")
    git("config", "user.name", "t")
    (path / "CLAUDE.md").write_text("# Project memory\nAlways run the tests.\n")
    (path / "agent.py").write_text(AGENT)
    git("add", ".")
    git("commit", "-q", "-m", "init")
    git("remote", "add", "origin", "https://user:ghp_notarealtoken@example.invalid/team/repo.git")
    (path / "dirty.txt").write_text("uncommitted\n")


def _run(cwd: Path, db: DbRef, fake: FakeProvider, *extra: str) -> subprocess.CompletedProcess[str]:
    upstreams = [f"--upstream={n}={fake.url}" for n in ("anthropic", "openai")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    return subprocess.run(
        [sys.executable, "-m", "tapewire", "run", "--db", str(db), *upstreams, *extra,
         "--", sys.executable, "agent.py"],
        cwd=cwd, capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip


def test_run_records_session_and_context(fake: FakeProvider, tmp_path: Path, db: DbRef) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git_repo(repo)
    done = _run(repo, db, fake)
    assert done.returncode == 3, done.stderr  # the child's exit code
    session = done.stderr.strip().splitlines()[-1].split()[2]
    assert f"/s/{session}/v1" in done.stdout

    store = open_store(db)
    rows = store.exchanges()
    assert {r.session for r in rows} == {session}
    assert {r.provider for r in rows} == {"anthropic", "openai"}
    assert {r.outcome for r in rows} == {"complete"}
    # The provider saw plain paths: the session prefix is tapewire's alone.
    assert {r.raw_path for r in fake.received} == {"/v1/chat/completions", "/v1/messages"}

    ctx = store.run_context(session)
    store.close()
    assert ctx is not None
    assert ctx["command"] == [sys.executable, "agent.py"]
    assert ctx["cwd"] == str(repo)
    assert ctx["exit_code"] == 3
    assert ctx["ended_at"] >= ctx["started_at"]
    git = ctx["git"]
    assert git["branch"] == "feature/recording"
    assert len(git["head"]) == 40
    assert git["changed_files"] == 1
    assert git["remote"] == "https://example.invalid/team/repo.git"  # the token is not kept
    assert "OPENAI_BASE_URL" in ctx["env_set_by_tapewire"]
    assert "PATH" in ctx["env_names"]
    assert not any("=" in name for name in ctx["env_names"])  # names only, never values
    (memory,) = ctx["memory_files"]
    assert memory["path"] == "CLAUDE.md"
    assert "Always run the tests." in memory["content"]
    assert ctx["os"]["system"]


def test_run_uses_a_running_serve(fake: FakeProvider, tmp_path: Path, db: DbRef) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "agent.py").write_text(AGENT)
    with ServeProcess(db, fake.url) as serve:
        done = _run(repo, db, fake)
        assert done.returncode == 3, done.stderr
        assert serve.url + "/s/" in done.stdout
        serve.terminate()
    session = done.stderr.strip().splitlines()[-1].split()[2]
    store = open_store(db)
    assert len([r for r in store.exchanges() if r.session == session]) == 2
    ctx = store.run_context(session)
    store.close()
    assert ctx is not None and ctx["git"] is None and ctx["exit_code"] == 3


def test_run_reports_a_missing_command(fake: FakeProvider, db: DbRef) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tapewire", "run", "--db", str(db), "--",
         "no-such-agent-xyz"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "cannot run no-such-agent-xyz" in done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(
        subprocess.run(
            [sys.executable, "-m", "tapewire", "status", "--db", str(db), "--json"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert report["store"]["exchanges"] == 0
