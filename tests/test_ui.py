"""The web UI in a real browser (Playwright driving Debian's Chromium, DEVELOPERS.md): the
recorded Claude Code session replayed through a real proxy, browsed, stepped through, searched
and diffed; a hostile session in every view with no script of its own running; a turn recorded
while its page is open appearing without a reload. Screenshots of each page go to
build/screenshots/."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import openai
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from conftest import RECORDING, Databases, settings_for, wait_ingested
from fakeprovider import FakeProvider, load_recording
from tapewire.demo import record_demo
from tapewire.service import ServiceThread
from tapewire.store.location import DbRef
from tapewire.web import ReadServer

CHROMIUM = os.environ.get("TAPEWIRE_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).parent.parent / "build" / "screenshots"
CANARY = "__tapewire_pwned"
RUN_B_TURNS = 10  # the second run of the recording stops here: a diff has somewhere to split

# A model's output and a tool's result are hostile input: each of these would set the canary
# if the page let it run.
HOSTILE = [
    f"<script>window.{CANARY} = 'script'</script>",
    f"<img src=x onerror=\"window.{CANARY} = 'img'\">",
    f"<svg onload=\"window.{CANARY} = 'svg'\"></svg>",
    f"[click me](javascript:window.{CANARY}='link') <a href=\"javascript:window.{CANARY}='a'\">x</a>",
    f'"><iframe srcdoc="<script>parent.{CANARY}=\'iframe\'</script>"></iframe>',
    "\x1b[31mred as an ANSI escape\x1b[0m and a bell\x07",
    "{{ 7*7 }} {% raw %}",
]
HUGE_LINE = "x" * (2 * 1024 * 1024)


# ---- the stores the browser looks at ----------------------------------------------------------


async def _replay(url: str, prefix: str, limit: int | None = None) -> None:
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for turn in load_recording(RECORDING)[:limit]:
            async with http.post(
                f"{url}{prefix}/v1/messages?beta=true",
                headers=turn.request_headers,
                data=turn.request_body,
            ) as resp:
                await resp.read()


def _hostile_conversation(base_url: str) -> None:
    """An OpenAI client whose prompt, tool call and tool result carry every hostile string."""
    client = openai.OpenAI(base_url=base_url, api_key="sk-test-not-a-real-key", max_retries=0)
    evil = "\n".join(HOSTILE)
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "run_shell",
                "description": evil,
                "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
            },
        }
    ]
    messages: Any = [{"role": "user", "content": f"{evil}\nplease run it"}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    messages += [
        {
            "role": "assistant",
            "content": evil,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": json.dumps({"cmd": evil}),
                    },  # type: ignore[union-attr]
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": f"{evil}\n{HUGE_LINE}"},
    ]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)


@pytest.fixture(scope="module")
def ui_db(session_dbs: Databases, tmp_path_factory: pytest.TempPathFactory) -> DbRef:
    """`tapewire demo`'s store (the recorded Claude Code session and the scripted OpenAI one,
    through a real proxy), plus a second, shorter run of the Claude session and a hostile one."""
    tmp = tmp_path_factory.mktemp("ui")
    db = session_dbs.new("ui")

    def record() -> None:
        record_demo(db)
        with (
            FakeProvider(RECORDING) as fake,
            ServiceThread(settings_for(fake, tmp, db=db)) as service,
        ):
            asyncio.run(_replay(service.url, "/s/claude-run-b", RUN_B_TURNS))
            _hostile_conversation(f"{service.url}/s/hostile/v1")
            wait_ingested(service)

    # On a thread of its own: for the second backend, the module's browser (Playwright's sync
    # API) already runs an event loop on this one, and asyncio.run refuses to start another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(record).result()
    return db


@pytest.fixture(scope="module")
def ui(ui_db: DbRef) -> Iterator[str]:
    server = ReadServer(ui_db, "127.0.0.1", 0)
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (see .ci/run)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )  # fmt: skip
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(15_000)
    yield page
    context.close()
    assert errors == [], f"the page's own script failed: {errors}"


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png")


def session_id(base: str, name: str | None = None, harness: str | None = None) -> str:
    sessions = httpx.get(f"{base}/api/sessions").json()["sessions"]
    for s in sessions:
        if (name is not None and s["name"] == name) or (
            harness is not None and s["harness"] == harness and s["name"] is None
        ):
            return str(s["id"])
    raise AssertionError(f"no session {name or harness} in {sessions}")


def current_turn(page: Page) -> int:
    return int(page.locator("article.turn.current").get_attribute("data-index") or 0)


# ---- a user's path through the recorded session ---------------------------------------------


def test_list_open_step_unfold(ui: str, page: Page) -> None:
    page.goto(f"{ui}/")
    rows = page.locator("#session-rows tr")
    expect(rows).to_have_count(4)
    claude = page.locator("#session-rows tr", has_text="Run generate-claude-fixture skill")
    expect(claude.first).to_contain_text("claude-code")
    shot(page, "sessions")

    # Sorting by turns, most first: the full Claude run (17 turns) leads.
    page.locator("th", has_text="turns").click()
    expect(rows.first.locator("td").nth(5)).to_have_text("17")
    page.locator("th", has_text="turns").click()
    expect(rows.first.locator("td").nth(5)).not_to_have_text("17")

    full = session_id(ui, harness="claude-code")
    findings = page.locator(f'#session-rows tr[data-id="{full}"] a.badge.sev-warning')
    expect(findings).to_have_text("1")  # the error burst, stored as the turns arrived
    page.locator(f'#session-rows tr[data-id="{full}"] td.title a').click()
    expect(page).to_have_url(re.compile(f"/sessions/{full}$"))
    expect(page.locator("h1")).to_have_text("Run generate-claude-fixture skill")
    expect(page.locator("figure.chart")).to_have_count(4)
    expect(page.locator("article.turn")).to_have_count(17)
    # Analysis: the tool errors of turns 12-14 are a burst, marked on those turns.
    expect(page.locator("#findings li.sev-warning")).to_contain_text("5 errors")
    for n in (12, 13, 14):
        expect(page.locator(f"#t{n} a.marker")).to_have_text("error burst")

    # j steps down the timeline in reading order, k back up, and the address follows.
    order = [int(x) for x in page.locator("article.turn").evaluate_all(
        "turns => turns.map(t => t.dataset.index)")]  # fmt: skip
    page.keyboard.press("j")
    assert current_turn(page) == order[0]
    for _ in range(3):
        page.keyboard.press("j")
    assert current_turn(page) == order[3]
    page.keyboard.press("k")
    assert current_turn(page) == order[2]
    expect(page).to_have_url(re.compile(f"#t{order[2]}$"))

    # Enter unfolds every fold of the current turn; again folds them.
    turn = page.locator("article.turn.current")
    folds = turn.locator("details")
    assert folds.count() > 0
    page.keyboard.press("Enter")
    assert all(folds.nth(i).get_attribute("open") is not None for i in range(folds.count()))
    page.keyboard.press("Enter")
    assert all(folds.nth(i).get_attribute("open") is None for i in range(folds.count()))
    shot(page, "session")

    # A tool call unfolds to its arguments and its result; a failed one stands out.
    failed = page.locator("details.call.failed", has_text="flibbertigibbet").first
    failed.locator("summary").click()
    expect(failed.locator("pre.json")).to_contain_text('"command": "flibbertigibbet')
    expect(failed.locator("pre.result.error")).to_contain_text("command not found")
    expect(failed.locator(".badge.err")).to_have_text("error")


def test_permalink_and_raw_exchange(ui: str, page: Page) -> None:
    full = session_id(ui, harness="claude-code")
    page.goto(f"{ui}/sessions/{full}#t5")
    expect(page.locator("#t5")).to_have_class(re.compile(r"\bcurrent\b"))
    page.locator("#t5 a.raw").click()
    expect(page.locator("h1")).to_have_text(re.compile(r"^POST /v1/messages"))
    expect(page.locator("table.timings")).to_contain_text("first_byte")
    expect(page.locator("pre.body").nth(1)).to_contain_text("event: message_start")
    # The credential header is named, its value was never stored.
    auth = page.locator("table.headers").first.locator(
        "tr", has=page.locator("th", has_text=re.compile("^authorization$"))
    )
    expect(auth.locator("td")).to_have_text("(empty)")
    shot(page, "exchange")


def test_show_all_fetches_the_whole_text(ui: str, page: Page) -> None:
    hostile = session_id(ui, name="hostile")
    page.goto(f"{ui}/sessions/{hostile}#t2")  # a permalink unfolds its turn
    more = page.locator("article#t2 a.more").first
    expect(more).to_contain_text("show all")
    before = page.locator("article#t2").inner_text()
    assert HUGE_LINE[:5000] not in before
    more.click()
    expect(page.locator("article#t2 a.more")).to_have_count(0)
    assert HUGE_LINE in page.locator("article#t2").inner_text()
    assert page.evaluate(f"window.{CANARY}") is None


def test_search_lands_on_the_turn(ui: str, page: Page) -> None:
    page.goto(f"{ui}/sessions")
    page.locator("header.top input[name=q]").fill("flibbertigibbet")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/search\?q=flibbertigibbet"))
    hits = page.locator("li.hit")
    expect(hits.first).to_be_visible()
    expect(hits.first.locator("mark").first).to_have_text(re.compile("flibbertigibbet", re.I))
    shot(page, "search")
    hits.first.locator("a.hit-link").click()
    expect(page).to_have_url(re.compile(r"/sessions/[^#]+#t\d+$"))
    landed = int(page.url.rsplit("#t", 1)[1])
    assert current_turn(page) == landed
    expect(page.locator(f"#t{landed}")).to_contain_text("flibbertigibbet")


def test_diff_of_two_runs(ui: str, page: Page) -> None:
    full = session_id(ui, harness="claude-code")
    short = session_id(ui, name="claude-run-b")
    page.goto(f"{ui}/sessions")
    button = page.locator("#compare-button")
    expect(button).to_be_disabled()
    page.locator(f'input[name=s][value="{full}"]').check()
    expect(button).to_be_disabled()
    page.locator(f'input[name=s][value="{short}"]').check()
    expect(button).to_be_enabled()
    button.click()
    expect(page).to_have_url(re.compile(r"/diff\?"))
    expect(page.locator(".verdict.differ")).to_contain_text("First divergence")
    marked = page.locator("tr.first-divergence")
    expect(marked).to_have_count(1)
    expect(marked.locator("td.missing")).to_have_count(1)
    expect(page.locator("table.side-by-side tbody tr")).to_have_count(
        len(httpx.get(f"{ui}/api/sessions/{full}/timeline").json()["turns"]) - _side_turns(ui, full)
    )
    expect(page.locator("li.differs").first).to_be_visible()  # calls only one run made
    shot(page, "diff")


def _side_turns(base: str, session: str) -> int:
    turns = httpx.get(f"{base}/api/sessions/{session}/timeline").json()["turns"]
    return sum(1 for t in turns if t["kind"] != "main")


# ---- hostile content --------------------------------------------------------------------------


def test_hostile_content_never_runs(ui: str, page: Page) -> None:
    hostile = session_id(ui, name="hostile")
    full = session_id(ui, harness="claude-code")
    exchange = httpx.get(f"{ui}/api/sessions/{hostile}/timeline").json()["turns"][-1]
    views = [
        "/sessions",
        f"/sessions/{hostile}",
        f"/sessions/{hostile}/turns/2",
        f"/exchanges/{exchange['exchange_id']}",
        f"/exchanges/{exchange['exchange_id']}?full=true",
        "/search?q=script",
        "/search?q=onerror",
        f"/diff?a={hostile}&b={full}",
    ]
    for view in views:
        response = page.goto(f"{ui}{view}")
        assert response is not None and response.status == 200, view
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        page.wait_for_timeout(100)  # an onerror or onload would have fired by now
        assert page.evaluate(f"window.{CANARY}") is None, view
        # The hostile strings are on the page as text, not as elements.
        assert page.locator("iframe, main script, img[src=x]").count() == 0, view
        assert page.locator('a[href^="javascript:"]').count() == 0, view
        # Responsive: the page answers a script at once, even with a 2 MB line on it.
        assert page.evaluate("1 + 1") == 2
    page.goto(f"{ui}/sessions/{hostile}")
    text = page.locator("main").inner_text()
    assert "<script>" in text and "onerror" in text  # shown, as text
    assert "\\x1b[31mred" in text  # the ANSI escape made visible, not interpreted
    shot(page, "hostile")


# ---- live ----------------------------------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path, db: DbRef) -> Iterator[tuple[str, str]]:
    """A proxy recording into a store while the UI reads it: (proxy URL, UI URL)."""
    with FakeProvider() as fake, ServiceThread(settings_for(fake, tmp_path, db=db)) as service:
        client = openai.OpenAI(base_url=f"{service.url}/s/live/v1", api_key="sk-x", max_retries=0)
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "first question"}]
        )
        wait_ingested(service)
        server = ReadServer(service.settings.db, "127.0.0.1", 0)
        server.start()
        try:
            yield service.url, server.url
        finally:
            server.stop()


def test_live_turns_and_sessions_appear_without_reload(live: tuple[str, str], page: Page) -> None:
    proxy, ui = live
    sid = session_id(ui, name="live")
    page.goto(f"{ui}/sessions/{sid}")
    expect(page.locator("article.turn")).to_have_count(1)
    page.evaluate("window.__same_page = true")

    client = openai.OpenAI(base_url=f"{proxy}/s/live/v1", api_key="sk-x", max_retries=0)
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "a second question, asked live"},
        ],
    )
    expect(page.locator("article.turn")).to_have_count(2)
    expect(page.locator("#t2")).to_contain_text("a second question, asked live")
    assert page.evaluate("window.__same_page") is True  # no reload

    page.goto(f"{ui}/sessions")
    expect(page.locator("#session-rows tr")).to_have_count(1)
    page.evaluate("window.__same_page = true")
    other = openai.OpenAI(base_url=f"{proxy}/s/another/v1", api_key="sk-x", max_retries=0)
    other.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "a new session"}]
    )
    expect(page.locator("#session-rows tr")).to_have_count(2)
    expect(page.locator("#session-rows tr.fresh")).to_have_count(1)
    assert page.evaluate("window.__same_page") is True


# ---- the token, beyond loopback ---------------------------------------------------------------


def test_token_via_cookie(ui_db: DbRef, page: Page) -> None:
    server = ReadServer(ui_db, "127.0.0.1", 0, token="s3cret-token")
    server.start()
    try:
        response = page.goto(f"{server.url}/sessions")
        assert response is not None and response.status == 401
        expect(page.locator("h1")).to_contain_text("token")
        response = page.goto(f"{server.url}/sessions?token=s3cret-token&harness=claude-code")
        assert response is not None and response.status == 200
        assert "token" not in page.url  # out of the address bar and history
        expect(page).to_have_url(re.compile(r"/sessions\?harness=claude-code$"))
        expect(page.locator("#session-rows tr")).to_have_count(2)  # both Claude runs
        cookies = page.context.cookies()
        assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
            ("tapewire_token", True, "Strict")
        ]
        assert httpx.get(f"{server.url}/api/sessions").status_code == 401
        assert page.goto(f"{server.url}/sessions?token=wrong") is not None
        assert page.evaluate("document.title").startswith("Sessions")  # the cookie still holds
    finally:
        server.stop()
