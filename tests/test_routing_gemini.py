"""Routing of Gemini and of Codex's ChatGPT backend, and credentials kept out of recorded URLs."""

from __future__ import annotations

import pytest

from tapewire.capture.headers import storable_target
from tapewire.capture.routing import parse_upstreams, route
from tapewire.providers import api_for

UPSTREAMS = parse_upstreams(["gw=http://127.0.0.1:9000/base/"])


@pytest.mark.parametrize(
    ("raw", "upstream", "target", "provider"),
    [
        (
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "gemini",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            "gemini",
        ),
        (
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            "gemini",
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            "gemini",
        ),
        ("/v1/models/gemini-2.0-flash:generateContent", "gemini", "=", "gemini"),
        ("/v1alpha/tunedModels/mine:generateContent", "gemini", "=", "gemini"),
        ("/v1beta/models/gemini-2.5-flash:countTokens", "gemini", "=", None),
        ("/v1beta/models", "gemini", "=", None),
        ("/v1beta/cachedContents", "gemini", "=", None),
        ("/upload/v1beta/files", "gemini", "=", None),
        ("/v1/models", "openai", "=", None),  # OpenAI's model list, not Gemini's
        ("/v1/models/gpt-4o", "openai", "=", None),
        (
            "/gemini/v1beta/models/m:generateContent",
            "gemini",
            "/v1beta/models/m:generateContent",
            "gemini",
        ),
        (
            "/s/run/gemini/v1/models/m:streamGenerateContent",
            "gemini",
            "/v1/models/m:streamGenerateContent",
            "gemini",
        ),
        (
            "/u/gw/v1beta/models/m:generateContent",
            "gw",
            "/base/v1beta/models/m:generateContent",
            "gemini",
        ),
        ("/backend-api/codex/responses", "chatgpt", "=", "openai"),
        ("/s/run/backend-api/codex/responses", "chatgpt", "/backend-api/codex/responses", "openai"),
        ("/backend-api/wham/usage", "chatgpt", "=", None),
        (
            "/chatgpt/backend-api/codex/responses",
            "chatgpt",
            "/backend-api/codex/responses",
            "openai",
        ),
    ],
)
def test_route(raw: str, upstream: str, target: str, provider: str | None) -> None:
    """`target` "=": forwarded to the path as sent."""
    r = route(raw, UPSTREAMS)
    expected = raw if target == "=" else target
    assert (r.upstream.name, r.target, r.provider) == (upstream, expected, provider)


def test_default_upstreams() -> None:
    assert UPSTREAMS["gemini"].origin == "https://generativelanguage.googleapis.com"
    assert UPSTREAMS["chatgpt"].origin == "https://chatgpt.com"
    custom = parse_upstreams(["gemini=http://127.0.0.1:1/g", "chatgpt=http://127.0.0.1:2"])
    r = route("/v1beta/models/m:generateContent?key=k", custom)
    assert (
        r.upstream.origin + r.target == "http://127.0.0.1:1/g/v1beta/models/m:generateContent?key=k"
    )


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1beta/models/gemini-2.5-flash:generateContent", "gemini.generate"),
        ("/s/x/gemini/v1beta/models/m:streamGenerateContent?alt=sse&key=k", "gemini.generate"),
        ("/v1beta/models/m:countTokens", None),
        ("/backend-api/codex/responses", "openai.responses"),
    ],
)
def test_api_for(path: str, api: str | None) -> None:
    assert api_for("POST", path) == api


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("/v1beta/models/m:generateContent", "/v1beta/models/m:generateContent"),
        (
            "/v1beta/models/m:generateContent?key=AIzaSECRET",
            "/v1beta/models/m:generateContent?key=",
        ),
        ("/m?alt=sse&key=AIzaSECRET&x=%20", "/m?alt=sse&key=&x=%20"),
        ("/m?ke%79=AIzaSECRET", "/m?ke%79="),  # the name percent-encoded
        ("/m?access_token=ya29.SECRET&keyring=1", "/m?access_token=&keyring=1"),
        ("/m?key", "/m?key="),
        ("/m?", "/m?"),
    ],
)
def test_storable_target(raw: str, stored: str) -> None:
    assert storable_target(raw) == stored
