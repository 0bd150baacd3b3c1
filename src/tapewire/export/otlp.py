"""Sessions as OpenTelemetry traces, following the GenAI semantic conventions (`semconv.py`),
sent with the OpenTelemetry SDK's own OTLP exporters.

A session is a trace rooted in an `invoke_agent` span, with one span per event:

- each LLM exchange is a `chat {model}` span of kind CLIENT, from its start to its last byte,
  with its time to first chunk;
- each tool execution is an `execute_tool {name}` span (INTERNAL), from the response that asked
  for it to the request that brought its result back;
- each subagent thread is an `invoke_agent` span under the tool call that spawned it, or
  under the root when that call is not known;
- side calls (titles, probes) are chat spans under the root.

Ids come from tapewire's: the trace id from the session's, each span id from its exchange, call
or thread. Exporting twice sends the same ids, so a backend sees the same trace again, not a new
one. Content (messages, instructions, tool arguments and results) goes only with
`content=True`; it is what the store holds, redacted at ingest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    set_span_in_context,
)

from tapewire import __version__, query
from tapewire.export import semconv as sc
from tapewire.store import Store

# Our api prefixes as gen_ai.provider.name spells them (the Gemini API is "gcp.gemini").
_PROVIDERS = {"anthropic": "anthropic", "openai": "openai", "ollama": "ollama",
              "gemini": "gcp.gemini"}  # fmt: skip
_PARAMS = {"max_tokens": sc.GEN_AI_REQUEST_MAX_TOKENS, "temperature": sc.GEN_AI_REQUEST_TEMPERATURE,
           "top_p": sc.GEN_AI_REQUEST_TOP_P, "top_k": sc.GEN_AI_REQUEST_TOP_K}  # fmt: skip


def _id(bits: int, *parts: str) -> int:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    value = int.from_bytes(digest[: bits // 8], "big")
    return value or 1  # zero is the invalid id


def trace_id(session: str) -> int:
    return _id(128, "trace", session)


def span_id(*parts: str) -> int:
    return _id(64, *parts)


class _Ids(IdGenerator):
    """Hands the SDK the id the exporter chose for the span it is about to start."""

    def __init__(self) -> None:
        self.trace = 1
        self.span = 1

    def generate_trace_id(self) -> int:
        return self.trace

    def generate_span_id(self) -> int:
        return self.span


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1e9)


@dataclass
class Exported:
    sessions: int = 0
    spans: int = 0
    failed: int = 0  # spans the collector did not take (after the exporter's own retries)


class _Counting(SpanExporter):
    """The exporter, with the spans it failed to send counted: the SDK only logs them."""

    def __init__(self, inner: SpanExporter, counts: Exported) -> None:
        self.inner = inner
        self.counts = counts

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self.counts.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class TraceWriter:
    """Turns sessions into spans on an SDK tracer; `exporter` sends them."""

    def __init__(self, exporter: SpanExporter, *, content: bool = False) -> None:
        self.ids = _Ids()
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "tapewire", "service.version": __version__}),
            id_generator=self.ids,
        )
        self.counts = Exported()
        self.provider.add_span_processor(
            BatchSpanProcessor(
                _Counting(exporter, self.counts),
                max_export_batch_size=512,
                schedule_delay_millis=1000,  # live export: a turn is out within a second or two
            )
        )
        self.tracer: Tracer = self.provider.get_tracer("tapewire", __version__)
        self.content = content
        self.only: set[str] | None = None

    def close(self) -> None:
        self.provider.force_flush()
        self.provider.shutdown()

    def _start(
        self, key: tuple[str, ...], name: str, parent: Span | None, kind: SpanKind, start: float,
        attributes: dict[str, Any],
    ) -> Span:  # fmt: skip
        self.ids.span = span_id(*key)
        context = set_span_in_context(parent) if parent is not None else Context()
        attrs = {k: v for k, v in attributes.items() if v is not None}
        self.counts.spans += 1
        return self.tracer.start_span(name, context=context, kind=kind, attributes=attrs,
                                      start_time=_ns(start))  # fmt: skip

    def session(self, store: Store, session: str, only: set[str] | None = None) -> None:
        """The session's spans; with `only`, its root and thread spans and the spans of those
        exchanges (live export sends each turn once, as it is derived)."""
        self.only = only
        detail = query.session_detail(store, session)
        rows = {r["exchange"]: r for r in store.turn_rows(session)}
        s = detail["session"]
        self.ids.trace = trace_id(session)
        server = _server(store, detail["turns"])
        root = self._start(("session", session), sc.OP_INVOKE_AGENT, None, SpanKind.INTERNAL,
                           s["started_at"], {
            sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT,
            sc.GEN_AI_AGENT_NAME: s["harness"],
            sc.GEN_AI_CONVERSATION_ID: s["harness_session_id"],  # the harness's, never invented
            sc.TAPEWIRE_SESSION_ID: session,
            sc.TAPEWIRE_SESSION_NAME: s["name"],
            sc.TAPEWIRE_HARNESS: s["harness"],
            sc.TAPEWIRE_COST_USD: s["cost_usd"],
        })  # fmt: skip
        call_spans: dict[str, Span] = {}
        threads = sorted(detail["threads"], key=lambda t: (t["kind"] != "main", t["started_at"]))
        by_thread: dict[str | None, list[dict[str, Any]]] = {}
        for t in detail["turns"]:
            by_thread.setdefault(t["thread"] if t["kind"] != "side" else None, []).append(t)
        # Main thread first: a subagent's spawning call must have its span when it is placed.
        for thread in threads:
            turns = by_thread.get(thread["id"], [])
            if thread["kind"] == "main":
                self._thread(turns, root, rows, server, s, call_spans)
                continue
            spawner = call_spans.get(thread["spawned_by"] or "") or root
            agent = self._start(("thread", thread["id"]), sc.OP_INVOKE_AGENT, spawner,
                                SpanKind.INTERNAL, thread["started_at"], {
                sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT,
                sc.GEN_AI_AGENT_NAME: thread["agent"] or "subagent",
                sc.GEN_AI_AGENT_ID: thread["id"],
                sc.TAPEWIRE_THREAD_ID: thread["id"],
            })  # fmt: skip
            self._thread(turns, agent, rows, server, s, call_spans)
            agent.end(_ns(_last(turns, thread["started_at"])))
        self._thread(by_thread.get(None, []), root, rows, server, s, call_spans)  # side calls
        root.end(_ns(s["ended_at"]))
        self.counts.sessions += 1

    def _thread(
        self, turns: Iterable[dict[str, Any]], parent: Span, rows: dict[str, dict[str, Any]],
        server: tuple[str | None, int | None], s: dict[str, Any], call_spans: dict[str, Span],
    ) -> None:  # fmt: skip
        for t in turns:
            if self.only is not None and t["exchange_id"] not in self.only:
                for call in t["tool_calls"]:  # a later subagent may hang under one of these
                    call_spans[call["id"]] = _placed(span_id("call", t["exchange_id"], call["id"]),
                                                     self.ids.trace)  # fmt: skip
                continue
            self._chat(t, parent, rows.get(t["exchange_id"], {}), server, s)
            for call in t["tool_calls"]:
                call_spans[call["id"]] = self._tool(t, call, parent)

    def _chat(
        self, t: dict[str, Any], parent: Span, row: dict[str, Any],
        server: tuple[str | None, int | None], s: dict[str, Any],
    ) -> None:  # fmt: skip
        api = t["api"] or ""
        usage = t["usage"]
        params = row.get("params") or {}
        attributes: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
            sc.GEN_AI_PROVIDER_NAME: _PROVIDERS.get(api.split(".")[0]),
            sc.GEN_AI_REQUEST_MODEL: row.get("model") or t["model"],
            sc.GEN_AI_RESPONSE_MODEL: row.get("response_model"),
            sc.GEN_AI_RESPONSE_ID: row.get("response_id"),
            sc.GEN_AI_RESPONSE_FINISH_REASONS: [t["stop_reason"]] if t["stop_reason"] else None,
            sc.GEN_AI_REQUEST_STREAM: row.get("stream"),
            sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK:
                t["ttfb_ms"] / 1000 if t["ttfb_ms"] is not None else None,
            sc.GEN_AI_CONVERSATION_ID: s["harness_session_id"],
            sc.GEN_AI_USAGE_INPUT_TOKENS: usage["input_tokens"],
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: usage["output_tokens"],
            sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: usage["cache_read_tokens"],
            sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: usage["cache_write_tokens"],
            sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: usage["reasoning_tokens"],
            sc.SERVER_ADDRESS: server[0],
            sc.SERVER_PORT: server[1],
            sc.TAPEWIRE_SESSION_ID: s["id"],
            sc.TAPEWIRE_EXCHANGE_ID: t["exchange_id"],
            sc.TAPEWIRE_TURN: t["index"],
            sc.TAPEWIRE_THREAD_ID: t["thread"],
            sc.TAPEWIRE_COST_USD: t["cost_usd"],
            sc.TAPEWIRE_OUTCOME: t["outcome"],
        }  # fmt: skip
        for key, name in _PARAMS.items():
            if isinstance(params.get(key), int | float) and not isinstance(params[key], bool):
                attributes[name] = params[key]
        failed = (t["status"] or 0) >= 400 or (t["error"] and t["outcome"] != "client_disconnect")
        if failed:
            attributes[sc.ERROR_TYPE] = str(t["status"]) if (t["status"] or 0) >= 400 else "error"
        if self.content:
            attributes[sc.GEN_AI_INPUT_MESSAGES] = _json([_message(m["role"], m["parts"])
                                                          for m in t["input"]])  # fmt: skip
            out = _message("assistant", t["output"])
            out["finish_reason"] = t["stop_reason"]
            attributes[sc.GEN_AI_OUTPUT_MESSAGES] = _json([out])
        model = attributes[sc.GEN_AI_REQUEST_MODEL] or "unknown"
        span = self._start(("exchange", t["exchange_id"]), f"{sc.OP_CHAT} {model}", parent,
                           SpanKind.CLIENT, t["started_at"], attributes)  # fmt: skip
        if failed:
            span.set_status(Status(StatusCode.ERROR, (t["error"] or "")[:200]))
        duration = (t["duration_ms"] or 0) / 1000
        span.end(_ns(t["started_at"] + duration))

    def _tool(self, t: dict[str, Any], call: dict[str, Any], parent: Span) -> Span:
        asked = t["started_at"] + (t["duration_ms"] or 0) / 1000
        latency = (call["latency_ms"] or 0) / 1000
        attributes: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
            sc.GEN_AI_TOOL_NAME: call["name"],
            sc.GEN_AI_TOOL_CALL_ID: call["id"],
            sc.GEN_AI_TOOL_TYPE: "function",
            sc.TAPEWIRE_EXCHANGE_ID: t["exchange_id"],
            sc.TAPEWIRE_TURN: t["index"],
        }
        if call["is_error"]:
            attributes[sc.ERROR_TYPE] = "tool_error"
        if self.content:
            attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = _json(call["arguments"])
            attributes[sc.GEN_AI_TOOL_CALL_RESULT] = call["result"]
        span = self._start(("call", t["exchange_id"], call["id"]),
                           f"{sc.OP_EXECUTE_TOOL} {call['name'] or 'tool'}", parent,
                           SpanKind.INTERNAL, asked, attributes)  # fmt: skip
        if call["is_error"]:
            span.set_status(Status(StatusCode.ERROR, "the tool returned an error"))
        span.end(_ns(asked + latency))
        return span


def _placed(span: int, trace: int) -> Span:
    """A span sent earlier, as a parent: only its ids are needed."""
    return NonRecordingSpan(SpanContext(trace, span, is_remote=False,
                                        trace_flags=TraceFlags(TraceFlags.SAMPLED)))  # fmt: skip


def _last(turns: list[dict[str, Any]], default: float) -> float:
    return max((t["started_at"] + (t["duration_ms"] or 0) / 1000 for t in turns), default=default)


def _server(store: Store, turns: list[dict[str, Any]]) -> tuple[str | None, int | None]:
    """The upstream's host and port, from the session's first exchange."""
    row = store.exchange(turns[0]["exchange_id"]) if turns else None
    if row is None:
        return None, None
    url = urlsplit(row.upstream_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.hostname, port


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _message(role: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """A message in the conventions' shape: role and typed parts."""
    out = []
    for p in parts:
        kind = p.get("type")
        if kind in ("text", "refusal"):
            out.append({"type": "text", "content": p.get("text")})
        elif kind == "thinking":
            out.append({"type": "reasoning", "content": p.get("text")})
        elif kind == "tool_call":
            out.append({"type": "tool_call", "id": p.get("id"), "name": p.get("name"),
                        "arguments": p.get("arguments")})  # fmt: skip
        elif kind == "tool_result":
            text = "\n".join(c.get("text") or "" for c in p.get("content") or [])
            out.append({"type": "tool_call_response", "id": p.get("id"), "response": text})
        else:
            out.append({"type": kind or "unknown"})
    return {"role": role, "parts": out}


def exporter_for(endpoint: str, protocol: str, headers: dict[str, str]) -> SpanExporter:
    """The SDK's OTLP exporter: HTTP/protobuf (the default) or gRPC."""
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise RuntimeError(
                "gRPC export needs the OTLP gRPC exporter: pip install "
                "opentelemetry-exporter-otlp-proto-grpc"
            ) from None
        grpc: SpanExporter = GrpcExporter(endpoint=endpoint, headers=tuple(headers.items()))
        return grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"  # an endpoint's base, as OTEL_EXPORTER_OTLP_ENDPOINT takes it
    return OTLPSpanExporter(endpoint=url, headers=headers)


def export_sessions(
    store: Store, sessions: Iterable[str], exporter: SpanExporter, *, content: bool = False
) -> Exported:
    writer = TraceWriter(exporter, content=content)
    try:
        for session in sessions:
            writer.session(store, session)
    finally:
        writer.close()
    return writer.counts
