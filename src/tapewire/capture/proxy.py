"""The request handler: forward each request byte-exact, stream each response chunk to the agent
as it arrives, and tee both into the exchange record. No parsing and no storage here: the only
I/O besides the two sockets is the journal append when an exchange begins and ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from time import perf_counter

import aiohttp
from aiohttp import web
from yarl import URL

from tapewire.capture.errors import error_body
from tapewire.capture.headers import evidence, forwardable, storable, storable_target
from tapewire.capture.recorder import Flight, Recorder, Tee
from tapewire.capture.routing import Route, RouteError, Upstream, route
from tapewire.capture.websocket import (
    CLOSE_WAIT,
    Recording,
    UpstreamSocket,
    protocols,
    relay,
    websocket_upgrade,
)
from tapewire.model import WEBSOCKET, Exchange, Headers, Outcome, new_id

log = logging.getLogger("tapewire.capture")

# aiohttp would otherwise add its own Accept, Accept-Encoding, User-Agent and Content-Type:
# the upstream must see the agent's headers, not ours.
_SKIP_AUTO = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})
_INLINE_BODY = 1024 * 1024  # smaller request bodies are read whole; larger ones stream through
_OURS = "x-tapewire-"
# Each hop's WebSocket handshake is its own (aiohttp makes both): the agent's key, version and
# extensions are not the upstream's; the subprotocol is passed on by name.
_WS_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
     "sec-websocket-protocol", "sec-websocket-accept"}
)  # fmt: skip

# How a request's raw target becomes its route: by path on the proxy listener (`route`), by the
# host the client named in CONNECT for a request the HTTPS proxy decrypted (`route_host`).
Resolver = Callable[[str], Route]


def _text(raw: bytes) -> str:
    # aiohttp writes header text back out as UTF-8: decoding UTF-8 round-trips those bytes.
    # Bytes that are not UTF-8 (obs-text) cannot be written back by aiohttp as they were.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _decode(raw: tuple[tuple[bytes, bytes], ...]) -> Headers:
    return [(_text(k), _text(v)) for k, v in raw]


def _same_spelling(headers: Headers) -> Headers:
    """aiohttp's client keeps repeats of a header name only when they are spelled alike
    (X-Multi and x-multi collapse into the last one): spell repeats like the first."""
    first: dict[str, str] = {}
    return [(first.setdefault(k.lower(), k), v) for k, v in headers]


class Proxy:
    def __init__(
        self,
        upstreams: dict[str, Upstream],
        recorder: Recorder,
        *,
        run_id: str,
        default_upstream: str = "openai",
        credential_headers: frozenset[str],
        connect_timeout: float = 30.0,
        read_timeout: float = 600.0,
        upstream_ssl: ssl.SSLContext | bool = True,
    ) -> None:
        self.upstreams = upstreams
        self.recorder = recorder
        self.run_id = run_id
        self.default_upstream = default_upstream
        self.credentials = credential_headers
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._client: aiohttp.ClientSession | None = None
        self.upstream_ssl = upstream_ssl  # see upstream_context

    async def start(self) -> None:
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, ssl=self.upstream_ssl),
            auto_decompress=False,  # compressed bytes stay compressed, end to end
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_SKIP_AUTO,
            ws_response_class=UpstreamSocket,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    # ---- the handler -----------------------------------------------------------------------

    async def handle(
        self, request: web.Request, resolve: Resolver | None = None
    ) -> web.StreamResponse:
        started = time.time()
        headers = _decode(request.raw_headers)
        try:
            r = (
                resolve(request.raw_path)
                if resolve is not None
                else route(request.raw_path, self.upstreams, self.default_upstream)
            )
        except RouteError as e:
            state = self.recorder.flight(self._exchange(request, headers, started, None))
            await _read_body(request, state)
            return self._fail(state, 502, Outcome.UPSTREAM_ERROR, str(e))
        ex = self._exchange(request, headers, started, r)
        state = self.recorder.flight(ex)
        try:
            if request.method == "GET" and websocket_upgrade(headers):
                return await self._websocket(request, headers, r, state)
            return await self._forward(request, headers, r, state)
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the agent hangs up: the upstream request goes
            # with it (its connection is closed on the way out), and the record says so.
            state.finish(Outcome.CLIENT_DISCONNECT, "client closed the connection")
            raise
        except web.HTTPException:
            raise  # an answer of ours (a request body cut short), already recorded
        except Exception as e:  # a bug here must not become the agent's problem silently
            log.exception("proxy error on %s %s", request.method, ex.path)
            state.finish(Outcome.UPSTREAM_ERROR, f"tapewire internal error: {e!r}")
            raise

    async def _forward(
        self, request: web.Request, headers: Headers, r: Route, state: Flight
    ) -> web.StreamResponse:
        assert self._client is not None
        ex = state.ex
        fwd = _upstream_headers(headers, r)
        data: bytes | AsyncIterator[bytes] | None
        if not request.body_exists:
            data = None
            state.begin()
        elif request.content_length is not None and request.content_length <= _INLINE_BODY:
            data = await _read_body(request, state)
            state.begin()
        else:
            data = self._stream_request(request, state)

        try:
            upstream = await self._client.request(
                request.method,
                _upstream_url(r),
                headers=fwd,
                data=data,
                allow_redirects=False,
                timeout=self.timeout,
            )
        except TimeoutError:
            return self._fail(
                state,
                504,
                Outcome.TIMEOUT,
                f"upstream {ex.upstream} ({ex.upstream_url}) did not answer in time",
            )
        except (aiohttp.ClientError, OSError) as e:
            return self._fail(
                state,
                502,
                Outcome.UPSTREAM_ERROR,
                f"upstream {ex.upstream} ({ex.upstream_url}) failed: {e}",
            )

        state.begin()  # a body that streamed is complete once the upstream answers
        ex.upstream_headers_at = time.time()
        ex.status = upstream.status
        response_headers = _decode(upstream.raw_headers)
        ex.response_headers = storable(response_headers, self.credentials)
        out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in forwardable(response_headers):
            out.headers.add(k, v)
        length = upstream.content_length
        body, pacing = state.response, state.pacing
        try:
            await out.prepare(request)
            async for chunk in upstream.content.iter_any():
                at = perf_counter()  # its arrival, before the write can wait on the agent
                if ex.first_byte_at is None:
                    ex.first_byte_at = time.time()
                if length is not None and body.size + len(chunk) >= length:
                    # The agent's last byte: journal the exchange before it is sent.
                    body.add(chunk)
                    pacing.add(len(chunk), at)
                    ex.last_byte_at = time.time()
                    state.finish(Outcome.COMPLETE)
                    await out.write(chunk)
                else:  # forwarded first, recorded after (also when the agent has gone)
                    try:
                        await out.write(chunk)
                    finally:
                        body.add(chunk)
                        pacing.add(len(chunk), at)
        except aiohttp.ClientPayloadError as e:
            state.finish(Outcome.UPSTREAM_RESET, f"upstream cut the response short: {e}")
            upstream.close()
            _abort(request)  # the agent's stream ends the way the upstream's did
            return out
        except TimeoutError:
            state.finish(Outcome.TIMEOUT, "upstream stopped sending mid-response")
            upstream.close()
            _abort(request)
            return out
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            if said_all(body, response_headers):
                ex.last_byte_at = time.time()
                state.finish(Outcome.COMPLETE)
            else:
                state.finish(Outcome.CLIENT_DISCONNECT, "client closed the connection")
            upstream.close()
            return out
        except asyncio.CancelledError:
            # An SSE client may hang up on its final event, as the upstream's end of body
            # arrives: when that end is already here, or the final event is, the exchange was
            # complete (SDKs stop reading at `[DONE]` or `message_stop`).
            try:
                tail = upstream.content.read_nowait()
            except Exception:  # the upstream failed too: the disconnect stands
                tail = b""
            if (upstream.content.at_eof() or said_all(body, response_headers)) and not state.done:
                body.add(tail)
                if tail:
                    pacing.add(len(tail), perf_counter())
                ex.last_byte_at = time.time()
                state.finish(Outcome.COMPLETE)
            upstream.close()
            raise
        if not state.done:
            ex.last_byte_at = time.time()
            state.finish(Outcome.COMPLETE)
        upstream.release()
        # An SSE client may hang up once it has the final event, before the chunked
        # terminator: the exchange is complete all the same.
        with contextlib.suppress(ConnectionError):
            await out.write_eof()
        return out

    async def _websocket(
        self, request: web.Request, headers: Headers, r: Route, state: Flight
    ) -> web.StreamResponse:
        """The upgrade made upstream first, so that a refusal reaches the agent as the
        upstream's HTTP answer (Codex then falls back to HTTP); then the agent's, then the
        frames (capture/websocket.py)."""
        assert self._client is not None
        ex = state.ex
        try:
            upstream = await self._client.ws_connect(
                _upstream_url(r),
                headers=_upstream_headers(headers, r, _WS_HANDSHAKE),
                protocols=protocols(headers),
                autoclose=False,  # close frames are forwarded, not answered by aiohttp
                autoping=False,  # and so are pings and pongs
                decode_text=False,  # text frames stay the bytes that came
                max_msg_size=0,  # the agent and the upstream set the limits, not tapewire
                compress=0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_WAIT),
            )
        except aiohttp.WSServerHandshakeError as e:
            return self._refused(state, e)
        except TimeoutError:
            return self._fail(
                state, 504, Outcome.TIMEOUT,
                f"upstream {ex.upstream} ({ex.upstream_url}) did not answer the upgrade in time",
            )  # fmt: skip
        except (aiohttp.ClientError, OSError) as e:
            return self._fail(
                state, 502, Outcome.UPSTREAM_ERROR,
                f"upstream {ex.upstream} ({ex.upstream_url}) failed: {e}",
            )  # fmt: skip
        assert isinstance(upstream, UpstreamSocket)
        handshake = upstream.handshake
        ex.method = WEBSOCKET
        ex.status = handshake.status
        ex.upstream_headers_at = time.time()
        response_headers = _decode(handshake.raw_headers)
        ex.response_headers = storable(response_headers, self.credentials)
        ex.frames = []
        agent = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoclose=False,
            autoping=False,
            decode_text=False,
            max_msg_size=0,
            compress=False,
        )
        for k, v in forwardable(response_headers, _WS_HANDSHAKE):
            agent.headers.add(k, v)

        def cut_agent() -> None:
            if request.transport is not None:
                request.transport.close()

        try:
            await agent.prepare(request)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            state.finish(Outcome.CLIENT_DISCONNECT, "client closed the connection")
            handshake.close()
            return agent
        await relay(agent, upstream, Recording(self.recorder, state), cut_agent, handshake.close)
        return agent

    def _refused(self, state: Flight, e: aiohttp.WSServerHandshakeError) -> web.StreamResponse:
        """The upstream answered the upgrade without upgrading: its status and headers go to
        the agent (aiohttp keeps no body of such an answer; the agent gets tapewire's note)."""
        ex = state.ex
        headers = [(k, v) for k, v in (e.headers or {}).items()]
        message = f"upstream {ex.upstream} refused the WebSocket upgrade: {e.status} {e.message}"
        body = error_body(ex.provider, e.status, message)
        ex.status = e.status
        ex.upstream_headers_at = ex.first_byte_at = ex.last_byte_at = time.time()
        ex.response_headers = storable(headers, self.credentials)
        state.response.add(body)
        state.pacing.add(len(body), perf_counter())
        state.finish(Outcome.UPSTREAM_ERROR, message)
        resp = web.Response(status=e.status, body=body, content_type="application/json")
        for k, v in forwardable(headers, _BODY_HEADERS):
            resp.headers.add(k, v)
        resp.headers["X-Tapewire-Error"] = "1"
        return resp

    async def _stream_request(self, request: web.Request, state: Flight) -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_any():
            state.request.add(chunk)
            yield chunk
        state.begin()

    def _fail(
        self, state: Flight, status: int, outcome: Outcome, message: str
    ) -> web.StreamResponse:
        ex = state.ex
        body = error_body(ex.provider, status, message)
        ex.status = status
        ex.upstream_headers_at = ex.first_byte_at = ex.last_byte_at = time.time()
        ex.response_headers = [("Content-Type", "application/json"), ("X-Tapewire-Error", "1")]
        state.response.add(body)
        state.pacing.add(len(body), perf_counter())
        state.finish(outcome, message)
        resp = web.Response(status=status, body=body, content_type="application/json")
        resp.headers["X-Tapewire-Error"] = "1"
        return resp

    def _exchange(
        self, request: web.Request, headers: Headers, started: float, r: Route | None
    ) -> Exchange:
        return Exchange(
            id=new_id(),
            run_id=self.run_id,
            started_at=started,
            method=request.method,
            path=storable_target(request.raw_path),
            upstream=r.upstream.name if r else "",
            upstream_url=r.upstream.origin + storable_target(r.target) if r else "",
            provider=r.provider if r else None,
            request_headers=storable(headers, self.credentials),
            evidence=evidence(headers, r.session if r else None),
        )


# The upstream's body is not the one sent: its length and encoding do not apply.
_BODY_HEADERS = frozenset({"content-length", "content-encoding", "content-type"})


def _upstream_headers(headers: Headers, r: Route, drop: frozenset[str] = frozenset()) -> Headers:
    """The agent's headers for the upstream: hop-by-hop and tapewire's own dropped, Host
    rewritten, credentials kept (they are forwarded, never stored)."""
    return _same_spelling(
        [
            (k, r.upstream.host_header) if k.lower() == "host" else (k, v)
            for k, v in forwardable(headers, drop)
            if not k.lower().startswith(_OURS)
        ]
    )


def _upstream_url(r: Route) -> URL:
    """The target as the agent sent it: the record's upstream_url has credentials removed."""
    return URL(r.upstream.origin + r.target, encoded=True)


def upstream_context(extra_ca: Path | None) -> ssl.SSLContext | bool:
    """The upstream client's TLS verification: the system's CAs, plus `extra_ca` (a company's
    TLS-inspecting gateway, a test provider's CA) when given. A file that cannot be loaded is
    the user's error, said at start (ValueError naming it)."""
    if extra_ca is None:
        return True  # aiohttp's default verification
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=extra_ca)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(
            f"--upstream-ca {extra_ca}: cannot load it as CA certificates: {e}"
        ) from None
    return context


