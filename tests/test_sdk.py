"""The real SDKs, sync and async, streaming and not, get the same objects through tapewire as
they get from the provider directly; and each call is recorded."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from conftest import stored
from fakeprovider import FakeProvider
from tapewire.service import Service

MESSAGES: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
TOOLS_ANTHROPIC: list[Any] = [
    {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}
]
TOOLS_OPENAI: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
]


def _dump(obj: Any) -> Any:
    return obj.model_dump() if hasattr(obj, "model_dump") else obj


def anthropic_calls(client: anthropic.Anthropic) -> list[Any]:
    out: list[Any] = []
    for tools in ([], TOOLS_ANTHROPIC):
        kw: dict[str, Any] = {"model": "claude-test", "max_tokens": 64, "messages": MESSAGES}
        if tools:
            kw["tools"] = tools
        out.append(_dump(client.messages.create(**kw)))
        out.append([_dump(e) for e in client.messages.create(**kw, stream=True)])
        with client.messages.stream(**kw) as s:
            out.append(_dump(s.get_final_message()))
    return out


async def anthropic_calls_async(client: anthropic.AsyncAnthropic) -> list[Any]:
    out: list[Any] = []
    for tools in ([], TOOLS_ANTHROPIC):
        kw: dict[str, Any] = {"model": "claude-test", "max_tokens": 64, "messages": MESSAGES}
        if tools:
            kw["tools"] = tools
        out.append(_dump(await client.messages.create(**kw)))
        out.append([_dump(e) async for e in await client.messages.create(**kw, stream=True)])
        async with client.messages.stream(**kw) as s:
            out.append(_dump(await s.get_final_message()))
    return out


def openai_calls(client: openai.OpenAI) -> list[Any]:
    out: list[Any] = []
    for tools in ([], TOOLS_OPENAI):
        kw: dict[str, Any] = {"model": "gpt-test", "messages": MESSAGES}
        if tools:
            kw["tools"] = tools
        out.append(_dump(client.chat.completions.create(**kw)))
        stream = client.chat.completions.create(
            **kw, stream=True, stream_options={"include_usage": True}
        )
        out.append([_dump(c) for c in stream])
    return out


async def openai_calls_async(client: openai.AsyncOpenAI) -> list[Any]:
    out: list[Any] = []
    for tools in ([], TOOLS_OPENAI):
        kw: dict[str, Any] = {"model": "gpt-test", "messages": MESSAGES}
        if tools:
            kw["tools"] = tools
        out.append(_dump(await client.chat.completions.create(**kw)))
        stream = await client.chat.completions.create(
            **kw, stream=True, stream_options={"include_usage": True}
        )
        out.append([_dump(c) async for c in stream])
    return out


def _assert_recorded(service: Service, n: int, provider: str) -> None:
    rows = stored(service).exchanges(limit=1000)
    assert len(rows) == n
    assert {r.provider for r in rows} == {provider}
    assert {r.outcome for r in rows} == {"complete"}
    assert {r.status for r in rows} == {200}
    assert all(r.timings["first_byte"] and r.timings["last_byte"] for r in rows)


def test_anthropic_sync(fake: FakeProvider, recorder: Service) -> None:
    with anthropic.Anthropic(base_url=fake.url, api_key="sk-test") as client:
        direct = anthropic_calls(client)
    with anthropic.Anthropic(base_url=recorder.url, api_key="sk-test") as client:
        proxied = anthropic_calls(client)
    assert proxied == direct
    assert any(block["type"] == "tool_use" for block in direct[3]["content"])
    _assert_recorded(recorder, 6, "anthropic")


async def test_anthropic_async(fake: FakeProvider, recorder: Service) -> None:
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key="k") as client:
        direct = await anthropic_calls_async(client)
    async with anthropic.AsyncAnthropic(base_url=recorder.url, api_key="k") as client:
        proxied = await anthropic_calls_async(client)
    assert proxied == direct
    _assert_recorded(recorder, 6, "anthropic")


def test_openai_sync(fake: FakeProvider, recorder: Service) -> None:
    with openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-test") as client:
        direct = openai_calls(client)
    with openai.OpenAI(base_url=recorder.url + "/v1", api_key="sk-test") as client:
        proxied = openai_calls(client)
    assert proxied == direct
    assert direct[2]["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    _assert_recorded(recorder, 4, "openai")


async def test_openai_async(fake: FakeProvider, recorder: Service) -> None:
    async with openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key="k") as client:
        direct = await openai_calls_async(client)
    async with openai.AsyncOpenAI(base_url=recorder.url + "/v1", api_key="k") as client:
        proxied = await openai_calls_async(client)
    assert proxied == direct
    _assert_recorded(recorder, 4, "openai")


@pytest.mark.parametrize("prefix", ["/anthropic", "/s/run-42", "/s/run-42/anthropic"])
def test_prefixes_route_and_are_stripped(
    fake: FakeProvider, recorder: Service, prefix: str
) -> None:
    with anthropic.Anthropic(base_url=recorder.url + prefix, api_key="k") as client:
        client.messages.create(model="claude-test", max_tokens=8, messages=MESSAGES)
    assert fake.received[-1].raw_path == "/v1/messages"
    (row,) = stored(recorder).exchanges()
    assert row.path == prefix + "/v1/messages"
    assert row.session == ("run-42" if "/s/" in prefix else None)
    assert row.upstream == "anthropic"


def test_request_headers_reach_upstream_as_sent(fake: FakeProvider, recorder: Service) -> None:
    """What the SDK sends is what the provider gets: same headers, same order, same body."""
    for url in (fake.url, recorder.url):
        with anthropic.Anthropic(base_url=url, api_key="sk-direct") as client:
            client.messages.create(model="claude-test", max_tokens=8, messages=MESSAGES)
    direct, proxied = fake.received

    def comparable(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        # host names the listener and connection is hop-by-hop (RFC 9110 7.6.1): both are
        # the proxy's to set. The SDK's own per-request retry/timing headers vary.
        varying = {"host", "connection", "x-stainless-retry-count", "x-stainless-read-timeout"}
        return [(k.lower(), v) for k, v in headers if k.lower() not in varying]

    assert comparable(proxied.headers) == comparable(direct.headers)
    assert proxied.body == direct.body
    host = dict((k.lower(), v) for k, v in proxied.headers)["host"]
    assert host == fake.url.removeprefix("http://")
