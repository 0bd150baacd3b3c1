"""A running recorder: journal, proxy listener, ingester and store wired together, started and
stopped as one. `tapewire serve` runs it in the foreground; `tapewire run` and the tests run it
on a thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapewire import __version__
from tapewire.capture.connect import DEFAULT_INTERCEPT, HttpsProxy
from tapewire.capture.headers import CREDENTIAL_HEADERS
from tapewire.capture.proxy import Proxy, upstream_context
from tapewire.capture.recorder import EXCHANGE_CAP, INFLIGHT_CAP, Recorder
from tapewire.capture.routing import parse_upstreams
from tapewire.capture.server import HANDLER_ARGS, ProxyServer
from tapewire.capture.tls import LocalCA, default_ca_dir
from tapewire.journal.records import context_record
from tapewire.journal.segments import OwnerLock, journal_id
from tapewire.journal.worker import IngestWorker
from tapewire.journal.writer import JournalWriter
from tapewire.model import RunContext, new_id
from tapewire.redact import Redactor
from tapewire.store import location
from tapewire.store.location import DbRef

log = logging.getLogger("tapewire")

STATE_FILE = "serve.json"


@dataclass
class Settings:
    db: DbRef
    journal: Path | None = None  # default: location.default_journal(db)
    host: str = "127.0.0.1"
    port: int = 8080
    upstreams: list[str] = field(default_factory=list)  # NAME=URL over the public defaults
    default_upstream: str = "openai"
    redact: bool = True
    redact_patterns: list[str] = field(default_factory=list)
    prices: Path | None = None  # a price table over the bundled one
    extra_credential_headers: list[str] = field(default_factory=list)
    fsync_interval: float = 1.0
    exchange_cap: int = EXCHANGE_CAP
    inflight_cap: int = INFLIGHT_CAP
    connect_timeout: float = 30.0
    read_timeout: float = 600.0
    grace: float = 10.0  # how long a stop waits for streams still running
    token: str | None = None
    otlp_endpoint: str | None = None  # continuous OpenTelemetry export (docs/otel.md)
    otlp_protocol: str = "http"
    otlp_content: bool = False
    retain: float | None = None  # seconds: prune sessions older than this, daily (serve --retain)
    https_proxy: bool = False  # CONNECT on the listener (docs/https-proxy.md)
    intercept_hosts: list[str] = field(default_factory=lambda: list(DEFAULT_INTERCEPT))
    ca_dir: Path | None = None  # default: tls.default_ca_dir()
    upstream_ca: Path | None = None  # trusted upstream besides the system's CAs

    @property
    def journal_dir(self) -> Path:
        return self.journal or location.default_journal(self.db)


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


class Service:
    def __init__(self, settings: Settings) -> None:
        if not is_loopback(settings.host) and not settings.token:
            raise ValueError(
                f"refusing to listen on {settings.host} without --token: "
                "beyond loopback, every request must carry x-tapewire-token"
            )
        self.settings = settings
        # What can be wrong with the TLS files is said before the journal is taken.
        upstream_ssl = upstream_context(settings.upstream_ca)
        ca = LocalCA(settings.ca_dir or default_ca_dir()) if settings.https_proxy else None
        self.run_id = new_id()
        directory = settings.journal_dir
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.lock = OwnerLock(directory)
        self.lock.acquire()
        self.recorder_id = journal_id(directory)
        self.journal = JournalWriter(directory, fsync_interval=settings.fsync_interval)
        credentials = CREDENTIAL_HEADERS | {h.lower() for h in settings.extra_credential_headers}
        self.recorder = Recorder(
            self.journal, exchange_cap=settings.exchange_cap, inflight_cap=settings.inflight_cap
        )
        self.upstreams = parse_upstreams(settings.upstreams)
        if settings.redact:
            Redactor(settings.redact_patterns)  # a bad pattern is the user's error, said now
        self.ingester = IngestWorker(
            directory,
            settings.db,
            recorder=self.recorder_id,
            run=self.run_id,
            redact=settings.redact,
            redact_patterns=settings.redact_patterns,
            prices=settings.prices,
            otlp=(settings.otlp_endpoint, settings.otlp_protocol, settings.otlp_content)
            if settings.otlp_endpoint
            else None,
            retain=settings.retain,
        )
        proxy = Proxy(
            self.upstreams,
            self.recorder,
            run_id=self.run_id,
            default_upstream=settings.default_upstream,
            credential_headers=credentials,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            upstream_ssl=upstream_ssl,
        )
        self.https = (
            HttpsProxy(
                proxy,
                ca,
                intercept=settings.intercept_hosts,
                token=settings.token,
                connect_timeout=settings.connect_timeout,
                handler_args=HANDLER_ARGS,
            )
            if ca is not None
            else None
        )
        self.server = ProxyServer(
            proxy,
            status=self.status,
            record_context=self.record_context,
            token=settings.token,
            https=self.https,
        )
        self.started_at = time.time()
        self.port = 0
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    # ---- lifecycle (on the proxy's event loop) ----------------------------------------------

    async def start(self) -> None:
        self.journal.open()
        self.ingester.start()
        try:
            self.port = await self.server.start(self.settings.host, self.settings.port)
        except OSError:  # the address is taken: undo what started, leave the journal as it was
            await self.server.close()
            self.journal.close()
            await asyncio.to_thread(self.ingester.stop)
            self.lock.release()
            raise
        self._write_state()
        self._watchdog = asyncio.create_task(self._watch_worker())

    async def _watch_worker(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.ingester.ensure_running()

    async def stop(self) -> None:
        """Stop accepting, let streams finish (bounded), journal the rest as interrupted,
        fsync, ingest what the journal holds, and let go of the journal."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self.server.stop_accepting()
        deadline = time.monotonic() + self.settings.grace
        while self.recorder.open and time.monotonic() < deadline:  # noqa: ASYNC110 (polls a plain dict)
            await asyncio.sleep(0.05)
        self.recorder.interrupt_open("tapewire stopped before the exchange ended")
        await self.server.close()
        self.journal.close()
        await asyncio.to_thread(self.ingester.stop)
        with contextlib.suppress(FileNotFoundError):
            (self.settings.journal_dir / STATE_FILE).unlink()
        self.lock.release()

    def record_context(self, session: str, context: dict[str, Any]) -> None:
        self.recorder.write(*context_record(RunContext(session, time.time(), context)))

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "url": self.url,
            "run": self.run_id,
            "db": location.display(self.settings.db),
            # `tapewire run --https-proxy` reads these to point its child here.
            "https_proxy": self.https is not None,
            "ca": str(self.https.ca.cert_path) if self.https is not None else None,
        }
        (self.settings.journal_dir / STATE_FILE).write_text(json.dumps(state))

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "url": self.url,
            "run": self.run_id,
            "uptime_s": round(time.time() - self.started_at, 1),
            "db": location.display(self.settings.db),
            "journal": str(self.settings.journal_dir),
            "capture": self.recorder.status(),
            "journal_records_written": self.journal.records_written,
            "ingest": self.ingester.status(),
            "upstreams": {n: u.origin + u.base_path for n, u in self.upstreams.items()},
            "https_proxy": self.https.status() if self.https is not None else None,
        }


class ServiceThread:
    """The service on a thread with its own event loop, for `tapewire run` and for tests."""

    def __init__(self, settings: Settings) -> None:
        self.service = Service(settings)
        self._loop = new_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tapewire-proxy", daemon=True
        )

    def __enter__(self) -> Service:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self._loop).result()
        return self.service

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.service.stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def running_state(journal_dir: Path) -> dict[str, Any] | None:
    """The serve process that owns this journal, if one is alive."""
    try:
        state: dict[str, Any] = json.loads((journal_dir / STATE_FILE).read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return state
