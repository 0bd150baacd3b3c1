"""Plain data types shared by every room; nothing here imports the rest of tapewire."""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

Headers = list[tuple[str, str]]
_random = random.Random()  # seeded from os.urandom at import


class Outcome(StrEnum):
    """How an exchange ended, as the proxy saw it."""

    IN_FLIGHT = "in_flight"  # begun; its end record has not been ingested yet
    COMPLETE = "complete"
    CLIENT_DISCONNECT = "client_disconnect"
    UPSTREAM_ERROR = "upstream_error"  # refused, reset, or malformed before headers
    UPSTREAM_RESET = "upstream_reset"  # cut off after the response had started
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"  # tapewire stopped (or was killed) mid-exchange


def new_id() -> str:
    """A UUIDv7 string: time-ordered, so ids sort like the exchanges happened.

    The stdlib only grows uuid.uuid7 in Python 3.14.
    """
    ms = time.time_ns() // 1_000_000
    rand = _random.getrandbits(80)  # ids need uniqueness, not secrecy: no syscall per id
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 68) << 64  # 12 bits rand_a
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class Evidence:
    """What the wire said about which session and thread an exchange belongs to."""

    session: str | None = None  # tapewire's own: /s/<session>/ or x-tapewire-session
    claude_session: str | None = None  # x-claude-code-session-id
    claude_agent: str | None = None  # x-claude-code-agent-id
    codex_session: str | None = None  # session_id / session-id
    codex_thread: str | None = None  # thread-id

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def session_key(self) -> str | None:
        """The strongest session identity seen, for grouping bodies at ingest."""
        for value in (self.session, self.claude_session, self.codex_session):
            if value:
                return value
        return None

    def thread_key(self) -> str | None:
        return self.claude_agent or self.codex_thread


@dataclass
class ChunkMap:
    """How a response body arrived: its i-th read from the upstream held `sizes[i]` bytes and
    arrived `ms[i]` milliseconds after the first byte (so `ms[0] == 0.0`; a monotonic clock,
    rounded to 0.1 ms). `sum(sizes)` is the response's size on the wire. Past the capture's cap
    (`capture.recorder.CHUNK_CAP` reads) the rest is merged into the last entry, which keeps
    its own arrival time."""

    sizes: list[int]
    ms: list[float]

    def pairs(self) -> list[tuple[int, float]]:
        return list(zip(self.sizes, self.ms, strict=True))


@dataclass(frozen=True)
class Frame:
    """One WebSocket frame as it crossed tapewire. A data frame's payload (text, binary) is in
    the exchange's bodies: the agent's one message is the request body, the upstream's are the
    response body, back to back, `size` bytes each in order. A control frame's payload (ping,
    pong, close: at most 125 bytes, RFC 6455 §5.5) is kept here, in `data`; a close frame's is
    its 2-byte code and UTF-8 reason, as on the wire."""

    source: str  # "agent" or "upstream": who sent it
    opcode: int  # 1 text, 2 binary, 8 close, 9 ping, 10 pong
    ms: float  # arrival, in ms after the exchange's started_at (0.1 ms)
    size: int  # payload bytes
    data: bytes = b""  # control frames only

    @property
    def control(self) -> bool:
        return self.opcode >= 8

    def as_json(self) -> list[Any]:
        """[source, opcode, ms, size], and a control frame's payload in hex: the journal's and
        the store's form."""
        head: list[Any] = [self.source, self.opcode, self.ms, self.size]
        return [*head, self.data.hex()] if self.data else head

    @classmethod
    def from_json(cls, e: list[Any]) -> Frame:
        return cls(e[0], e[1], e[2], e[3], bytes.fromhex(e[4]) if len(e) > 4 else b"")


def ws_messages(frames: list[Frame], body: bytes, source: str) -> list[bytes]:
    """The data messages one side sent, cut out of the body that holds them back to back (a
    body cut at the capture cap leaves its last messages short or empty)."""
    out, at = [], 0
    for f in frames:
        if f.source == source and not f.control:
            out.append(body[at : at + f.size])
            at += f.size
    return out


# The method of an exchange carried by WebSocket messages (capture/websocket.py); the upgrade
# that opened the connection was a GET, whose headers the exchange keeps.
WEBSOCKET = "WS"


@dataclass
class Exchange:
    """One request and its response exactly as they crossed the wire."""

    id: str
    run_id: str
    started_at: float  # unix seconds
    method: str
    path: str  # as the client sent it, prefixes included
    upstream: str  # upstream name
    upstream_url: str  # where it was forwarded
    provider: str | None  # wire format recognised from the path; None = opaque
    request_headers: Headers
    request_body: bytes = b""
    request_truncated: bool = False
    request_size: int = 0  # bytes seen, which may exceed len(request_body) when truncated
    evidence: Evidence = field(default_factory=Evidence)
    recorder: str = ""  # the journal that captured it (set at ingest)
    request_end_at: float | None = None
    status: int | None = None
    response_headers: Headers = field(default_factory=list)
    response_body: bytes = b""
    response_truncated: bool = False
    response_size: int = 0
    upstream_headers_at: float | None = None
    first_byte_at: float | None = None
    last_byte_at: float | None = None
    response_chunks: ChunkMap | None = None  # where the response's reads broke, and when
    frames: list[Frame] | None = None  # a WebSocket exchange's frames, both ways; None: HTTP
    outcome: Outcome = Outcome.IN_FLIGHT
    error: str | None = None
    request_sha256: str | None = None  # of the body as it crossed the wire (set at ingest)
    request_encoding: str | None = None  # what the stored body is encoded in, when not as sent
    redactions: int = 0

    def conversation_key(self) -> str:
        """Which conversation the request body belongs to: the session where the wire named
        one, else the opening kilobyte, which agents resend unchanged every turn."""
        session = self.evidence.session_key()
        if session:
            return "s:" + session
        return "p:" + hashlib.sha256(self.request_body[:1024]).hexdigest()


