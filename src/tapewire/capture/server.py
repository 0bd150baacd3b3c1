"""The proxy listener: an aiohttp server for every provider, plus tapewire's own control paths
under /_tapewire/ (status, run context)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tapewire.capture.proxy import Proxy

CONTROL_PREFIX = "/_tapewire/"

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
    ) -> None:
        self.proxy = proxy
        self._status = status
        self._record_context = record_context
        self.token = token
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 40, handler_args={"max_field_size": 65536})
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
        # auto_decompress off: a compressed request body (Codex sends zstd) is forwarded as sent.
        self._runner = web.AppRunner(
            self._app(),
            handler_cancellation=True,
            auto_decompress=False,
            access_log=None,
            shutdown_timeout=0.1,
        )
        await self._runner.setup()
        # A burst of agents (or subagents) connecting at once must not overflow the accept queue.
        self._site = web.TCPSite(self._runner, host, port, reuse_address=True, backlog=1024)
        await self._site.start()
        server = self._site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def stop_accepting(self) -> None:
        if self._site is not None:
            await self._site.stop()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.proxy.close()
