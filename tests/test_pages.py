"""The web UI's pages without a browser (in-process, httpx over ASGI): each page's JSON twin is
the API's answer, errors are pages, recorded content is escaped, and the guard covers pages as
it covers the API. The browser tests are in test_ui.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tapewire.store.location import DbRef
from tapewire.web import create_app
from tapewire.web.render import clip, highlight, readable_body, visible


@pytest.fixture
async def client(recorded_db: DbRef) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(recorded_db, hosts={"127.0.0.1", "localhost"})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c
    app.state.readers.stop()


async def _session(client: httpx.AsyncClient) -> dict[str, Any]:
    sessions: list[dict[str, Any]] = (await client.get("/api/sessions")).json()["sessions"]
    return next(s for s in sessions if s["harness"] == "claude-code")


async def test_each_page_twin_says_what_the_api_says(client: httpx.AsyncClient) -> None:
    page = (await client.get("/sessions.json")).json()
    api = (await client.get("/api/sessions", params={"limit": 100})).json()
    assert page == api and page["sessions"]

    sid = (await _session(client))["id"]
    twin = (await client.get(f"/sessions/{sid}.json")).json()
    timeline = (await client.get(f"/api/sessions/{sid}/timeline")).json()
    shown = sorted((t for run in twin["lanes"] for t in run["turns"]), key=lambda t: t["index"])
    assert shown == timeline["turns"]  # every turn, once, as the API gives it
    assert twin["session"] == (await client.get(f"/api/sessions/{sid}")).json()["session"]

    hits = (await client.get("/search.json", params={"q": "flibbertigibbet"})).json()
    api_hits = (
        await client.get("/api/search", params={"q": "flibbertigibbet", "limit": 50})
    ).json()
    assert hits == api_hits and hits["hits"]

    exchange = timeline["turns"][0]["exchange_id"]
    raw = (await client.get(f"/exchanges/{exchange}.json")).json()
    assert raw == (await client.get(f"/api/exchanges/{exchange}/raw")).json()


async def test_pages_render_what_the_twin_holds(client: httpx.AsyncClient) -> None:
    s = await _session(client)
    html = (await client.get(f"/sessions/{s['id']}")).text
    assert html.count('<article class="turn') == s["turns"]
    for n in range(1, s["turns"] + 1):
        assert f'id="t{n}"' in html  # a permalink anchor per turn
    assert html.count('<figure class="chart') == 4
    # The subagent's turns are a nested lane inside the main thread's, right after the turn
    # whose Agent call spawned it; the title call sits apart at the end.
    lanes = re.findall(
        r'<div class="lane-run depth-(\d)( side)?">\s*(?:<h3 class="lane-note">([^<]*))?', html
    )
    assert [(d, side.strip(), (note or "").strip()) for d, side, note in lanes] == [
        ("0", "", ""),
        ("1", "", "agent 1"),
        ("0", "", ""),
        ("1", "side", "side calls"),
    ]
    # A tool result in a turn's input names the tool whose call it answers.
    assert '<span class="tool">Bash</span> result' in html
    listing = (await client.get("/sessions")).text
    assert f'href="/sessions/{s["id"]}"' in listing
    assert f"{s['turns']}</td>" in listing


async def test_fragments_are_parts_of_the_page(client: httpx.AsyncClient) -> None:
    s = await _session(client)
    rows = (await client.get("/sessions", params={"fragment": "rows"})).text
    assert rows.lstrip().startswith("<tr") and "<html" not in rows
    timeline = (await client.get(f"/sessions/{s['id']}", params={"fragment": "timeline"})).text
    assert "<html" not in timeline and timeline.count('<article class="turn') == s["turns"]
    one = (await client.get(f"/sessions/{s['id']}/turns/3", params={"fragment": "1"})).text
    assert one.count('<article class="turn') == 1 and 'id="t3"' in one


async def test_errors_are_pages_for_pages_and_json_for_the_api(
    client: httpx.AsyncClient, backend: str
) -> None:
    page = await client.get("/sessions/no-such-session")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "no session matches" in page.text
    twin = await client.get("/sessions/no-such-session.json")
    assert twin.status_code == 404 and "no session matches" in twin.json()["error"]
    assert (await client.get("/sessions/x/turns/1")).status_code == 404
    s = await _session(client)
    missing_turn = await client.get(f"/sessions/{s['id']}/turns/999")
    assert missing_turn.status_code == 404 and "no turn 999" in missing_turn.text
    assert (await client.get("/nowhere")).headers["content-type"].startswith("text/html")
    bad = await client.get("/search", params={"q": '"flibbertigibbet'})
    if backend == "sqlite":  # an unclosed quote is an FTS5 syntax error
        assert bad.status_code == 400 and bad.headers["content-type"].startswith("text/html")
    else:  # PostgreSQL's web-search syntax reads any text: here, the word
        assert bad.status_code == 200 and bad.headers["content-type"].startswith("text/html")
        quoted = (await client.get("/search.json", params={"q": '"flibbertigibbet'})).json()
        word = (await client.get("/search.json", params={"q": "flibbertigibbet"})).json()
        assert quoted == word and quoted["hits"]
    assert (await client.get("/diff", params={"a": s["id"]})).status_code == 400


async def test_the_pages_policy_lets_only_their_own_script_run(client: httpx.AsyncClient) -> None:
    page = await client.get("/sessions")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    api = await client.get("/api/sessions")
    assert "script-src" not in api.headers["content-security-policy"]
    static = await client.get("/static/app.js")
    assert static.status_code == 200 and "javascript" in static.headers["content-type"]
    assert page.headers["x-content-type-options"] == "nosniff"


async def test_pages_answer_only_to_loopback_names(client: httpx.AsyncClient) -> None:
    rebound = await client.get("/sessions", headers={"host": "attacker.example:8081"})
    assert rebound.status_code == 400


async def test_home_is_the_sessions_list(client: httpx.AsyncClient) -> None:
    home = await client.get("/")
    assert home.status_code == 303 and home.headers["location"] == "/sessions"


# ---- the filters that make recorded text safe to show ---------------------------------------


def test_visible_shows_control_characters_as_escapes() -> None:
    assert visible("\x1b[31mred\x1b[0m\x07\ttab\nline") == "\\x1b[31mred\\x1b[0m\\x07\ttab\nline"
    assert visible("\x9b31m") == "\\x9b31m"  # the 8-bit CSI too


def test_highlight_escapes_every_piece() -> None:
    text = "<b>flib</b> and <script>flib</script>"
    out = str(highlight(text, [[3, 7], [24, 28]]))
    assert out == (
        "&lt;b&gt;<mark>flib</mark>&lt;/b&gt; and &lt;script&gt;<mark>flib</mark>&lt;/script&gt;"
    )
    # Spans out of order, overlapping or empty are not trusted to be sane.
    assert str(highlight("abc", [[2, 1], [0, 2], [1, 3]])) == "<mark>ab</mark>c"
    assert re.search(r"<(?!/?mark>)", str(highlight("<x>", [[0, 3]]))) is None


def test_clip_and_readable_body() -> None:
    assert clip("abcdef", 4) == ("abcd", True)
    assert clip("abc", None) == ("abc", False)
    assert readable_body('{"a":[1,2]}') == ('{\n  "a": [\n    1,\n    2\n  ]\n}', True)
    assert readable_body("event: ping\ndata: {}\n\n") == ("event: ping\ndata: {}\n\n", False)
    assert readable_body("{not json") == ("{not json", False)
