"""The command line's answers to bad input: a clear message, a non-zero exit, no traceback,
nothing left running."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _tapewire(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapewire", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--upstream", "nourl"], "--upstream wants NAME=URL"),
        (["--upstream", "x=ftp://h"], "is not an http(s) URL"),
        (["--redact-pattern", "("], "invalid redaction pattern '('"),
        (["--listen", "0.0.0.0:0"], "without --token"),
        (["--listen", "nonsense:port"], "is not HOST:PORT"),
    ],
)
def test_serve_rejects_bad_settings(tmp_path: Path, args: list[str], message: str) -> None:
    done = _tapewire("serve", "--db", str(tmp_path / "t.db"), *args)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_on_a_taken_port_says_so_and_leaves_nothing_behind(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _tapewire("serve", "--db", str(tmp_path / "t.db"), "--listen", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert "cannot listen on 127.0.0.1" in done.stderr
    assert "Traceback" not in done.stderr and "Unclosed" not in done.stderr
    assert not (tmp_path / "t.db.journal" / "serve.json").exists()


def test_a_second_serve_on_the_same_journal_is_refused(tmp_path: Path) -> None:
    from servecli import ServeProcess

    with ServeProcess(tmp_path / "t.db", "http://127.0.0.1:9"):
        done = _tapewire("serve", "--db", str(tmp_path / "t.db"), "--listen", "127.0.0.1:0")
    assert done.returncode == 1
    assert "in use by another tapewire process" in done.stderr


def test_reading_commands_without_a_database(tmp_path: Path) -> None:
    done = _tapewire("exchanges", "--db", str(tmp_path / "none.db"))
    assert done.returncode == 1
    assert "nothing recorded yet" in done.stderr
    status = _tapewire("status", "--db", str(tmp_path / "none.db"))
    assert status.returncode == 0
    assert "nothing recorded yet" in status.stdout
    assert "not running" in status.stdout
