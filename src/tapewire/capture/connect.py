"""The HTTPS proxy mode (`tapewire serve --https-proxy`): CONNECT on the proxy listener.

For the LLM API hosts on the allow-list tapewire answers the TLS handshake itself, with a leaf
certificate of its local CA, and serves the decrypted requests with the same `Proxy` as the
base-URL mode: forwarded to https://HOST byte-exact, recorded alike. Every other host gets a
plain tunnel: bytes both ways, nothing parsed, nothing recorded.

Why at the protocol level: aiohttp's web server parses CONNECT, but its handler cannot take
the connection's transport from aiohttp's protocol, and TLS cannot be started under it. So a
new connection's first bytes are looked at here: a CONNECT head is served by this module;
anything else is handed, with those bytes, to aiohttp's own protocol, which from then on
alone reads the connection (nothing added to the base-URL path's per-request work). One
listener thus serves both modes: the base URL and HTTPS_PROXY are the same address, and the
listener's token and loopback rules hold for both.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from tapewire.capture.proxy import Proxy
from tapewire.capture.routing import Route, Upstream, route_host
from tapewire.capture.tls import LocalCA

log = logging.getLogger("tapewire.capture")

DEFAULT_INTERCEPT = (
    "api.anthropic.com",
    "api.openai.com",
    "chatgpt.com",
    "generativelanguage.googleapis.com",
)
HEAD_CAP = 64 * 1024
_CONNECT = b"CONNECT "
_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"

PlainFactory = Callable[[], asyncio.Protocol]


@dataclass(frozen=True)
class ConnectRequest:
    host: str  # lower case, as the client named it
    port: int
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def basic_auth(self) -> tuple[str, str]:
        """(user, password) from Proxy-Authorization: Basic, else ('', '')."""
        value = self.header("proxy-authorization") or ""
        scheme, _, encoded = value.strip().partition(" ")
        if scheme.lower() != "basic":
            return "", ""
        try:
            user, _, password = base64.b64decode(encoded.strip()).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        return user, password


def parse_head(head: bytes) -> ConnectRequest:
    """A CONNECT request's head (without its blank line); ValueError saying what is wrong."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] != "CONNECT" or not parts[2].startswith("HTTP/1."):
        raise ValueError(f"not a CONNECT request line: {lines[0][:200]!r}")
    try:
        target = urlsplit("//" + parts[1])
        host, port = target.hostname, target.port
    except ValueError:
        host, port = None, None
    if not host or port is None or target.path or target.username is not None:
        raise ValueError(f"CONNECT wants HOST:PORT, got {parts[1][:200]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError(f"malformed header line {line[:200]!r}")
        headers.append((name, value.strip()))
    return ConnectRequest(host.rstrip("."), port, headers)


def _answer(transport: asyncio.BaseTransport, status: int, reason: str, message: str,
            extra: str = "") -> None:  # fmt: skip
    """tapewire's own answer to a CONNECT it will not carry out; the connection ends."""
    body = f"tapewire: {message}\n".encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nX-Tapewire-Error: 1\r\n{extra}\r\n"
    )
    transport = cast(asyncio.Transport, transport)
    transport.write(head.encode() + body)
    transport.close()


