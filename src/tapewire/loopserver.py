"""An aiohttp server on a thread with an event loop of its own, for the stand-in providers
(`tapewire demo`'s and `tapewire replay`'s): callers in plain, synchronous code (a CLI, an SDK
client, a test) use it as `with Server(...) as server:` and talk to `server.url`."""

from __future__ import annotations

import asyncio
import threading
from typing import Self

from aiohttp import web

from tapewire.service import new_loop

MAX_BODY = 256 * 1024 * 1024


class LoopServer:
    """Subclasses add their routes in `routes` and may open and close what they hold in
    `opened` and `closing` (on the server's loop)."""

    name = "tapewire-server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._loop = new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.name,
                                        daemon=True)  # fmt: skip
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def opened(self) -> None:
        """Called on the loop once the server listens."""

    async def closing(self) -> None:
        """Called on the loop before the server stops."""

    def __enter__(self) -> Self:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        self.routes(app)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        self._runner = runner
        await web.TCPSite(runner, self.host, self.port).start()
        self.port = int(runner.addresses[0][1])
        await self.opened()

    async def _stop(self) -> None:
        await self.closing()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
