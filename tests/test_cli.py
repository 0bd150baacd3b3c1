"""The command line's answers to bad input: a clear message, a non-zero exit, no traceback,
nothing left running."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Databases
from tapewire.store.location import DbRef


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
def test_serve_rejects_bad_settings(db: DbRef, args: list[str], message: str) -> None:
    done = _tapewire("serve", "--db", str(db), *args)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_on_a_taken_port_says_so_and_leaves_nothing_behind(db: DbRef, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _tapewire(
            "serve", "--db", str(db), "--journal", str(journal), "--listen", f"127.0.0.1:{port}"
        )
    assert done.returncode == 1
    assert "cannot listen on 127.0.0.1" in done.stderr
    assert "Traceback" not in done.stderr and "Unclosed" not in done.stderr
    assert journal.is_dir()  # it got as far as the journal,
    assert not (journal / "serve.json").exists()  # and left no state behind


def test_a_second_serve_on_the_same_journal_is_refused(db: DbRef) -> None:
    from servecli import ServeProcess

    with ServeProcess(db, "http://127.0.0.1:9"):  # the journal where serve puts it by default
        done = _tapewire("serve", "--db", str(db), "--listen", "127.0.0.1:0")
    assert done.returncode == 1
    assert "in use by another tapewire process" in done.stderr


def test_reading_commands_without_a_database(dbs: Databases) -> None:
    none = str(dbs.new("none"))  # no file; for PostgreSQL, a schema without tapewire's tables
    done = _tapewire("exchanges", "--db", none)
    assert done.returncode == 1
    assert "nothing recorded yet" in done.stderr
    assert "Traceback" not in done.stderr
    status = _tapewire("status", "--db", none)
    assert status.returncode == 0
    assert "nothing recorded yet" in status.stdout
    assert "not running" in status.stdout
