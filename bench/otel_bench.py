"""OpenTelemetry export throughput: spans/s from read_bench's 10,000-session store (built and
cached by read_bench.py) through the SDK's OTLP/HTTP exporter to a receiver on 127.0.0.1 that
decodes every request with the official protobuf classes and counts the spans.

    python bench/otel_bench.py                  # the 10,000-session store
    python bench/otel_bench.py --quick          # 200 sessions
    python bench/otel_bench.py --sessions-max 1000
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from read_bench import cached_store, store_parser
from tapewire.export.otlp import export_sessions, exporter_for
from tapewire.store import open_store


class _Count:
    spans = 0
    bytes = 0


def _receiver() -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            _Count.bytes += len(body)
            _Count.spans += sum(len(s.spans) for r in request.resource_spans
                                for s in r.scope_spans)  # fmt: skip
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def main() -> None:
    parser = store_parser(__doc__, reps=1)
    parser.add_argument("--sessions-max", type=int, default=None, help="export only this many")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.messages = 200, 20_000
    db, _, _ = cached_store(args.sessions, args.messages, args.seed)
    server, url = _receiver()
    store = open_store(db, readonly=True)
    try:
        ids = [r["id"] for r in store.session_rows()][: args.sessions_max]
        start = time.perf_counter()
        counts = export_sessions(store, ids, exporter_for(url, "http", {}))
        elapsed = time.perf_counter() - start
    finally:
        store.close()
        server.shutdown()
    result = {
        "sessions": counts.sessions, "spans": counts.spans, "received": _Count.spans,
        "failed": counts.failed, "seconds": round(elapsed, 1),
        "spans_per_second": round(counts.spans / elapsed),
        "otlp_bytes": _Count.bytes,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