class HttpsProxy:
    """What the proxy listener does with CONNECT, and the state of its tunnels."""

    def __init__(
        self,
        proxy: Proxy,
        ca: LocalCA,
        *,
        intercept: Iterable[str] = DEFAULT_INTERCEPT,
        token: str | None = None,
        connect_timeout: float = 30.0,
        handshake_timeout: float = 30.0,
        handler_args: dict[str, Any] | None = None,
    ) -> None:
        self.proxy = proxy
        self.ca = ca
        self.intercept = frozenset(h.strip().lower().rstrip(".") for h in intercept if h.strip())
        self.token = token
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.handler_args = handler_args or {}
        self.intercepted = 0
        self.tunnelled = 0
        self._tasks: set[asyncio.Task[None]] = set()  # the loop holds tasks weakly
        self._pipes: set[_Pipe] = set()
        # Every CONNECT's client connection, to be cut at close: a decrypted one's TCP side
        # would otherwise wait on the client's close_notify past the loop's end.
        self._raw: set[asyncio.Transport] = set()
        # One aiohttp server per decrypted connection, alive while its connection is.
        self._servers: weakref.WeakSet[web.Server] = weakref.WeakSet()

    def protocol(self, plain: PlainFactory) -> asyncio.Protocol:
        """The protocol for a new connection on the listener; `plain` makes aiohttp's."""
        return _Sniffer(self, plain)

    def status(self) -> dict[str, Any]:
        return {
            "intercept": sorted(self.intercept),
            "ca": str(self.ca.cert_path),
            "intercepted_connections": self.intercepted,
            "tunnelled_connections": self.tunnelled,
            "open_tunnels": len(self._pipes) // 2,
        }

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for pipe in list(self._pipes):
            if pipe.transport is not None:
                pipe.transport.abort()
        servers = list(self._servers)
        await asyncio.gather(*(s.shutdown(0.1) for s in servers), return_exceptions=True)
        for transport in self._raw:
            transport.abort()
        self._raw.clear()
        await asyncio.sleep(0)  # the aborted transports' callbacks run
        self.ca.close()

    # ---- one CONNECT -------------------------------------------------------------------------

    def connect(self, transport: asyncio.Transport, head: bytes, rest: bytes) -> None:
        self._raw = {t for t in self._raw if not t.is_closing()}
        self._raw.add(transport)
        task = asyncio.get_running_loop().create_task(self._connect(transport, head, rest))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, transport: asyncio.Transport, head: bytes, rest: bytes) -> None:
        try:
            try:
                req = parse_head(head)
            except ValueError as e:
                _answer(transport, 400, "Bad Request", str(e))
                return
            user, password = req.basic_auth()
            if self.token is not None and self.token not in (
                password,
                req.header("x-tapewire-token"),
            ):
                _answer(transport, 407, "Proxy Authentication Required",
                        "missing or wrong token (the proxy URL's password, or x-tapewire-token)",
                        'Proxy-Authenticate: Basic realm="tapewire"\r\n')  # fmt: skip
                return
            if req.host not in self.intercept:
                await self._tunnel(transport, req, rest)
            elif rest:
                # TLS bytes sent before our answer cannot be fed to a TLS server we start after
                # it: the connection still works, as a tunnel, and the miss is said.
                self.proxy.recorder.drop(
                    "https_unrecorded",
                    f"{req.host}: client sent before the CONNECT answer; tunnelled unrecorded",
                )
                await self._tunnel(transport, req, rest)
            else:
                await self._intercept(transport, req, unquote(user) or None)
        except asyncio.CancelledError:
            transport.abort()
            raise
        except Exception:
            log.exception("CONNECT handling failed")
            transport.abort()

    async def _intercept(self, transport: asyncio.Transport, req: ConnectRequest,
                         session: str | None) -> None:  # fmt: skip
        loop = asyncio.get_running_loop()
        try:
            context = self.ca.server_context(req.host)
        except Exception as e:  # the agent's traffic goes on, untouched; the miss is said
            log.exception("no certificate for %s: tunnelling it unrecorded", req.host)
            self.proxy.recorder.drop("https_unrecorded", f"{req.host}: no certificate: {e!r}")
            await self._tunnel(transport, req, b"")
            return
        transport.write(_ESTABLISHED)
        waiting = _Waiting()
        try:
            tls = await loop.start_tls(
                transport,
                waiting,
                context,
                server_side=True,
                ssl_handshake_timeout=self.handshake_timeout,
            )
        except ssl.SSLError as e:  # the client refused the certificate (or spoke no TLS)
            detail = (
                f"TLS handshake with the client for {req.host} failed: {e!r}; does the client "
                f"trust tapewire's CA ({self.ca.cert_path})?"
            )
            log.warning("%s", detail)
            self.proxy.recorder.drop("tls_handshake_failed", detail)
            transport.abort()
            return
        except Exception as e:  # the client hung up or stalled: its own business
            log.debug("TLS handshake with the client for %s ended: %r", req.host, e)
            transport.abort()
            return
        if tls is None:  # the connection closed as the handshake ended
            return
        self.intercepted += 1
        upstream = self.upstream_for(req)

        def resolve(raw_path: str) -> Route:
            return route_host(raw_path, upstream, session)

        async def serve(request: web.BaseRequest) -> web.StreamResponse:
            assert isinstance(request, web.Request)
            return await self.proxy.handle(request, resolve)

        def make_request(
            message: RawRequestMessage,
            payload: StreamReader,
            protocol: RequestHandler,
            writer: AbstractStreamWriter,
            task: asyncio.Task[None],
        ) -> web.BaseRequest:
            # A web.Request, as on the listener, without its 1 MiB body limit (bodies stream).
            return web.Request(
                message, payload, protocol, writer, task, loop, client_max_size=1 << 40
            )

        server = web.Server(
            serve, request_factory=make_request, handler_cancellation=True, loop=loop,
            **self.handler_args,
        )  # fmt: skip
        self._servers.add(server)
        waiting.hand_over(tls, server())

    def upstream_for(self, req: ConnectRequest) -> Upstream:
        """https://HOST:PORT as the client asked, unless an upstream is configured under the
        host's name (`--upstream api.openai.com=URL`: a company gateway, or a test's server)."""
        configured = self.proxy.upstreams.get(req.host)
        if configured is not None:
            return configured
        return Upstream(req.host, "https", req.host, req.port, "")

    async def _tunnel(self, transport: asyncio.Transport, req: ConnectRequest, rest: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                far, far_pipe = await loop.create_connection(
                    lambda: _Pipe(self._pipes), req.host, req.port
                )
        except (OSError, TimeoutError) as e:
            _answer(transport, 502, "Bad Gateway", f"cannot reach {req.host}:{req.port}: {e}")
            return
        self.tunnelled += 1
        near_pipe = _Pipe(self._pipes)
        transport.set_protocol(near_pipe)
        near_pipe.connection_made(transport)
        transport.write(_ESTABLISHED)
        if rest:
            far.write(rest)
        near_pipe.join(far_pipe)
        far_pipe.join(near_pipe)
        transport.resume_reading()


class _Sniffer(asyncio.Protocol):
    """A new connection's first protocol: reads until it knows whether the connection is a
    CONNECT (then the head goes to HttpsProxy) or anything else (then aiohttp takes over)."""

    def __init__(self, https: HttpsProxy, plain: PlainFactory) -> None:
        self.https = https
        self.plain = plain
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.decided = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not derive from asyncio's classes.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.decided:
            return
        assert self.transport is not None
        buf = self.buffer
        buf += data
        if not buf.startswith(_CONNECT):
            if len(buf) < len(_CONNECT) and _CONNECT.startswith(buf):
                return  # too few bytes yet to tell
            self.decided = True
            plain = self.plain()
            self.transport.set_protocol(plain)
            plain.connection_made(self.transport)
            plain.data_received(bytes(buf))
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > HEAD_CAP:
                self.decided = True
                _answer(
                    self.transport, 431, "Request Header Fields Too Large", "CONNECT head too large"
                )
            return
        self.decided = True
        self.transport.pause_reading()  # until the tunnel or TLS takes over the connection
        self.https.connect(self.transport, bytes(buf[:end]), bytes(buf[end + 4 :]))

    def eof_received(self) -> bool | None:
        return None  # closed before it said what it is: nothing to serve

    def connection_lost(self, exc: Exception | None) -> None:
        self.decided = True


class _Waiting(asyncio.Protocol):
    """Holds what the decrypted side delivers between the handshake's end and the moment its
    real protocol (aiohttp's) is attached, then hands it all over in order."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost: list[Exception | None] = []

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        return True  # keep the transport until the real protocol says

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)

    def hand_over(self, transport: asyncio.Transport, target: asyncio.Protocol) -> None:
        transport.set_protocol(target)
        target.connection_made(transport)
        for data in self.data:
            target.data_received(data)
        if self.eof and not target.eof_received():
            transport.close()
        if self.lost:
            target.connection_lost(self.lost[0])


class _Pipe(asyncio.Protocol):
    """One side of a tunnel: what it reads goes to the other side's transport as it arrives;
    while the other side cannot take more, this side is not read (bounded memory)."""

    def __init__(self, registry: set[_Pipe]) -> None:
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.pending: list[bytes] = []
        self.got_eof = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not derive from asyncio's classes.
        self.transport = cast(asyncio.Transport, transport)
        self.registry.add(self)

    def join(self, peer: _Pipe) -> None:
        """Start relaying to `peer`, with what arrived before it was known."""
        self.peer = peer
        pending, self.pending = self.pending, []
        for data in pending:
            self.data_received(data)
        if self.got_eof:
            self._relay_eof()
        if self.lost:
            peer.close()

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending.append(data)
        elif not peer.transport.is_closing():
            peer.transport.write(data)

    def eof_received(self) -> bool | None:
        self.got_eof = True
        if self.peer is not None:
            self._relay_eof()
        return True  # half-closed: the other direction may still be sending

    def _relay_eof(self) -> None:
        peer = self.peer
        assert peer is not None and peer.transport is not None
        if peer.got_eof or not peer.transport.can_write_eof():
            self.close()  # both directions are done (or cannot half-close)
            peer.close()
        elif not peer.transport.is_closing():
            peer.transport.write_eof()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.registry.discard(self)
        if self.peer is not None:
            self.peer.close()
