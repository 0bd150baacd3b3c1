"""A PostgreSQL server of a test's own, on 127.0.0.1, that the test may stop and start without
touching the shared test server (or other tests): `initdb` into a temporary directory, trust
authentication, a free port, its Unix socket in that directory.

initdb and pg_ctl refuse to run as root: as root they run as the `postgres` user, in a
directory that user owns. `PrivatePostgres` cleans up on exit, also when the test failed: the
server is stopped (immediately, if a fast stop hangs) and the directory removed.

    with PrivatePostgres() as pg:
        url = pg.create_database("tapewire")
        pg.stop(); pg.start()
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

BIN_DIRS = [Path(f"/usr/lib/postgresql/{v}/bin") for v in (17, 16, 15, 14, 13)]
USER = "postgres"  # the OS user the server runs as when the tests run as root


def bin_dir() -> Path | None:
    """Where initdb and pg_ctl are, or None (the tests that need them skip)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    return next((d for d in BIN_DIRS if (d / "pg_ctl").exists()), None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class PrivatePostgres:
    def __init__(self, timeout: float = 30.0) -> None:
        binaries = bin_dir()
        if binaries is None:
            raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl)")
        self.bin = binaries
        self.timeout = timeout
        self.as_root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="tapewire-pg-"))
        if self.as_root:
            entry = pwd.getpwnam(USER)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = _free_port()
        self.running = False

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://{USER if self.as_root else _me()}@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float | None = None) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", USER, "--", *cmd]
        done = subprocess.run(
            cmd,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout or self.timeout,
            cwd=self.dir,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}):"
                f" {done.stdout}{done.stderr}{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n--- server log ---\n" + self.log.read_text()[-2000:]
        return ""

    def init(self) -> PrivatePostgres:
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", USER if self.as_root else _me(),
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        return self

    def start(self) -> None:
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.dir} -c fsync=off -c full_page_writes=off"
            " -c synchronous_commit=off -c max_connections=50 -c shared_buffers=32MB"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
            "-t", str(int(self.timeout)), "start",
        )  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def create_database(self, name: str = "tapewire") -> str:
        """A new database on the (running) server; its URL."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(f"CREATE DATABASE {name}".encode())
        return self.url(name)

    def cleanup(self) -> None:
        if self.running:
            try:
                self.stop("fast")
            except (RuntimeError, subprocess.TimeoutExpired):
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            self.init()
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _me() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name
