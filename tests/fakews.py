"""A fake provider speaking the Responses API over a WebSocket, on 127.0.0.1, in the test's own
event loop. It keeps every frame it received and every payload it sent, so a test can check
that tapewire passed each one on unchanged.

An agent message `{"type": "response.create", ...}` gets the Responses events as JSON text
frames: a function call when the input ends with a user message, a text answer once it ends
with the call's output. Other text messages script the server: `close <code> <reason>` closes
with that code, `drop` cuts the TCP link without a close frame, `ping <payload>` pings. A
binary message comes back reversed.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from aiohttp import WSMsgType, web

CALL_ID = "call_ws_1"


def _event(kind: str, seq: int, **fields: Any) -> bytes:
    return json.dumps({"type": kind, "sequence_number": seq, **fields}).encode()


def _response(rid: str, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    usage = {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17}
    return {"id": rid, "object": "response", "model": "gpt-fake", "status": status,
            "output": output, "usage": usage if status == "completed" else None}  # fmt: skip


def reply_events(request: dict[str, Any], serial: int) -> list[bytes]:
    """The events answering one response.create, as the SSE stream would carry them."""
    rid = f"resp_ws_{serial}"
    items = request.get("input")
    last = items[-1] if isinstance(items, list) and items else {}
    if isinstance(last, dict) and last.get("type") == "function_call_output":
        item: dict[str, Any] = {"id": f"msg_{serial}", "type": "message", "role": "assistant",
                                "status": "completed",
                                "content": [{"type": "output_text", "text": "It is sunny."}]}  # fmt: skip
        middle = [
            _event("response.output_text.delta", 3, item_id=item["id"], output_index=0,
                   content_index=0, delta="It is "),
            _event("response.output_text.delta", 4, item_id=item["id"], output_index=0,
                   content_index=0, delta="sunny."),
        ]  # fmt: skip
    else:
        item = {"id": f"fc_{serial}", "type": "function_call", "status": "completed",
                "call_id": CALL_ID, "name": "get_weather", "arguments": '{"city":"Oslo"}'}  # fmt: skip
        middle = [
            _event("response.function_call_arguments.delta", 3, item_id=item["id"],
                   output_index=0, delta='{"city":'),
            _event("response.function_call_arguments.delta", 4, item_id=item["id"],
                   output_index=0, delta='"Oslo"}'),
        ]  # fmt: skip
    started = {**item, "status": "in_progress"}
    started.pop("content", None)
    return [
        _event("response.created", 0, response=_response(rid, "in_progress", [])),
        _event("response.in_progress", 1, response=_response(rid, "in_progress", [])),
        _event("response.output_item.added", 2, output_index=0, item=started),
        *middle,
        _event("response.output_item.done", 5, output_index=0, item=item),
        _event("response.completed", 6, response=_response(rid, "completed", [item])),
    ]


class FakeWebSocketProvider:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.handshakes: list[dict[str, str]] = []  # request headers of each upgrade
        self.targets: list[str] = []  # and its path and query
        self.received: list[tuple[str, bytes]] = []  # (WSMsgType name, payload)
        self.sent: list[tuple[str, bytes]] = []
        self.ended = asyncio.Event()  # a connection ended, however
        self.how_ended = ""
        self._runner: web.AppRunner | None = None
        self._serial = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/responses", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.SockSite(self._runner, self.sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _send(self, ws: web.WebSocketResponse, payload: bytes, kind: WSMsgType) -> None:
        self.sent.append((kind.name, payload))
        await ws.send_frame(payload, kind)

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        self.handshakes.append(dict(request.headers))
        self.targets.append(request.path_qs)
        ws = web.WebSocketResponse(autoping=False, autoclose=False, decode_text=False)
        ws.headers["x-fake-upgrade"] = "yes"
        await ws.prepare(request)
        try:
            await self._serve(request, ws)
        finally:
            self.ended.set()
        return ws

    async def _serve(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.CLOSE:
                self.received.append(("CLOSE", msg.data.to_bytes(2, "big") + msg.extra.encode()))
                self.how_ended = "closed"
                await ws.close(code=4001, message=b"bye from fake")
                return
            if msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR, WSMsgType.CLOSING):
                self.how_ended = "dropped"
                return
            data = bytes(msg.data) if isinstance(msg.data, (bytes, bytearray)) else b""
            self.received.append((msg.type.name, data))
            if msg.type is WSMsgType.PING:
                await ws.pong(data)
            elif msg.type is WSMsgType.BINARY:
                await self._send(ws, data[::-1], WSMsgType.BINARY)
            elif msg.type is WSMsgType.TEXT and await self._script(request, ws, data):
                return

    async def _script(self, request: web.Request, ws: web.WebSocketResponse, data: bytes) -> bool:
        """Answer one text message; True when the connection is over."""
        if data.startswith(b"close "):
            _, code, reason = data.decode().split(" ", 2)
            self.sent.append(("CLOSE", int(code).to_bytes(2, "big") + reason.encode()))
            await ws.send_frame(int(code).to_bytes(2, "big") + reason.encode(), WSMsgType.CLOSE)
            answer = await ws.receive()
            self.received.append(
                ("CLOSE", answer.data.to_bytes(2, "big") + (answer.extra or "").encode())
            )
            self.how_ended = "closed"
            return True
        if data == b"drop":
            assert request.transport is not None
            request.transport.abort()
            self.how_ended = "dropped by fake"
            return True
        if data.startswith(b"ping "):
            await ws.ping(data[5:])
            return False
        self._serial += 1
        for payload in reply_events(json.loads(data), self._serial):
            await self._send(ws, payload, WSMsgType.TEXT)
        return False
