"""The replay server: a stand-in for the providers that answers an agent's requests with a
recorded session's responses, byte for byte, in the recorded chunks and (with recorded timing)
at the recorded pace. It listens on loopback, on a thread with its own event loop.

A request the recording does not hold gets a provider-shaped 400 error that says which turn it
left the recording at and how it differs, unless `forward` names where to send it instead
(`--on-miss passthrough`): then the real upstream answers, and the tapewire proxy in front of
this server records the new branch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aiohttp
from aiohttp import WSMsgType, web

from tapewire import query
from tapewire.content_encoding import DecodeError, decode
from tapewire.loopserver import LoopServer
from tapewire.model import Frame, ws_messages
from tapewire.providers import api_for
from tapewire.replay.match import SESSION_PREFIX, Miss, Recorded, Recording
from tapewire.store import Store

log = logging.getLogger("tapewire.replay")

# About the recorded connection, not the message: aiohttp frames the replay itself.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade", "content-length"})  # fmt: skip


def load(store: Store, session: str) -> Recording:
    """A session's exchanges, in timeline order, as the replay serves them."""
    out = []
    for turn in query.session_detail(store, session)["turns"]:
        row = store.exchange(turn["exchange_id"])
        if row is None or row.response_body is None or row.status is None:
            continue
        request = row.request_body or b""
        with contextlib.suppress(DecodeError):  # else matched as stored
            request = decode(request, row.request_encoding).data
        t = row.timings
        first, ended = t.get("first_byte"), t.get("request_end") or t.get("started")
        out.append(Recorded(
            exchange=row.id, turn=turn["index"], path=row.path, request=request,
            status=row.status, headers=list(row.response_headers), body=row.response_body,
            chunks=row.response_chunks,
            ttfb_ms=(first - ended) * 1000 if first is not None and ended is not None else None,
            messages=None if row.ws_frames is None else _messages(row.ws_frames, row.response_body),
        ))  # fmt: skip
    return Recording(out)


def _messages(frames: list[Frame], body: bytes) -> list[tuple[bytes, int, float]]:
    """A WebSocket exchange's upstream data messages, timed from the agent's message."""
    asked = next((f.ms for f in frames if f.source == "agent" and not f.control), 0.0)
    sent = [f for f in frames if f.source == "upstream" and not f.control]
    payloads = ws_messages(frames, body, "upstream")
    return [(data, f.opcode, f.ms - asked) for data, f in zip(payloads, sent, strict=True)]


def pieces(recorded: Recorded) -> list[tuple[bytes, float]]:
    """The body in its recorded chunks, each with its time after the first byte (ms). Without a
    recorded map: server-sent events one by one, anything else whole."""
    body = recorded.body
    if recorded.chunks and sum(size for size, _ in recorded.chunks) == len(body):
        out, at = [], 0
        for size, ms in recorded.chunks:
            out.append((body[at : at + size], ms))
            at += size
        return out
    encoded = any(k.lower() == "content-encoding" for k, _ in recorded.headers)
    if not encoded and b"\n\n" in body:
        events = body.split(b"\n\n")
        parts = [e + b"\n\n" for e in events[:-1]] + ([events[-1]] if events[-1] else [])
        return [(p, 0.0) for p in parts]
    return [(body, 0.0)]


def miss_response(api: str | None, miss: Miss) -> web.Response:
    """The miss, as the agent's provider would say a request was wrong."""
    message = miss.explain()
    if api == "anthropic.messages":
        body: object = {"type": "error", "error": {"type": "invalid_request_error",
                                                   "message": message}}  # fmt: skip
    elif api and api.startswith("ollama"):
        body = {"error": message}
    else:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                          "code": "tapewire_replay_miss"}}  # fmt: skip
    return web.json_response(body, status=400, headers={"x-should-retry": "false"})


