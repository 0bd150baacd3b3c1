"""WebSocket pass-through: once the upgrade is made upstream and to the agent (capture/proxy.py),
every frame is forwarded unchanged both ways as it arrives (text, binary, ping, pong, close with
its code and reason), then teed into the record. No parsing here, as for HTTP.

A connection is recorded as a run of exchanges (method WS), one per message the agent sends:
the Responses API over WebSocket is request then reply (one `response.create`, then the
server's events), so each exchange reads like a streamed POST, and derives like one. Frames
that come before the agent's first message, or after a reply ended, open an exchange of their
own (control frames only: it carries no turn). An exchange is journaled when its reply's
terminal event passes (or the agent's next message, or the connection's end), so a reply the
agent has whole is in the journal before the agent acts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from tapewire.capture.recorder import Flight, Recorder
from tapewire.model import Frame, Outcome, new_id

AGENT, UPSTREAM = "agent", "upstream"
CLOSE_WAIT = 10.0  # seconds a close may wait for its answer, as aiohttp's own close does

# The Responses API's last events (type first, as OpenAI writes them); a byte search in a
# frame's head, not a parse, like said_all's markers for HTTP streams.
_LAST_EVENT = re.compile(
    rb'^\s*\{\s*"type"\s*:\s*"(?:response\.(?:completed|failed|incomplete)|error)"'
)


class Ended(Enum):
    CLOSED = "closed"  # the sender sent a close frame, forwarded
    GONE = "gone"  # the sender's connection dropped without one


class Recording:
    """Cuts a connection's frames into exchanges, one per message the agent sends."""

    def __init__(self, recorder: Recorder, first: Flight) -> None:
        self.recorder = recorder
        self.template = first.ex
        self.flight: Flight | None = first
        self.asked = False  # the open exchange holds the agent's message

    def _open(self, now: float) -> Flight:
        if self.flight is None:
            ex = replace(self.template, id=new_id(), started_at=now, upstream_headers_at=now,
                         frames=[], first_byte_at=None, last_byte_at=None)  # fmt: skip
            self.flight, self.asked = self.recorder.flight(ex), False
        return self.flight

    def _close(self, outcome: Outcome, error: str | None = None) -> None:
        if self.flight is not None:
            self.flight.finish(outcome, error)
        self.flight = None

    def frame(self, source: str, opcode: int, payload: bytes) -> None:
        now = time.time()
        if source == AGENT and opcode < 8 and self.asked:
            self._close(Outcome.COMPLETE)  # the agent's next message: a new exchange
        flight = self._open(now)
        ex = flight.ex
        control = opcode >= 8
        frame = Frame(source, opcode, round((now - ex.started_at) * 1000, 1), len(payload),
                      bytes(payload) if control else b"")  # fmt: skip
        assert ex.frames is not None
        ex.frames.append(frame)
        if control:
            return
        if source == AGENT:
            flight.request.add(payload)
            self.asked = True
            flight.begin()  # the request is whole: journal it now
            return
        flight.response.add(payload)
        if ex.first_byte_at is None:
            ex.first_byte_at = now
        ex.last_byte_at = now
        if self.asked and _LAST_EVENT.match(payload[:128]):
            self._close(Outcome.COMPLETE)

    def end(self, outcome: Outcome, error: str | None = None) -> None:
        """The connection is over: its open exchange ends with it (one opens to say so, when
        the connection dropped between replies)."""
        if outcome is not Outcome.COMPLETE:
            self._open(time.time())
        self._close(outcome, error)


def close_payload(code: int, reason: str) -> bytes:
    """A close frame's payload as it was on the wire (aiohttp hands over its parts; 0: the
    frame had none)."""
    return b"" if not code else code.to_bytes(2, "big") + reason.encode("utf-8")


