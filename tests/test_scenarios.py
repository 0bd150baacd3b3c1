"""The labelled synthetic sessions (tests/scenarios.py) are what they claim, as the store's read
layer shows them; and the fake provider's scripts (`FakeProvider.script`) answer as the
providers do, for the real SDKs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from fakeprovider import FakeProvider, Reply
from scenarios import (
    APP_PY,
    CLI_PATCH,
    CYCLE_EDIT,
    CYCLE_FAIL,
    CYCLE_PATCH,
    PLANTED,
    SCENARIOS,
    SCRIPTS,
    SPIKE_CALLS,
    STALL_A,
    STALL_LS,
    Scenario,
    _openai_streamed,
    _schema,
)
from tapewire.query import session_detail, sessions
from tapewire.store import Store, open_store
from tapewire.store.location import DbRef


@pytest.fixture(scope="module")
def recorded(scenarios_db: tuple[DbRef, dict[str, str]]) -> Iterator[tuple[Store, dict[str, str]]]:
    db, ids = scenarios_db
    store = open_store(db, readonly=True)
    try:
        yield store, ids
    finally:
        store.close()


def _detail(recorded: tuple[Store, dict[str, str]], label: str) -> dict[str, Any]:
    store, ids = recorded
    return session_detail(store, ids[label])


def _calls(detail: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(c["name"], c["arguments"]) for t in detail["turns"] for c in t["tool_calls"]]


def _results(detail: dict[str, Any]) -> list[str | None]:
    return [c["result"] for t in detail["turns"] for c in t["tool_calls"]]


def _column(detail: dict[str, Any], key: str) -> list[Any]:
    return [t[key] for t in detail["turns"]]


def _tokens(detail: dict[str, Any], key: str) -> list[int | None]:
    return [t["usage"][key] for t in detail["turns"]]


# --------------------------------------------------------------------------- every session


def test_each_label_is_one_session_of_one_thread(recorded: tuple[Store, dict[str, str]]) -> None:
    store, ids = recorded
    assert set(ids) == set(SCENARIOS) == set(PLANTED)
    rows = {r["name"]: r for r in sessions(store)}
    assert set(rows) == set(SCENARIOS)
    for label in SCENARIOS:
        row = rows[label]
        assert row["id"] == ids[label]
        assert row["threads"] == 1, PLANTED[label]
        assert row["duration_s"] < 5, "each run takes moments"
        detail = _detail(recorded, label)
        api = (
            "anthropic.messages"
            if label in ("clean", "cycle", "errors", "stall")
            else "openai.chat"
        )
        assert {t["api"] for t in detail["turns"]} == {api}
        assert {t["kind"] for t in detail["turns"]} == {"main"}
        assert {t["outcome"] for t in detail["turns"]} == {"complete"}
        assert all(c["answered"] for t in detail["turns"] for c in t["tool_calls"])
        # Every answer but the last calls tools; the last calls none (an answer, or a cut-off).
        calling = [bool(t["tool_calls"]) for t in detail["turns"] if t["status"] == 200]
        assert calling == [True] * (len(calling) - 1) + [False], label
        final = SCRIPTS[label].steps[-1].reply.text
        assert detail["turns"][-1]["output"] == [{"type": "text", "text": final}], label
        assert row["cost_usd"] is not None, "priced models"


def test_streamed_or_not_as_each_scenario_says(recorded: tuple[Store, dict[str, str]]) -> None:
    store, ids = recorded
    streamed = {label for label in SCENARIOS if label not in ("cycle", "retry", "stall")}
    for label in SCENARIOS:
        flags = {row["stream"] for row in store.turn_rows(ids[label])}
        assert flags == {label in streamed}, label


# --------------------------------------------------------------------------- each one


def test_clean(recorded: tuple[Store, dict[str, str]]) -> None:
    d = _detail(recorded, "clean")
    assert _column(d, "status") == [200] * 4
    assert _column(d, "stop_reason") == ["tool_use"] * 3 + ["end_turn"]
    assert _calls(d) == [
        ("read_file", {"path": "src/cli.py"}),
        ("edit_file", {"path": "src/cli.py", "patch": CLI_PATCH}),
        ("run_tests", {"path": "tests/test_cli.py"}),
    ]
    results = _results(d)
    assert len(set(results)) == 3 and all(results)
    assert [c["is_error"] for t in d["turns"] for c in t["tool_calls"]] == [None] * 3
    assert _tokens(d, "input_tokens") == [1240, 1480, 1705, 1893]
    assert _tokens(d, "output_tokens") == [62, 164, 58, 121]
    assert _tokens(d, "cache_read_tokens") == [0, 1152, 1408, 1664]
    assert d["session"]["errors"] == 0 and d["session"]["tool_errors"] == 0


def test_loop(recorded: tuple[Store, dict[str, str]]) -> None:
    d = _detail(recorded, "loop")
    assert _column(d, "stop_reason") == ["tool_calls"] * 5 + ["stop"]
    assert _calls(d) == [("read_file", {"path": "src/app.py"})] * 5
    assert _results(d) == [APP_PY] * 5
    assert _tokens(d, "input_tokens") == [980, 1140, 1300, 1460, 1620, 1780]


def test_cycle(recorded: tuple[Store, dict[str, str]]) -> None:
    d = _detail(recorded, "cycle")
    assert len(d["turns"]) == 9
    assert _column(d, "stop_reason") == ["tool_use"] * 8 + ["end_turn"]
    test = ("run_tests", {"path": "tests"})
    edit = ("edit_file", {"path": "src/app.py", "patch": CYCLE_PATCH})
    assert _calls(d) == [test, edit] * 4
    assert _results(d) == [CYCLE_FAIL, CYCLE_EDIT] * 4
    assert d["session"]["tool_errors"] == 0, "the tests fail; the tool calls do not"


def test_retry_is_four_exchanges_of_one_request(recorded: tuple[Store, dict[str, str]]) -> None:
    store, ids = recorded
    d = _detail(recorded, "retry")
    assert _column(d, "status") == [503, 503, 503, 200, 200, 200]
    assert _column(d, "stop_reason") == [None, None, None, "tool_calls", "tool_calls", "stop"]
    for turn in d["turns"][:3]:
        assert turn["error"].startswith("HTTP 503: server_error: The server is overloaded")
        assert turn["usage"]["input_tokens"] is None and turn["tool_calls"] == []
    assert [t["error"] for t in d["turns"][3:]] == [None] * 3
    assert d["session"]["errors"] == 3
    assert _calls(d) == [
        ("read_file", {"path": "pyproject.toml"}),
        ("grep", {"pattern": "python-version", "path": ".github/workflows"}),
    ]
    # The SDK resent the request body unchanged; only its retry-count header moved on.
    rows = [store.exchange(t["exchange_id"]) for t in d["turns"][:4]]
    assert all(r is not None for r in rows)
    assert len({r.request_sha256 for r in rows if r}) == 1
    assert len({t["request_node"] for t in store.turn_rows(ids["retry"])[:4]}) == 1
    counts = [dict((k.lower(), v) for k, v in r.request_headers)["x-stainless-retry-count"]
              for r in rows if r]  # fmt: skip
    assert counts == ["0", "1", "2", "3"]


def test_errors(recorded: tuple[Store, dict[str, str]]) -> None:
    store, _ = recorded
    d = _detail(recorded, "errors")
    assert _column(d, "status") == [200, 200, 429, 200, 200, 200]
    assert d["turns"][2]["error"].startswith("HTTP 429: rate_limit_error")
    assert _column(d, "stop_reason") == ["tool_use", "tool_use", None, "tool_use", "tool_use",
                                         "end_turn"]  # fmt: skip
    assert [name for name, _ in _calls(d)] == ["bash"] * 4
    flags = [c["is_error"] for t in d["turns"] for c in t["tool_calls"]]
    assert flags == [True] * 4
    assert d["session"]["tool_errors"] == 4 and d["session"]["errors"] == 1
    rows = [store.exchange(t["exchange_id"]) for t in d["turns"][2:4]]
    assert len({r.request_sha256 for r in rows if r}) == 1, "the 429 was retried as sent"
    span = d["turns"][-1]["started_at"] - d["turns"][0]["started_at"]
    assert span < 5


def test_spike(recorded: tuple[Store, dict[str, str]]) -> None:
    d = _detail(recorded, "spike")
    assert len(d["turns"]) == 11
    assert _column(d, "model") == ["gpt-4o-mini"] * 11
    assert _tokens(d, "input_tokens") == [1500 + 200 * k for k in range(11)]
    outputs = _tokens(d, "output_tokens")
    assert outputs[6] == 9000
    assert all(80 <= n <= 120 for i, n in enumerate(outputs) if i != 6 and n is not None)
    assert _calls(d) == [c for c, _ in SPIKE_CALLS]
    costs = _column(d, "cost_usd")
    assert max(costs) == costs[6] and costs[6] > 5 * sorted(costs)[5]


def test_stall(recorded: tuple[Store, dict[str, str]]) -> None:
    d = _detail(recorded, "stall")
    ls, a = ("list_dir", {"path": "."}), ("read_file", {"path": "a.txt"})
    assert _calls(d) == [ls, a, ls, a, ls]
    assert _results(d) == [STALL_LS, STALL_A, STALL_LS, STALL_A, STALL_LS]
    assert _column(d, "stop_reason") == ["tool_use"] * 5 + ["max_tokens"]
    last = d["turns"][-1]
    assert last["tool_calls"] == [] and last["usage"]["output_tokens"] == 1024
    assert [p["type"] for p in last["output"]] == ["text"]


def test_drift(recorded: tuple[Store, dict[str, str]]) -> None:
    runs = [_detail(recorded, f"drift-{n}") for n in (1, 2, 3)]

    def steps(d: dict[str, Any]) -> list[tuple[str, Any, str | None]]:
        return [(c["name"], c["arguments"], c["result"]) for t in d["turns"]
                for c in t["tool_calls"]]  # fmt: skip

    one, two, three = (steps(d) for d in runs)
    assert [(n, a) for n, a, _ in one] == [
        ("list_dir", {"path": "."}),
        ("read_file", {"path": "setup.py"}),
        ("read_file", {"path": "src/app.py"}),
        ("run_tests", {"path": "tests"}),
        ("edit_file", {"path": "src/app.py", "patch": "fix"}),
        ("run_tests", {"path": "tests"}),
    ]
    assert one == two
    assert three[:3] == one[:3]
    assert [(n, a) for n, a, _ in three[3:]] == [
        ("search_web", {"query": "pytest failure"}),
        ("read_file", {"path": "docs/README.md"}),
    ]
    for a, b in ((runs[0], runs[1]), (runs[0], runs[2])):
        assert a["turns"][0]["input"] == b["turns"][0]["input"], "same system prompt and task"
    assert _tokens(runs[0], "output_tokens") == _tokens(runs[1], "output_tokens")
    answers = [d["turns"][-1]["output"] for d in runs]
    assert answers[0] == answers[1] != answers[2]


# --------------------------------------------------------------------------- the scripts


@pytest.fixture
def scripted() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


def _anthropic(fake: FakeProvider, name: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.url, api_key="sk-test", max_retries=0,
                               default_headers={"x-fake-script": name})  # fmt: skip


def _openai(fake: FakeProvider, name: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url + "/v1", api_key="sk-test", max_retries=0,
                         default_headers={"x-fake-script": name})  # fmt: skip


ASK: Any = [{"role": "user", "content": "go"}]
TOOLS_A: Any = [{"name": "grep", "input_schema": _schema("pattern", "path")}]
TOOLS_O: Any = [{"type": "function", "function": {"name": "grep",
                                                  "parameters": _schema("pattern", "path")}}]  # fmt: skip
BOTH = Reply("Looking.", [("grep", {"pattern": "x", "path": "."}), ("grep", {"pattern": "y",
             "path": "src"})], input_tokens=1000, output_tokens=40, cache_read_tokens=600)  # fmt: skip


def test_anthropic_streamed_and_plain_answers_agree(scripted: FakeProvider) -> None:
    scripted.script("a", [BOTH, BOTH, Reply("Done.", stop="max_tokens", output_tokens=9)])
    with _anthropic(scripted, "a") as client:
        kw: dict[str, Any] = {"model": "claude-test", "max_tokens": 64, "messages": ASK,
                              "tools": TOOLS_A}  # fmt: skip
        plain = client.messages.create(**kw)
        with client.messages.stream(**kw) as stream:
            streamed = stream.get_final_message()
        cut = client.messages.create(**kw)
    assert [(b.id, b.name, b.input) for b in plain.content if b.type == "tool_use"] == [
        ("toolu_a_1", "grep", {"pattern": "x", "path": "."}),
        ("toolu_a_2", "grep", {"pattern": "y", "path": "src"}),
    ]
    assert [b.type for b in streamed.content] == ["text", "tool_use", "tool_use"]
    assert [getattr(b, "input", None) for b in streamed.content] == [
        getattr(b, "input", None) for b in plain.content
    ]
    assert [getattr(b, "id", None) for b in streamed.content][1:] == ["toolu_a_3", "toolu_a_4"]
    for message in (plain, streamed):
        assert message.stop_reason == "tool_use"
        assert message.usage.input_tokens == 400  # uncached; the cache read apart
        assert message.usage.cache_read_input_tokens == 600
        assert message.usage.output_tokens == 40
    assert cut.stop_reason == "max_tokens" and cut.content[0].type == "text"


def test_openai_streamed_and_plain_answers_agree(scripted: FakeProvider) -> None:
    scripted.script("o", [BOTH, BOTH])
    scenario = Scenario("o", "openai", True, "gpt-test", "", "", (), ())
    with _openai(scripted, "o") as client:
        plain = client.chat.completions.create(model="gpt-test", messages=ASK, tools=TOOLS_O)
        text, calls = _openai_streamed(client, scenario, TOOLS_O, ASK)
    message = plain.choices[0].message
    assert message.content == text == "Looking."
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []
            if c.type == "function"] == [
        ("call_o_1", "grep", '{"pattern":"x","path":"."}'),
        ("call_o_2", "grep", '{"pattern":"y","path":"src"}'),
    ]  # fmt: skip
    assert calls == [("call_o_3", "grep", '{"pattern":"x","path":"."}'),
                     ("call_o_4", "grep", '{"pattern":"y","path":"src"}')]  # fmt: skip
    assert plain.choices[0].finish_reason == "tool_calls"
    usage = plain.usage
    assert usage is not None and usage.prompt_tokens == 1000 and usage.completion_tokens == 40
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 600


def test_error_replies_speak_each_providers_shape(scripted: FakeProvider) -> None:
    scripted.script("e", [Reply(status=529), Reply(status=429)])
    with _anthropic(scripted, "e") as client:
        with pytest.raises(anthropic.APIStatusError) as overloaded:
            client.messages.create(model="claude-test", max_tokens=8, messages=ASK)
    assert overloaded.value.status_code == 529
    assert overloaded.value.body == {"type": "error", "error": {"type": "overloaded_error",
                                                                "message": "Overloaded"}}  # fmt: skip
    assert overloaded.value.response.headers["retry-after"] == "0"
    with _openai(scripted, "e") as oclient:
        with pytest.raises(openai.RateLimitError) as limited:
            oclient.chat.completions.create(model="gpt-test", messages=ASK)
    body = limited.value.body
    assert isinstance(body, dict) and body["code"] == "rate_limit_exceeded"


def test_sdk_retries_come_at_once(scripted: FakeProvider) -> None:
    scripted.script("r", [Reply(status=503)] * 3 + [Reply("ok", output_tokens=1)])
    start = time.monotonic()
    with openai.OpenAI(base_url=scripted.url + "/v1", api_key="sk-test", max_retries=3,
                       default_headers={"x-fake-script": "r"}) as client:  # fmt: skip
        done = client.chat.completions.create(model="gpt-test", messages=ASK)
    assert done.choices[0].message.content == "ok"
    assert time.monotonic() - start < 1.0  # backoff would take 0.5 + 1 + 2 s
    assert len(scripted.received) == 4


def test_an_exhausted_or_unknown_script_says_so(scripted: FakeProvider) -> None:
    scripted.script("x", [Reply("one")])
    with _anthropic(scripted, "x") as client:
        client.messages.create(model="claude-test", max_tokens=8, messages=ASK)
        with pytest.raises(anthropic.InternalServerError, match="script 'x' is exhausted"):
            client.messages.create(model="claude-test", max_tokens=8, messages=ASK)
    assert scripted.remaining("x") == 0
    with _openai(scripted, "nope") as oclient:
        with pytest.raises(openai.InternalServerError, match="no script named 'nope'"):
            oclient.chat.completions.create(model="gpt-test", messages=ASK)


def test_a_reply_waits_its_delay(scripted: FakeProvider) -> None:
    scripted.script("d", [Reply("late", delay=0.3)])
    start = time.monotonic()
    with _anthropic(scripted, "d") as client:
        client.messages.create(model="claude-test", max_tokens=8, messages=ASK)
    assert time.monotonic() - start >= 0.3
