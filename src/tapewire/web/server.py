"""The read API served by uvicorn on a thread and event loop of its own (DESIGN.md, "Chosen
parts"): a slow query never delays proxied traffic, and the proxy never delays a read. Its own
listener, too: the proxy can face a team network while the read side stays on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import uvicorn

from tapewire.service import is_loopback, new_loop
from tapewire.store.location import DbRef
from tapewire.web.app import create_app

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
START_TIMEOUT = 30.0


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket, so that an address in use is an OSError here and now (uvicorn would
    log it and exit the process) and port 0's pick is known before serving."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class ReadServer:
    """`start()` binds and serves; `stop()` finishes what is in flight (bounded) and closes
    every store the read threads opened. Beyond loopback it will not start without a token,
    and with one every request must carry it (`Authorization: Bearer <token>`)."""

    def __init__(
        self, db: DbRef, host: str = "127.0.0.1", port: int = 8081, token: str | None = None
    ) -> None:
        if not is_loopback(host) and not token:
            raise ValueError(
                f"refusing to serve the read API on {host} without --token: beyond loopback, "
                "every request must carry it (Authorization: Bearer <token>)"
            )
        self.db = db
        self.host = host
        self.port = port
        self.token = token
        # On loopback without a token, only loopback names in the Host header: a web page
        # cannot then reach the API through a name it rebinds to 127.0.0.1.
        hosts = None if token else {*LOOPBACK_NAMES, host}
        self.app = create_app(db, token=token, hosts=hosts)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        sock = listen_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            log_config=None,  # tapewire's logging, untouched
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            ws="none",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=self._run, args=(server, sock), name="tapewire-api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the read API did not start (see the log above)")
            time.sleep(0.01)

    @staticmethod
    def _run(server: uvicorn.Server, sock: socket.socket) -> None:
        loop = new_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            sock.close()
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join()
        self._server = self._thread = None
        self.app.state.readers.stop()  # if the lifespan did not get to it