Socket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _pump(src: Socket, dst: Socket, source: str, rec: Recording) -> tuple[str, Ended]:
    """Forward src's frames to dst until src closes or goes, or dst goes: each frame forwarded,
    then recorded. Returns whose end it was, and how."""
    sink = _other(source)
    while True:
        msg = await src.receive()
        kind = msg.type
        try:
            if kind in (WSMsgType.TEXT, WSMsgType.BINARY):
                try:
                    await dst.send_frame(msg.data, kind)
                finally:
                    rec.frame(source, kind.value, msg.data)
            elif kind in (WSMsgType.PING, WSMsgType.PONG):
                try:
                    await (dst.ping if kind is WSMsgType.PING else dst.pong)(msg.data)
                finally:
                    rec.frame(source, kind.value, msg.data)
            elif kind is WSMsgType.CLOSE:
                payload = close_payload(msg.data, msg.extra or "")
                rec.frame(source, WSMsgType.CLOSE.value, payload)
                # As a frame, not close(): close() would swallow the other side's answer,
                # which goes back the other way like any frame.
                await dst.send_frame(payload, WSMsgType.CLOSE)
                return source, Ended.CLOSED
            else:  # CLOSED, CLOSING or ERROR: src dropped without a close frame
                return source, Ended.GONE
        except (ConnectionError, aiohttp.ClientError):
            return sink, Ended.GONE  # dst could not be written to: it has gone


async def relay(
    agent: web.WebSocketResponse,
    upstream: aiohttp.ClientWebSocketResponse,
    rec: Recording,
    cut_agent: Callable[[], None],
    cut_upstream: Callable[[], None],
) -> None:
    """Both directions until the connection ends: closed by a close handshake (each close frame
    forwarded), or dropped by either side, which the other side then sees too."""
    pumps = [
        asyncio.create_task(_pump(agent, upstream, AGENT, rec)),
        asyncio.create_task(_pump(upstream, agent, UPSTREAM, rec)),
    ]
    try:
        done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        if pending and all(t.result()[1] is Ended.CLOSED for t in done):
            # The other side's answering close, if it comes.
            answered, pending = await asyncio.wait(pending, timeout=CLOSE_WAIT)
            done |= answered
        _end(rec, [t.result() for t in pumps if t in done])
    except asyncio.CancelledError:  # aiohttp cancels the handler when the agent's link drops
        # (also just after a close handshake that has passed: then the end was clean)
        ends = [t.result() for t in pumps if t.done() and not t.cancelled() and not t.exception()]
        _end(rec, ends if len(ends) == 2 else [(AGENT, Ended.GONE)])
        cut_upstream()
        raise
    except Exception as e:  # a bug here: recorded, and both links shut rather than hung
        rec.end(Outcome.UPSTREAM_ERROR, f"tapewire internal error: {e!r}")
        cut_agent()
        cut_upstream()
        raise
    finally:
        for task in pumps:
            task.cancel()
        for task in pumps:  # no task outlives the connection
            with contextlib.suppress(BaseException):
                await task
    # The connection is over for both: shut the TCP links without a further frame (a close
    # handshake has been answered; a drop passes on as a drop).
    cut_agent()
    cut_upstream()


def _end(rec: Recording, ends: list[tuple[str, Ended]]) -> None:
    """Record how the connection ended, from how its pumps did."""
    gone = [side for side, how in ends if how is Ended.GONE]
    if gone:
        if gone[0] == AGENT:
            rec.end(Outcome.CLIENT_DISCONNECT, "agent dropped the WebSocket without a close")
        else:
            rec.end(Outcome.UPSTREAM_RESET, "upstream dropped the WebSocket without a close")
    elif len(ends) == 2:  # both closes crossed: a clean end
        rec.end(Outcome.COMPLETE)
    else:
        rec.end(Outcome.TIMEOUT, f"{_other(ends[0][0])} did not answer the close")


def _other(side: str) -> str:
    return UPSTREAM if side == AGENT else AGENT


def websocket_upgrade(headers: list[tuple[str, str]]) -> bool:
    """Whether a request asks to become a WebSocket (RFC 6455 §4.1)."""
    return any(k.lower() == "upgrade" and "websocket" in v.lower() for k, v in headers)


def protocols(headers: list[tuple[str, str]]) -> list[str]:
    return [
        p.strip()
        for k, v in headers
        if k.lower() == "sec-websocket-protocol"
        for p in v.split(",")
        if p.strip()
    ]


class UpstreamSocket(aiohttp.ClientWebSocketResponse):
    """Keeps the upgrade response (its status and headers go into the record and to the
    agent; closing it drops the TCP link without a frame): aiohttp's own is private."""

    def __init__(self, reader: Any, writer: Any, protocol: Any, response: Any, *args: Any,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(reader, writer, protocol, response, *args, **kwargs)
        self.handshake: aiohttp.ClientResponse = response
