"""OpenTelemetry export: the recorded Claude session sent by the SDK's OTLP/HTTP exporter to a
receiver on 127.0.0.1 that decodes with the official `opentelemetry-proto` classes: one trace,
a chat span per exchange with the recording's usage, an execute_tool span per call, the
subagent under its Agent call, content only when asked, the same ids every time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tapewire import query
from tapewire.cli import main
from tapewire.store import open_store
from tapewire.store.location import DbRef


class Receiver:
    """An OTLP/HTTP trace receiver: every span it is sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.headers: list[dict[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend(scope.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def attrs(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = (
            list(getattr(value, kind).values) if kind == "array_value" else getattr(value, kind)
        )
        if kind == "array_value":
            out[kv.key] = [getattr(v, v.WhichOneof("value")) for v in out[kv.key]]
    return out


def export(db: DbRef, url: str, *args: str) -> Any:
    result = CliRunner().invoke(
        main, ["export", "--format", "otlp", "--endpoint", url, "--db", str(db), *args]
    )
    assert result.exit_code == 0, result.output
    return result


def test_the_recorded_session_as_one_trace(recorded_db: DbRef, receiver: Receiver) -> None:
    store = open_store(recorded_db, readonly=True)
    try:
        (session,) = query.sessions(store)
        detail = query.session_detail(store, session["id"])
        threads = query.session_summary(store, session["id"])["threads"]
    finally:
        store.close()
    result = export(recorded_db, receiver.url, "--header", "Authorization=Bearer otlp-secret")
    assert "exported 1 sessions" in result.output
    spans = receiver.spans
    assert len({s.trace_id for s in spans}) == 1
    by_id = {s.span_id: s for s in spans}
    named = [(s.name, attrs(s)) for s in spans]
    chats = [(s, a) for s, (n, a) in zip(spans, named, strict=True) if n.startswith("chat ")]
    tools = [
        (s, a) for s, (n, a) in zip(spans, named, strict=True) if n.startswith("execute_tool ")
    ]
    agents = [(s, a) for s, (n, a) in zip(spans, named, strict=True) if n == "invoke_agent"]
    assert len(chats) == 17 and len(tools) == 25 and len(agents) == len(threads)
    assert receiver.headers[0]["authorization"] == "Bearer otlp-secret"

    # Each chat span carries its turn's usage, as the recording reported it.
    turns = {t["exchange_id"]: t for t in detail["turns"]}
    for span, a in chats:
        t = turns[a["tapewire.exchange.id"]]
        assert span.kind == span.SPAN_KIND_CLIENT
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "anthropic"
        assert a["gen_ai.usage.input_tokens"] == t["usage"]["input_tokens"]
        assert a["gen_ai.usage.output_tokens"] == t["usage"]["output_tokens"]
        assert a["gen_ai.usage.cache_read.input_tokens"] == t["usage"]["cache_read_tokens"]
        assert a["gen_ai.conversation.id"] == session["harness_session_id"]
        assert a["server.address"] == "127.0.0.1"
        assert span.start_time_unix_nano == int(t["started_at"] * 1e9)
        assert "gen_ai.input.messages" not in a  # no content without --content
    calls = {c["id"]: c for t in detail["turns"] for c in t["tool_calls"]}
    assert {a["gen_ai.tool.call.id"] for _, a in tools} == set(calls)
    for span, a in tools:
        assert a["gen_ai.tool.name"] == calls[a["gen_ai.tool.call.id"]]["name"]
        assert "gen_ai.tool.call.arguments" not in a
        assert (span.status.code == span.status.STATUS_CODE_ERROR) == bool(
            calls[a["gen_ai.tool.call.id"]]["is_error"]
        )

    # The subagent's invoke_agent span hangs under its spawning Agent call's span.
    (root,) = [s for s, _ in agents if not s.parent_span_id]
    sub = [s for s, _ in agents if s.parent_span_id]
    assert len(sub) == len(threads) - 1 == 1
    assert all(s.parent_span_id in (root.span_id, sub[0].span_id) for s, _ in chats)
    spawner = by_id[sub[0].parent_span_id]
    assert attrs(spawner)["gen_ai.tool.name"] == "Agent"
    assert {a["tapewire.thread.id"] for s, a in chats if s.parent_span_id == sub[0].span_id} == {
        t["id"] for t in threads if t["kind"] == "subagent"
    }

    # Exporting again sends the same trace and span ids.
    first = sorted((s.trace_id, s.span_id, s.parent_span_id) for s in spans)
    receiver.spans.clear()
    export(recorded_db, receiver.url)
    assert sorted((s.trace_id, s.span_id, s.parent_span_id) for s in receiver.spans) == first


def test_content_only_when_asked(recorded_db: DbRef, receiver: Receiver) -> None:
    export(recorded_db, receiver.url, "--content")
    chats = [attrs(s) for s in receiver.spans if s.name.startswith("chat ")]
    tools = [attrs(s) for s in receiver.spans if s.name.startswith("execute_tool ")]
    assert all("gen_ai.input.messages" in a and "gen_ai.output.messages" in a for a in chats)
    assert any('"type": "tool_call"' in a["gen_ai.output.messages"] for a in chats)
    assert any("flibbertigibbet" in a.get("gen_ai.tool.call.result", "") for a in tools)


def test_a_collector_that_is_not_there_is_an_error(recorded_db: DbRef) -> None:
    result = CliRunner().invoke(main, [
        "export", "--format", "otlp", "--endpoint", "http://127.0.0.1:9", "--db", str(recorded_db),
    ])  # fmt: skip
    assert result.exit_code == 1
    assert "were not taken" in result.output
    missing = CliRunner().invoke(main, ["export", "--format", "otlp", "--db", str(recorded_db)])
    assert missing.exit_code == 2 and "--endpoint" in missing.output


def test_serve_exports_turns_as_they_are_derived(
    receiver: Receiver, tmp_path: Path, db: DbRef
) -> None:
    """`serve --otlp-endpoint`: the ingest worker sends each derived turn once, under its
    session's root span, while the proxy goes on recording."""
    import time

    import openai

    from conftest import settings_for
    from fakeprovider import FakeProvider
    from tapewire.service import ServiceThread

    with FakeProvider() as fake:
        settings = settings_for(fake, tmp_path, db=db, otlp_endpoint=receiver.url)
        with ServiceThread(settings) as service:
            client = openai.OpenAI(base_url=f"{service.url}/s/live/v1", api_key="sk-x")
            messages: Any = [{"role": "user", "content": "one"}]
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)

            def chats() -> list[Any]:
                return [s for s in receiver.spans if s.name.startswith("chat ")]

            deadline = time.monotonic() + 15
            while not chats() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(chats()) == 1  # while the proxy runs, not at its stop
            messages += [{"role": "assistant", "content": "a"}, {"role": "user", "content": "two"}]
            client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            deadline = time.monotonic() + 15
            while len(chats()) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
    spans = chats()
    assert len(spans) == 2 and len({s.span_id for s in spans}) == 2  # each turn once
    roots = {s.span_id for s in receiver.spans if s.name == "invoke_agent"}
    assert len(roots) == 1 and {s.parent_span_id for s in spans} == roots
    assert len({s.trace_id for s in receiver.spans}) == 1