async def _read_body(request: web.Request, state: Flight) -> bytes:
    """Read a whole request body into the record chunk by chunk, so that an agent that hangs
    up mid-request (the handler is cancelled) leaves what did arrive in the record."""
    chunks = []
    try:
        async for chunk in request.content.iter_any():
            state.request.add(chunk)
            chunks.append(chunk)
    except ConnectionError:
        state.finish(Outcome.CLIENT_DISCONNECT, "client closed the connection mid-request")
        raise web.HTTPBadRequest(text="tapewire: request body ended early") from None
    # One copy serves both the upstream and the record, unless the record was cut at its cap.
    return b"".join(chunks) if state.request.truncated else state.request.joined()


# The last event of each streamed wire format (OpenAI Chat, Anthropic Messages, OpenAI
# Responses, Ollama's NDJSON): past it a stream has said all it will.
_LAST_EVENTS = (b"data: [DONE]", b"event: message_stop", b"event: response.completed",
                b'"done":true')  # fmt: skip


def said_all(body: Tee, headers: Headers) -> bool:
    """Whether the response held so far ends with its wire format's last event. (Under a
    content-encoding the events cannot be seen: the hang-up stands.)"""
    if any(k.lower() == "content-encoding" and v.strip().lower() != "identity" for k, v in headers):
        return False
    tail = b"".join(body.chunks[-4:])[-512:]
    return any(marker in tail for marker in _LAST_EVENTS)


def _abort(request: web.Request) -> None:
    """Cut the agent's connection without a clean end of body, as the upstream did."""
    transport = request.transport
    if transport is not None:
        transport.abort()
