"""The demo's agents: the recorded Claude Code requests, replayed as sent, and a client playing
the scripted OpenAI conversation, both talking to the proxy as real agents do."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tapewire import __version__
from tapewire.demo.recording import RecordedTurn
from tapewire.demo.script import REPLIES, SESSION, first_request, run_tool


class DemoError(RuntimeError):
    """The demo could not record what it meant to."""


async def replay_recording(proxy_url: str, turns: list[RecordedTurn]) -> None:
    """Send every recorded request, raw bytes and recorded headers, as Claude Code did, and
    check that what comes back is the recorded response, byte for byte."""
    # auto_decompress off: the gzip body is compared as it crossed the wire.
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for turn in turns:
            async with http.post(
                proxy_url + "/v1/messages?beta=true",
                headers=turn.request_headers,
                data=turn.request_body,
            ) as resp:
                body = await resp.read()
            if resp.status != turn.status or body != b"".join(turn.response_chunks):
                raise DemoError(f"{turn.name}: the proxy did not pass the recorded response on")


async def read_chat_stream(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The assistant message a streamed chat completion adds up to, as a client rebuilds it:
    content deltas joined, tool calls gathered by index."""
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    async for line in resp.content:
        if not line.startswith(b"data: "):
            continue
        data = line[len(b"data: ") :].strip()
        if data == b"[DONE]":
            continue  # read on to the end: leaving early would record a client hang-up
        for choice in json.loads(data)["choices"]:
            delta = choice["delta"]
            text.append(delta.get("content") or "")
            for part in delta.get("tool_calls") or []:
                call = calls.setdefault(
                    part["index"],
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                call["id"] = part.get("id") or call["id"]
                function = part.get("function") or {}
                call["function"]["name"] += function.get("name") or ""
                call["function"]["arguments"] += function.get("arguments") or ""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message


async def play_conversation(proxy_url: str) -> None:
    """The user's side of the scripted conversation, under the session name `SESSION`: ask,
    run each tool the model calls (scripted results), send the results back, until it answers."""
    url = f"{proxy_url}/s/{SESSION}/v1/chat/completions"
    headers = {
        "content-type": "application/json",
        "accept": "application/json",
        "user-agent": f"tapewire-demo/{__version__}",
    }
    request = first_request()
    async with aiohttp.ClientSession() as http:
        for _ in REPLIES:
            async with http.post(url, data=json.dumps(request).encode(), headers=headers) as resp:
                if resp.status != 200:
                    raise DemoError(f"chat completion failed: {resp.status} {await resp.text()}")
                message = await read_chat_stream(resp)
            request["messages"].append(message)
            if "tool_calls" not in message:
                return
            for call in message["tool_calls"]:
                function = call["function"]
                output = run_tool(function["name"], function["arguments"])
                request["messages"].append(
                    {"role": "tool", "tool_call_id": call["id"], "content": output}
                )
    raise DemoError("the scripted conversation did not come to an answer")
