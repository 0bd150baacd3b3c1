"""Around every request of the read side: the security headers, the token and the Host check.

Recorded content is untrusted input (DESIGN.md, invariant 6). The API's answers are JSON under
a policy where nothing runs; the UI's pages may run their own script and style (same origin,
never inline) and nothing else, so a `<script>` a model wrote cannot run even if a template
forgot to escape it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Collection
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tapewire.web.params import error

DOCS_PATH = "/api/docs"
COOKIE = "tapewire_token"

# Nothing of an API response may run, load, frame or be framed: JSON is all there is.
CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# A page: its own script, style and images, fetches to itself, forms to itself.
UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}

_NEEDS_TOKEN = """<!doctype html><html><head><meta charset="utf-8"><title>tapewire: token
needed</title></head><body><h1>tapewire: a token is needed</h1><p>This tapewire listens beyond
loopback, so it asks for the token it was started with (<code>--token</code> or
<code>TAPEWIRE_TOKEN</code>). Open this page once with <code>?token=YOUR_TOKEN</code> added to
its address: the browser then keeps it in a cookie for this site.</p></body></html>"""


def docs_csp(html: bytes) -> str:
    """Swagger UI's page: its script and styles from its CDN, its one inline script by hash."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s).digest()).decode() + "'"
        for s in re.findall(rb"<script>(.*?)</script>", html, re.DOTALL)
    )
    return (
        f"default-src 'none'; script-src https://cdn.jsdelivr.net {hashes}; "
        "style-src https://cdn.jsdelivr.net 'unsafe-inline'; img-src https://fastapi.tiangolo.com data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


def _host_name(value: str) -> str:
    if value.startswith("["):
        return value[1 : value.find("]")].lower()
    return value.rpartition(":")[0].lower() if ":" in value else value.lower()


class Guard:
    """The security headers on every response; with a list of host names (loopback without a
    token), no answer to a Host header outside it, so that a web page cannot reach the read
    side by DNS rebinding; with a token, no answer without it. The API takes the token as
    `Authorization: Bearer`; a browser brings it once as `?token=` and then as a cookie
    (HttpOnly, SameSite=Strict: another site's page cannot send it)."""

    def __init__(
        self, app: ASGIApp, token: str | None, hosts: Collection[str] | None, docs_csp: str
    ) -> None:
        self.app = app
        self.token = token.encode() if token is not None else None
        self.hosts = {h.lower().strip("[]") for h in hosts} if hosts is not None else None
        self.docs_csp = docs_csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        api = path == "/api" or path.startswith("/api/")
        csp = self.docs_csp if path == DOCS_PATH else CSP if api else UI_CSP

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                headers["Content-Security-Policy"] = csp
            await send(message)

        headers = Headers(scope=scope)
        if self.hosts is not None and _host_name(headers.get("host", "")) not in self.hosts:
            await error(400, "tapewire answers to its loopback address only (Host header)")(
                scope, receive, send_secured
            )
            return
        if self.token is not None:
            refused = self._refused(scope, headers, api)
            if refused is not None:
                await refused(scope, receive, send_secured)
                return
        await self.app(scope, receive, send_secured)

    def _refused(self, scope: Scope, headers: Headers, api: bool) -> Response | None:
        """The answer to a request without the token, or None when it has it."""
        assert self.token is not None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._matches(given.strip()):
            return None
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is no token
            cookie = SimpleCookie()
        if COOKIE in cookie and self._matches(cookie[COOKIE].value):
            return None
        params = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        offered = [v for k, v in params if k == "token"]
        if not api and scope["method"] == "GET" and offered and self._matches(offered[0]):
            # Into a cookie, and out of the address bar (and history, and Referer).
            rest = urlencode([(k, v) for k, v in params if k != "token"])
            target = scope["path"] + (f"?{rest}" if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, offered[0], httponly=True, samesite="strict", path="/")
            return response
        if not api:
            return HTMLResponse(_NEEDS_TOKEN, status_code=401)
        return error(
            401,
            "missing or wrong token: send Authorization: Bearer <token>",
            {"WWW-Authenticate": 'Bearer realm="tapewire"'},
        )

    def _matches(self, given: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(given.encode("latin-1", "replace"), self.token)
