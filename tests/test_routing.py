"""Routing and header rules: pure functions, checked case by case."""

from __future__ import annotations

import pytest

from tapewire.capture.headers import CREDENTIAL_HEADERS, evidence, forwardable, storable
from tapewire.capture.routing import RouteError, Upstream, parse_upstreams, route

UPSTREAMS = parse_upstreams(["gw=http://127.0.0.1:9000/base/", "openai=http://127.0.0.1:9001"])


@pytest.mark.parametrize(
    ("raw", "upstream", "target", "provider", "session"),
    [
        ("/v1/messages?beta=true", "anthropic", "/v1/messages?beta=true", "anthropic", None),
        ("/v1/messages/count_tokens", "anthropic", "/v1/messages/count_tokens", None, None),
        ("/v1/chat/completions", "openai", "/v1/chat/completions", "openai", None),
        ("/v1/responses", "openai", "/v1/responses", "openai", None),
        ("/api/chat", "ollama", "/api/chat", "ollama", None),
        ("/api/generate", "ollama", "/api/generate", "ollama", None),
        ("/api/tags", "ollama", "/api/tags", None, None),
        ("/v1/models", "openai", "/v1/models", None, None),  # unknown: the default upstream
        ("/s/abc/v1/messages", "anthropic", "/v1/messages", "anthropic", "abc"),
        ("/s/a%2Fb/v1/messages", "anthropic", "/v1/messages", "anthropic", "a/b"),
        ("/anthropic/v1/models", "anthropic", "/v1/models", None, None),
        (
            "/openai/v1/chat/completions?x=%20",
            "openai",
            "/v1/chat/completions?x=%20",
            "openai",
            None,
        ),
        ("/ollama/api/chat", "ollama", "/api/chat", "ollama", None),
        ("/u/gw/v1/chat/completions", "gw", "/base/v1/chat/completions", "openai", None),
        ("/s/run1/u/gw/anything", "gw", "/base/anything", None, "run1"),
        ("/v1/messagesX", "openai", "/v1/messagesX", None, None),  # a prefix, not a path segment
    ],
)
def test_route(
    raw: str, upstream: str, target: str, provider: str | None, session: str | None
) -> None:
    r = route(raw, UPSTREAMS)
    assert (r.upstream.name, r.target, r.provider, r.session) == (
        upstream,
        target,
        provider,
        session,
    )


def test_unknown_upstream_name_is_a_clear_error() -> None:
    with pytest.raises(RouteError, match="--upstream nope=URL"):
        route("/u/nope/v1/chat/completions", UPSTREAMS)


def test_upstream_specs() -> None:
    assert UPSTREAMS["anthropic"].origin == "https://api.anthropic.com"
    assert UPSTREAMS["gw"].host_header == "127.0.0.1:9000"
    assert Upstream.parse("x", "http://[::1]:8080").origin == "http://[::1]:8080"
    with pytest.raises(ValueError, match="NAME=URL"):
        parse_upstreams(["nourl"])
    with pytest.raises(ValueError, match="not an http"):
        parse_upstreams(["x=ftp://host"])


def test_hop_by_hop_headers_are_not_forwarded_and_repeats_are_kept() -> None:
    headers = [
        ("Host", "h"), ("Connection", "keep-alive, X-Private"), ("X-Private", "1"),
        ("Keep-Alive", "timeout=5"), ("TE", "trailers"), ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"), ("Proxy-Connection", "x"), ("X-Multi", "a"), ("x-multi", "b"),
        ("Content-Type", "application/json"),
    ]  # fmt: skip
    assert forwardable(headers) == [
        ("Host", "h"), ("X-Multi", "a"), ("x-multi", "b"), ("Content-Type", "application/json"),
    ]  # fmt: skip


def test_credentials_are_blanked_for_storage() -> None:
    headers = [("Authorization", "Bearer s"), ("X-Api-Key", "k"), ("Cookie", "c"), ("A", "b")]
    assert storable(headers, CREDENTIAL_HEADERS) == [
        ("Authorization", ""), ("X-Api-Key", ""), ("Cookie", ""), ("A", "b"),
    ]  # fmt: skip


def test_session_evidence() -> None:
    e = evidence(
        [("x-claude-code-session-id", "cc"), ("x-claude-code-agent-id", ""),
         ("session_id", "cx"), ("thread-id", "th"), ("x-tapewire-session", "tw")],
        None,
    )  # fmt: skip
    assert e.as_dict() == {
        "session": "tw",
        "claude_session": "cc",
        "codex_session": "cx",
        "codex_thread": "th",
    }
    assert evidence([("x-tapewire-session", "hdr")], "path").session == "path"
