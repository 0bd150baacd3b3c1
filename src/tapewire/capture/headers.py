"""Header rules: what a proxy must not forward (hop-by-hop) and what must never be stored
(credential headers, and credentials that clients put in the URL's query)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote_plus

from tapewire.model import Evidence, Headers

# RFC 9110 §7.6.1: meaningful for one connection only. Host is rewritten for the upstream.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "cookie",
        "set-cookie",
        "x-goog-api-key",
        "openai-organization",
        "openai-project",
        "chatgpt-account-id",
        "x-tapewire-token",
    }
)


# Query parameters that carry a credential: Google's APIs take the API key as `?key=` (the
# Gemini REST examples do) and an OAuth token as `?access_token=`.
CREDENTIAL_QUERY = frozenset({"key", "access_token"})


def storable_target(raw: str, credentials: frozenset[str] = CREDENTIAL_QUERY) -> str:
    """A request target (path and query, undecoded) for the record: a credential parameter
    keeps its name with the value gone, like a credential header; all else stays as sent."""
    path, qmark, query = raw.partition("?")
    if not qmark:
        return raw
    kept = []
    for item in query.split("&"):
        name = item.partition("=")[0]
        kept.append(name + "=" if unquote_plus(name) in credentials else item)
    return path + qmark + "&".join(kept)


def hop_by_hop(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The fixed hop-by-hop names plus any the Connection header lists."""
    named = {
        token.strip().lower()
        for k, v in headers
        if k.lower() == "connection"
        for token in v.split(",")
        if token.strip()
    }
    return HOP_BY_HOP | named


def forwardable(headers: Headers, drop: frozenset[str] = frozenset()) -> Headers:
    """Headers for the next hop, order and repeats kept."""
    skip = hop_by_hop(headers) | drop
    return [(k, v) for k, v in headers if k.lower() not in skip]


def storable(headers: Headers, credentials: frozenset[str]) -> Headers:
    """Headers for the record: credentials keep their name with the value gone, so a reader
    can still tell that a request was authenticated and how."""
    return [(k, "") if k.lower() in credentials else (k, v) for k, v in headers]


def evidence(headers: Headers, session: str | None) -> Evidence:
    """Session and thread identity as the harnesses put it on the wire."""
    found = Evidence(session=session)
    for k, v in headers:
        key = k.lower()
        if key == "x-tapewire-session" and not found.session:
            found.session = v
        elif key == "x-claude-code-session-id":
            found.claude_session = v
        elif key == "x-claude-code-agent-id" and v:
            found.claude_agent = v
        elif key in ("session_id", "session-id"):
            found.codex_session = v
        elif key == "thread-id":
            found.codex_thread = v
    return found
