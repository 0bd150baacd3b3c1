"""The ingest worker: the ingester in a process of its own, started and stopped by the proxy.

The proxy writes the journal; this process reads it and writes the store, so nothing it does
(JSON, hashing, redaction, compression, SQLite) competes with the proxy's event loop for the
GIL. It stops when told (its stdin closed, or SIGTERM: drain everything, then exit) or when
its parent dies (exit at once: the next start drains what is left).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tapewire.journal.ingest import Ingester, read_status
from tapewire.journal.segments import list_segments
from tapewire.pricing import PriceTable
from tapewire.redact import Redactor
from tapewire.store import open_store
from tapewire.store.location import DbRef

log = logging.getLogger("tapewire.ingest")

if TYPE_CHECKING:
    from tapewire.export.live import LiveExport


class IngestWorker:
    """The proxy's handle on its worker process."""

    def __init__(
        self,
        directory: Path,
        db: DbRef,
        *,
        recorder: str,
        run: str,
        redact: bool,
        redact_patterns: list[str],
        prices: Path | None = None,
        otlp: tuple[str, str, bool] | None = None,
        retain: float | None = None,
    ) -> None:
        self.directory = directory
        # The database by environment, not argument: a URL's password stays out of `ps`.
        self.env = {**os.environ, "TAPEWIRE_DB": str(db)}
        self.args = [
            sys.executable, "-m", "tapewire.journal.worker", "--journal", str(directory),
            "--recorder", recorder, "--run", run, "--parent", str(os.getpid()),
        ]  # fmt: skip
        if retain is not None:
            self.args += ["--retain", str(retain)]
        if not redact:
            self.args.append("--no-redact")
        for pattern in redact_patterns:
            self.args += ["--redact-pattern", pattern]
        if prices is not None:
            self.args += ["--prices", str(prices)]
        if otlp is not None:
            endpoint, protocol, content = otlp
            self.args += ["--otlp-endpoint", endpoint, "--otlp-protocol", protocol]
            self.args += ["--otlp-content"] if content else []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Its stdin is the stop line: closed by stop(), or by the kernel when this process dies.
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, env=self.env)

    def ensure_running(self) -> bool:
        """Restart a worker that died (crashed, or was killed); True when it had to."""
        if self.proc is None or self.proc.poll() is None:
            return False
        log.error("ingest worker exited with %s; restarting it", self.proc.returncode)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.start()
        return True

    def stop(self, timeout: float = 60.0) -> None:
        """Let it drain the journal (the writer must be closed first), then reap it."""
        if self.proc is None or self.proc.stdin is None:
            return
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning(
                "ingest worker did not finish in %.0f s; the journal keeps the rest", timeout
            )
            self.proc.kill()
            self.proc.wait()

    def status(self) -> dict[str, Any]:
        status = read_status(self.directory)
        status["worker_pid"] = self.proc.pid if self.proc else None
        status["worker_alive"] = self.proc is not None and self.proc.poll() is None
        return status


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="tapewire-ingest", description=__doc__)
    p.add_argument("--journal", type=Path, required=True)
    p.add_argument(
        "--db", default=os.environ.get("TAPEWIRE_DB"), required="TAPEWIRE_DB" not in os.environ
    )
    p.add_argument(
        "--retain", type=float, help="Prune sessions older than this many seconds, daily."
    )
    p.add_argument("--recorder", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--no-redact", action="store_true")
    p.add_argument("--redact-pattern", action="append", default=[])
    p.add_argument("--prices", type=Path)
    p.add_argument("--otlp-endpoint")
    p.add_argument("--otlp-protocol", default="http", choices=["http", "grpc"])
    p.add_argument("--otlp-content", action="store_true")
    args = p.parse_args(argv)
    # Under load the proxy comes first: the journal absorbs the backlog and this process
    # drains it when traffic eases (DESIGN.md, Load).
    with contextlib.suppress(OSError):
        os.nice(10)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    draining = threading.Event()
    parent: int = args.parent

    def orphaned() -> bool:
        return os.getppid() != parent

    def watch_stdin() -> None:
        # EOF: the proxy closed it (drain, then exit) or died (exit; the next start drains).
        # The raw descriptor, not sys.stdin: a daemon thread blocked in a buffered read holds
        # its lock, and Python aborts ("could not acquire lock") if it exits meanwhile, as it
        # does when SIGTERM asks it to drain.
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        draining.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda signum, frame: draining.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the proxy's to handle

    def live_segment() -> int | None:
        # The newest segment may have a record half-written; once asked to drain, the proxy
        # has closed its journal and every segment is finished.
        if draining.is_set():
            return None
        segments = list_segments(args.journal)
        return segments[-1] if segments else None

    ingester = Ingester(
        args.journal,
        lambda: open_store(args.db),
        recorder=args.recorder,
        run=args.run,
        live_segment=live_segment,
        redactor=None if args.no_redact else Redactor(args.redact_pattern),
        prices=PriceTable.load(args.prices),
        export=_live_export(args),
        retain=args.retain,
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            ingester.run(draining.is_set, abandon=orphaned)
    finally:
        if ingester.export is not None:
            ingester.export.close()  # what is queued goes out before the worker ends


def _live_export(args: argparse.Namespace) -> LiveExport | None:
    if not args.otlp_endpoint:
        return None
    from tapewire.export.live import LiveExport

    return LiveExport(args.otlp_endpoint, args.otlp_protocol, args.otlp_content)


if __name__ == "__main__":
    main()
