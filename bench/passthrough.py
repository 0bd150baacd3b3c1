"""A bare aiohttp pass-through proxy that records nothing: the physical limit of a Python proxy.

    python bench/passthrough.py --listen 127.0.0.1:PORT --upstream URL

Prints its URL on stdout once listening (port 0 picks a free one). Same server and client
settings as tapewire's proxy (no access log, handler cancellation, auto_decompress off, no
auto headers), minus everything to do with recording.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

import aiohttp
from aiohttp import web
from yarl import URL

HOP = frozenset(
    {"connection", "proxy-connection", "keep-alive", "te", "trailer", "transfer-encoding"}
    | {"upgrade", "host"}
)
SKIP_AUTO = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})


async def serve(host: str, port: int, upstream: str) -> None:
    client = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
        skip_auto_headers=SKIP_AUTO,
        timeout=aiohttp.ClientTimeout(total=None, sock_read=600),
    )

    async def handle(request: web.Request) -> web.StreamResponse:
        fwd = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
        body = await request.read() if request.body_exists else None
        url = URL(upstream + request.raw_path, encoded=True)
        async with client.request(
            request.method, url, headers=fwd, data=body, allow_redirects=False
        ) as up:
            out = web.StreamResponse(status=up.status, reason=up.reason)
            for k, v in up.headers.items():
                if k.lower() not in HOP:
                    out.headers.add(k, v)
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    app = web.Application(client_max_size=1 << 40)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"http://{host}:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()  # until killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT")
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9000")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(host, int(port), args.upstream.rstrip("/")))


if __name__ == "__main__":
    main()