def header_value(headers: Headers, name: str) -> str | None:
    """First value of a header, case-insensitively."""
    lname = name.lower()
    for k, v in headers:
        if k.lower() == lname:
            return v
    return None


@dataclass
class ExchangeEnd:
    """The response half of an exchange, journaled when the exchange ends."""

    id: str
    status: int | None
    response_headers: Headers
    response_body: bytes
    response_truncated: bool
    response_size: int
    upstream_headers_at: float | None
    first_byte_at: float | None
    last_byte_at: float | None
    outcome: Outcome
    error: str | None
    response_encoding: str | None = None  # what the stored body is encoded in, when not as sent
    response_sha256: str | None = None
    redactions: int = 0
    response_chunks: ChunkMap | None = None  # None: not recorded (older journal) or dropped
    frames: list[Frame] | None = None  # a WebSocket exchange's frames; None: HTTP


@dataclass
class RunContext:
    """What `tapewire run` knew about the agent's run: command, cwd, git state, memory files."""

    session: str
    recorded_at: float
    context: dict[str, object]


# ---- the derived layer: what an exchange meant --------------------------------------------


@dataclass
class Part:
    """One piece of a message, the same shape whichever provider's wire format it came from.

    type: text | thinking | redacted_thinking | tool_call | tool_result | image | refusal | other
    """

    type: str
    text: str | None = None  # text, thinking, refusal; a tool_result's text when it is plain
    id: str | None = None  # tool_call: its call id; tool_result: the call id it answers
    name: str | None = None  # tool_call: the tool's name; other: the provider's block type
    arguments: Any = None  # tool_call: parsed JSON where it parses, else the string as sent
    content: list[Part] | None = None  # tool_result: what the tool returned
    is_error: bool | None = None  # tool_result
    media_type: str | None = None  # image
    data: Any = None  # image: url or sha256:<hex>; redacted_thinking: its data; other: the block
    signature: str | None = None  # thinking: an opaque transport token, never part of a node's id

    def canonical(self) -> dict[str, Any]:
        """The content-addressed form: content only. Left out on purpose: thinking signatures
        (an opaque token, absent when a harness strips or a stream cut it) and every
        provider's transport hint (Anthropic cache_control, tool_use caller)."""
        out: dict[str, Any] = {"type": self.type}
        for key in ("text", "id", "name", "arguments", "is_error", "media_type", "data"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.content is not None:
            out["content"] = [p.canonical() for p in self.content]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Part:
        """A part back from its canonical or JSON form (as a node stores it)."""
        fields = {k: v for k, v in data.items() if k != "content"}
        part = cls(**fields)
        if data.get("content") is not None:
            part.content = [cls.from_json(c) for c in data["content"]]
        return part

    def as_json(self) -> dict[str, Any]:
        out = self.canonical()
        if self.signature is not None:
            out["signature"] = self.signature
        if self.content is not None:
            out["content"] = [p.as_json() for p in self.content]
        return out


@dataclass
class Message:
    role: str  # system | developer | user | assistant | tool
    parts: list[Part] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"role": self.role, "parts": [p.as_json() for p in self.parts]}


@dataclass
class Usage:
    """Normalised token counts. input_tokens counts every prompt token (uncached, cache read
    and cache write), as the OpenTelemetry GenAI conventions define it; None = not reported."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None  # the part of cache_write_tokens priced as 1 h writes
    reasoning_tokens: int | None = None  # part of output_tokens

    def as_json(self) -> dict[str, int | None]:
        return dict(self.__dict__)


@dataclass
class Turn:
    """One LLM exchange as its provider's codec understood it. A body that could not be decoded
    or parsed gives a partial Turn with `error` set, never an exception."""

    api: str  # anthropic.messages | openai.chat | openai.responses | ollama.chat | ollama.generate
    # | gemini.generate
    model: str | None = None  # as requested
    response_model: str | None = None  # as the provider answered
    response_id: str | None = None
    previous_response_id: str | None = None  # OpenAI Responses chaining
    system: list[Part] = field(default_factory=list)  # where the API keeps it apart from messages
    messages: list[Message] = field(default_factory=list)
    tools: list[Any] = field(default_factory=list)  # definitions as sent
    params: dict[str, Any] = field(default_factory=dict)  # everything else the request set
    stream: bool = False
    outputs: list[Message] = field(default_factory=list)  # one per choice (n > 1: several)
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None
    error: str | None = None  # decode/parse trouble, or the provider's own error

    @property
    def output(self) -> Message | None:
        return self.outputs[0] if self.outputs else None
