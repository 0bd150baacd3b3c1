"""`tapewire serve` as a separate process, the way a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tapewire.store import location
from tapewire.store.location import DbRef


class ServeProcess:
    """journal: where serve keeps it (--journal); default, where serve puts it by itself (beside
    a SQLite file, under XDG_DATA_HOME for PostgreSQL). The log: beside a SQLite file, else
    beside the journal."""

    def __init__(
        self,
        db: DbRef,
        upstream_url: str,
        *extra: str,
        log: Path | None = None,
        journal: Path | None = None,
    ) -> None:
        self.db = db
        self.journal = journal or location.default_journal(db)
        self.log = log or (
            db.with_suffix(".log") if isinstance(db, Path) else Path(f"{self.journal}.log")
        )
        self.args = [
            sys.executable, "-m", "tapewire", "serve", "--listen", "127.0.0.1:0", "--db", str(db),
            "--grace", "5", "--ui-listen", "127.0.0.1:0",
            *(f"--upstream={n}={upstream_url}" for n in ("anthropic", "openai", "ollama")),
            *(["--journal", str(journal)] if journal is not None else []),
            *extra,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 20.0) -> ServeProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        state = self.journal / "serve.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                doc = json.loads(state.read_text())
                if doc["pid"] == self.proc.pid:
                    self.url = doc["url"]
                    return self
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"serve did not start: {self.log.read_text()}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tapewire", *args], capture_output=True, text=True, check=check,
        timeout=60,
    )  # fmt: skip
