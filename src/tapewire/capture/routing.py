"""Which upstream a request goes to, and which wire format it speaks: a pure function of the path."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_UPSTREAMS: dict[str, str] = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com",
    "ollama": "http://127.0.0.1:11434",
    "gemini": "https://generativelanguage.googleapis.com",
    "chatgpt": "https://chatgpt.com",  # Codex with a ChatGPT login: /backend-api/...
}
# Upstreams an explicit path prefix names (/anthropic/..., /gemini/...).
PROVIDER_NAMES = ("anthropic", "openai", "ollama", "gemini", "chatgpt")

# Path shapes, most specific first: (path prefix, upstream, provider when the exchange is an LLM call).
_SHAPES: tuple[tuple[str, str, str | None], ...] = (
    ("/v1/messages/count_tokens", "anthropic", None),
    ("/v1/messages/batches", "anthropic", None),
    ("/v1/messages", "anthropic", "anthropic"),
    ("/v1/complete", "anthropic", None),
    ("/v1/chat/completions", "openai", "openai"),
    ("/v1/responses", "openai", "openai"),
    ("/api/chat", "ollama", "ollama"),
    ("/api/generate", "ollama", "ollama"),
    ("/api/", "ollama", None),
    # Codex signed in with ChatGPT speaks the Responses API to the ChatGPT backend.
    ("/backend-api/codex/responses", "chatgpt", "openai"),
    ("/backend-api/", "chatgpt", None),
)

# Google's API versions: nothing else uses them, so any path under one is Gemini's.
_GOOGLE_VERSIONS = ("/v1beta/", "/v1alpha/", "/upload/v1beta/")
# A model's custom method (`models/<model>:generateContent`); under /v1/ only the `:method`
# tells Gemini from OpenAI (whose /v1/models lists models).
_GEMINI_METHOD = re.compile(r"/v1(?:beta|alpha)?/(?:models|tunedModels)/[^/:]+:(\w+)$")
GEMINI_GENERATE = frozenset({"generateContent", "streamGenerateContent"})


class RouteError(ValueError):
    """The path names an upstream that is not configured."""


@dataclass(frozen=True)
class Upstream:
    name: str
    scheme: str
    host: str
    port: int
    base_path: str  # no trailing slash

    @classmethod
    def parse(cls, name: str, url: str) -> Upstream:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream {name}: {url!r} is not an http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(name, parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def origin(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        suffix = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{host}{suffix}"

    @property
    def host_header(self) -> str:
        return self.origin.split("://", 1)[1]


@dataclass(frozen=True)
class Route:
    upstream: Upstream
    target: str  # path and query to request upstream, raw
    provider: str | None
    session: str | None


def parse_upstreams(specs: list[str] | tuple[str, ...]) -> dict[str, Upstream]:
    """`NAME=URL` specs over the defaults; a later spec for a name wins."""
    urls = dict(DEFAULT_UPSTREAMS)
    for spec in specs:
        name, sep, url = spec.partition("=")
        if not sep or not name or not url:
            raise ValueError(f"--upstream wants NAME=URL, got {spec!r}")
        urls[name.strip()] = url.strip()
    return {name: Upstream.parse(name, url) for name, url in urls.items()}


def _split_segment(path: str) -> tuple[str, str]:
    """('/s/abc/v1/x') -> ('abc', '/v1/x') after the leading '/s'."""
    seg, sep, rest = path.partition("/")
    return seg, "/" + rest if sep else "/"


def _shape(path: str) -> tuple[str | None, str | None]:
    """(upstream, provider) the path's shape names, (None, None) for no known shape."""
    if _is_gemini(path):
        return "gemini", "gemini" if gemini_generates(path) else None
    for shape, shape_upstream, shape_provider in _SHAPES:
        if (
            path == shape
            or path.startswith(shape + "/")
            or (shape.endswith("/") and path.startswith(shape))
        ):
            return shape_upstream, shape_provider
    return None, None


def route_host(raw_path: str, upstream: Upstream, session: str | None = None) -> Route:
    """A request the HTTPS proxy decrypted: the client named its host (CONNECT), so the upstream
    is fixed and the path is the provider's own (no tapewire prefixes); only the provider is
    read from the path's shape."""
    path = raw_path.partition("?")[0]
    return Route(upstream, upstream.base_path + raw_path, _shape(path)[1], session)


def route(raw_path: str, upstreams: dict[str, Upstream], default: str = "openai") -> Route:
    """Resolve a raw request target (path and query, undecoded) into where it goes."""
    path, qmark, query = raw_path.partition("?")
    session: str | None = None
    if path.startswith("/s/"):
        seg, path = _split_segment(path[3:])
        session = unquote(seg) or None

    name: str | None = None
    for prefix in PROVIDER_NAMES:
        if path == f"/{prefix}" or path.startswith(f"/{prefix}/"):
            name, path = prefix, path[len(prefix) + 1 :] or "/"
            break
    else:
        if path.startswith("/u/"):
            seg, path = _split_segment(path[3:])
            name = unquote(seg)

    shape_upstream, provider = _shape(path)
    name = name or shape_upstream or default
    upstream = upstreams.get(name)
    if upstream is None:
        raise RouteError(f"no upstream named {name!r}; configure it with --upstream {name}=URL")
    target = upstream.base_path + path + (qmark + query if qmark else "")
    return Route(upstream, target, provider, session)


def _is_gemini(path: str) -> bool:
    return path.startswith(_GOOGLE_VERSIONS) or _GEMINI_METHOD.match(path) is not None


def gemini_generates(path: str) -> bool:
    """Whether a path (no query) asks a Gemini model to generate content."""
    method = _GEMINI_METHOD.match(path)
    return method is not None and method.group(1) in GEMINI_GENERATE
