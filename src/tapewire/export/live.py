"""Continuous export (`tapewire serve --otlp-endpoint URL`): the ingest worker hands over each
exchange it derives, and at most once a second the new turns go out as spans, with their
session's root and thread spans (the same ids again, with the latest end). The SDK's batch
processor sends them from its own thread and its exporter retries with backoff, so a slow or
absent collector never holds up ingestion, let alone the proxy; past its queue, spans are
dropped and counted, never the recording."""

from __future__ import annotations

import logging

from tapewire.export.otlp import TraceWriter, exporter_for
from tapewire.store import Store

log = logging.getLogger("tapewire.export")


class LiveExport:
    def __init__(self, endpoint: str, protocol: str = "http", content: bool = False) -> None:
        # Headers (auth) come from OTEL_EXPORTER_OTLP_HEADERS, which the exporter reads: a
        # secret on a command line would show in `ps`.
        self.writer = TraceWriter(exporter_for(endpoint, protocol, {}), content=content)
        self.pending: dict[str, set[str]] = {}

    def add(self, session: str, exchange: str) -> None:
        self.pending.setdefault(session, set()).add(exchange)

    def flush(self, store: Store) -> None:
        pending, self.pending = self.pending, {}
        for session, exchanges in sorted(pending.items()):
            try:
                self.writer.session(store, session, only=exchanges)
            except Exception:  # an export bug must not stop ingestion
                log.exception("could not export session %s", session)

    def close(self) -> None:
        self.writer.close()
