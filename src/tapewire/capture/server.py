"""The proxy listener: an aiohttp server for every provider, plus tapewire's own control paths
under /_tapewire/ (status, run context), and with the HTTPS proxy mode, CONNECT (connect.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tapewire.capture.connect import HttpsProxy
from tapewire.capture.proxy import Proxy

CONTROL_PREFIX = "/_tapewire/"
# For each connection's aiohttp protocol, on the listener and (connect.py) inside a decrypted
# CONNECT alike. auto_decompress off: a compressed request body (Codex sends zstd) is
# forwarded as sent.
HANDLER_ARGS: dict[str, Any] = {
    "max_field_size": 65536,
    "auto_decompress": False,
    "access_log": None,
}

StatusFn = Callable[[], dict[str, Any]]
ContextFn = Callable[[str, dict[str, Any]], None]


class ProxyServer:
    def __init__(
        self,
        proxy: Proxy,
        *,
        status: StatusFn,
        record_context: ContextFn,
        token: str | None = None,
        https: HttpsProxy | None = None,
    ) -> None:
        self.proxy = proxy
        self.https = https
        self._status = status
        self._record_context = record_context
        self.token = token
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._listener: asyncio.Server | None = None  # instead of the site, with --https-proxy
        self.port = 0

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 40)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if self.token is not None and not self._authorised(request):
            return web.json_response(
                {"error": "tapewire: missing or wrong x-tapewire-token"}, status=401
            )
        if request.path.startswith(CONTROL_PREFIX):
            return await self._control(request)
        return await self.proxy.handle(request)

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("x-tapewire-token") == self.token

    async def _control(self, request: web.Request) -> web.StreamResponse:
        what = request.path[len(CONTROL_PREFIX) :]
        if what == "status" and request.method == "GET":
            return web.json_response(self._status())
        if what == "context" and request.method == "POST":
            doc = json.loads(await request.read())
            self._record_context(str(doc["session"]), dict(doc["context"]))
            return web.json_response({"ok": True})
        return web.json_response({"error": f"tapewire: no control path {request.path}"}, status=404)

    async def start(self, host: str, port: int) -> int:
        await self.proxy.start()
        # handler_cancellation: an agent that hangs up cancels its upstream request at once.
        self._runner = web.AppRunner(
            self._app(), handler_cancellation=True, shutdown_timeout=0.1, **HANDLER_ARGS
        )
        await self._runner.setup()
        if self.https is not None:
            # CONNECT cannot be served from inside aiohttp: each connection's first bytes pick
            # CONNECT handling or aiohttp's protocol (connect.py says why).
            https, plain = self.https, self._runner.server
            assert plain is not None
            self._listener = await asyncio.get_running_loop().create_server(
                lambda: https.protocol(plain), host, port, reuse_address=True, backlog=1024
            )
            self.port = self._listener.sockets[0].getsockname()[1]
            return self.port
        # A burst of agents (or subagents) connecting at once must not overflow the accept queue.
        self._site = web.TCPSite(self._runner, host, port, reuse_address=True, backlog=1024)
        await self._site.start()
        server = self._site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def stop_accepting(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._site is not None:
            await self._site.stop()

    async def close(self) -> None:
        if self.https is not None:
            await self.https.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.proxy.close()