class ReplayServer(LoopServer):
    """`with ReplayServer(recording) as server:` serves on `server.url` until the block ends.
    `timing`: "fast" (as fast as the client reads) or "recorded" (the recorded time to first
    byte and gaps between chunks). `forward`: where misses go, or None to refuse them."""

    name = "tapewire-replay"

    def __init__(
        self,
        recording: Recording,
        *,
        timing: str = "fast",
        forward: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.recording = recording
        self.timing = timing
        self.forward = forward  # provider name -> upstream base URL
        self.misses: list[Miss] = []
        self.forwarded = 0
        self._http: aiohttp.ClientSession | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    async def opened(self) -> None:
        if self.forward is not None:
            self._http = aiohttp.ClientSession(auto_decompress=False)

    async def closing(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # An agent set up for the proxy's `/s/<name>/` prefix is answered as the proxy would.
        path = SESSION_PREFIX.sub("", request.path_qs, count=1)
        if request.method == "GET" and "websocket" in request.headers.get("upgrade", "").lower():
            return await self._websocket(request, path)
        body = await request.read()
        with contextlib.suppress(DecodeError):
            body = decode(body, request.headers.get("content-encoding")).data
        found = self.recording.answer(path, body)
        if isinstance(found, Recorded):
            return await self._send(request, found)
        self.misses.append(found)
        log.warning("replay miss: %s", found.explain().splitlines()[0])
        if self.forward is not None:
            return await self._pass_through(request, path, body)
        return miss_response(api_for(request.method, path), found)

    async def _send(self, request: web.Request, recorded: Recorded) -> web.StreamResponse:
        paced = self.timing == "recorded"
        if paced and recorded.ttfb_ms:
            await asyncio.sleep(recorded.ttfb_ms / 1000)
        response = web.StreamResponse(status=recorded.status)
        for name, value in recorded.headers:
            if name.lower() not in HOP_BY_HOP and value:  # credentials were never stored
                response.headers.add(name, value)
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for chunk, at_ms in pieces(recorded):
            if paced:
                delay = start + at_ms / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await response.write(chunk)
            await asyncio.sleep(0)  # each chunk leaves alone, as it arrived
        await response.write_eof()
        return response

    async def _websocket(self, request: web.Request, path: str) -> web.WebSocketResponse:
        """A recorded WebSocket session (the Responses API's): each message the agent sends is
        answered with the recorded upstream messages of the exchange it matches, as they were
        (text or binary, the same bytes; at the recorded pace with recorded timing). A message
        the recording does not hold is answered with an `error` event saying where it left
        the recording; misses are not passed through over a WebSocket."""
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        paced = self.timing == "recorded"
        loop = asyncio.get_running_loop()
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            body = msg.data.encode() if msg.type is WSMsgType.TEXT else msg.data
            found = self.recording.answer(path, body)
            if not isinstance(found, Recorded) or found.messages is None:
                miss = found if isinstance(found, Miss) else Miss(path, found)
                self.misses.append(miss)
                log.warning("replay miss: %s", miss.explain().splitlines()[0])
                await ws.send_str(json.dumps({"type": "error", "error": {
                    "type": "invalid_request_error", "code": "tapewire_replay_miss",
                    "message": miss.explain()}}))  # fmt: skip
                continue
            start = loop.time()
            for data, opcode, at_ms in found.messages:
                if paced and (delay := start + at_ms / 1000 - loop.time()) > 0:
                    await asyncio.sleep(delay)
                if opcode == WSMsgType.TEXT:
                    await ws.send_str(data.decode("utf-8", "surrogateescape"))
                else:
                    await ws.send_bytes(data)
        return ws

    async def _pass_through(
        self, request: web.Request, path: str, body: bytes
    ) -> web.StreamResponse:
        """A miss, sent on to the real upstream: the one of the provider this path speaks."""
        assert self._http is not None and self.forward is not None
        provider = _provider(request.method, path)
        base = self.forward.get(provider or "", "")
        if not base:
            return web.json_response(
                {"error": f"tapewire replay: no upstream to pass {provider} requests to"},
                status=502,
            )
        self.forwarded += 1
        # The body goes on decoded: its content-encoding stays behind with the host.
        headers = [(k, v) for k, v in request.headers.items()
                   if k.lower() not in HOP_BY_HOP | {"host", "content-encoding"}]  # fmt: skip
        async with self._http.request(
            request.method, base.rstrip("/") + path, headers=headers, data=body
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for k, v in upstream.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    response.headers.add(k, v)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


def _provider(method: str, path: str) -> str | None:
    api = api_for(method, path)
    return api.split(".")[0] if api else None
