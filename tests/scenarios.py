"""Labelled synthetic agent sessions, for the analysis detectors' tests.

Each scenario is an agent loop played by the test with a real SDK (`anthropic`, `openai`)
through a real tapewire proxy, against the fake provider answering from a script of its own
(`FakeProvider.script`): the loop sends the system prompt, the task, the tools and the
conversation so far, reads the model's answer, appends it and the tool results the scenario
scripts, and sends again until an answer calls no tool. Each lands in its own session, named by
its label (``/s/<label>/``); what each plants is in `PLANTED`.

    with FakeProvider() as fake, ServiceThread(settings) as service:
        record_scenarios(service.url, fake)

Everything is deterministic except timings and tapewire's own ids. Tool call ids are the fake
provider's per script (``toolu_<label>_<n>``, ``call_<label>_<n>``), so they differ between
runs of one task, as a real provider's do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import anthropic
import openai

from fakeprovider import FakeProvider, Reply

__all__ = ["PLANTED", "SCENARIOS", "SCRIPTS", "Scenario", "Step", "record_scenarios"]

API_KEY = "sk-test-tapewire-scenarios"


@dataclass(frozen=True)
class Step:
    """One model call of the loop: its answer, the results the agent sends back for the
    answer's tool calls (one each, in order), and failed attempts the fake answers first
    (the SDK retries them by itself)."""

    reply: Reply
    results: tuple[str, ...] = ()
    failed: bool = False  # the results go back as errors (Anthropic ``is_error: true``)
    attempts: tuple[Reply, ...] = ()  # error replies before `reply`, each retried by the SDK


@dataclass(frozen=True)
class Scenario:
    label: str
    api: str  # "anthropic" | "openai"
    stream: bool
    model: str
    system: str
    prompt: str
    tools: tuple[str, ...]  # names in TOOLS
    steps: tuple[Step, ...]
    max_retries: int = 0
    max_tokens: int = 4096  # Anthropic's required cap

    def replies(self) -> list[Reply]:
        return [r for step in self.steps for r in (*step.attempts, step.reply)]


def _schema(*names: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {n: {"type": "string"} for n in names},
        "required": list(names),
    }


TOOLS: dict[str, tuple[str, dict[str, Any]]] = {
    "list_dir": ("List the entries of a directory of the repository.", _schema("path")),
    "read_file": ("Read a file of the repository and return its text.", _schema("path")),
    "edit_file": ("Apply a unified diff to a file of the repository.", _schema("path", "patch")),
    "write_file": ("Write a file, replacing what it held.", _schema("path", "content")),
    "run_tests": ("Run pytest on a path and return its report.", _schema("path")),
    "grep": ("Search files for a regular expression.", _schema("pattern", "path")),
    "bash": ("Run a shell command in the repository and return its output.", _schema("command")),
    "search_web": ("Search the web; returns the top results.", _schema("query")),
}


def call(name: str, **arguments: Any) -> tuple[str, dict[str, Any]]:
    assert name in TOOLS, name
    return (name, arguments)


# --------------------------------------------------------------------------- 1. clean

CLI_PY = """import argparse


def main(argv=None):
    parser = argparse.ArgumentParser(prog="app")
    parser.add_argument("input")
    args = parser.parse_args(argv)
    print(process(args.input))
"""
CLI_PATCH = """--- a/src/cli.py
+++ b/src/cli.py
@@ -5,2 +5,5 @@
     parser.add_argument("input")
+    parser.add_argument("--verbose", "-v", action="store_true", help="log each step")
     args = parser.parse_args(argv)
+    if args.verbose:
+        logging.basicConfig(level=logging.DEBUG)
"""

CLEAN = Scenario(
    label="clean",
    api="anthropic",
    stream=True,
    model="claude-sonnet-4-6",
    system="You are a careful coding agent working in a Python repository. Use the tools to "
    "inspect and change files; run the tests before you say you are done.",
    prompt="Add a --verbose flag to the CLI in src/cli.py that turns on debug logging.",
    tools=("read_file", "edit_file", "run_tests", "list_dir"),
    steps=(
        Step(
            Reply("I'll read the CLI first.", [call("read_file", path="src/cli.py")],
                  input_tokens=1240, output_tokens=62),
            (CLI_PY,),
        ),
        Step(
            Reply("The parser is built in main(); adding the flag there.",
                  [call("edit_file", path="src/cli.py", patch=CLI_PATCH)],
                  input_tokens=1480, output_tokens=164, cache_read_tokens=1152),
            ("Applied 1 hunk to src/cli.py (+3 -0).",),
        ),
        Step(
            Reply(None, [call("run_tests", path="tests/test_cli.py")],
                  input_tokens=1705, output_tokens=58, cache_read_tokens=1408),
            ("tests/test_cli.py ....                                   [100%]\n"
             "4 passed in 0.21s",),
        ),
        Step(
            Reply("Added `--verbose`/`-v` to src/cli.py: it sets logging to DEBUG before the "
                  "run. The 4 CLI tests pass.", input_tokens=1893, output_tokens=121,
                  cache_read_tokens=1664),
        ),
    ),
)  # fmt: skip

# --------------------------------------------------------------------------- 2. loop

APP_PY = """from decimal import Decimal


def total(items):
    return sum(Decimal(i.price) for i in items[:-1])
"""
LOOP = Scenario(
    label="loop",
    api="openai",
    stream=True,
    model="gpt-4o",
    system="You are a coding agent. Use the tools to read and edit the repository.",
    prompt="total() in src/app.py gives the wrong answer for a one-item cart. Fix it.",
    tools=("read_file", "edit_file", "run_tests"),
    steps=(
        *(
            Step(
                Reply(None, [call("read_file", path="src/app.py")],
                      input_tokens=980 + 160 * k, output_tokens=24),
                (APP_PY,),
            )
            for k in range(5)
        ),
        Step(
            Reply("total() skips the last item (`items[:-1]`); it should sum every item.",
                  input_tokens=1780, output_tokens=41),
        ),
    ),
)  # fmt: skip

# --------------------------------------------------------------------------- 3. cycle

CYCLE_PATCH = """--- a/src/app.py
+++ b/src/app.py
@@ -4,2 +4,2 @@
 def total(items):
-    return sum(Decimal(i.price) for i in items[:-1])
+    return sum(Decimal(i.price) for i in items[:-1]) + 1
"""
CYCLE_FAIL = """tests/test_app.py F...........                            [100%]
FAILED tests/test_app.py::test_total_one_item - AssertionError: assert Decimal('1') == Decimal('42')
1 failed, 11 passed in 0.34s"""
CYCLE_EDIT = "Applied 1 hunk to src/app.py (+1 -1)."
CYCLE = Scenario(
    label="cycle",
    api="anthropic",
    stream=False,
    model="claude-sonnet-4-6",
    system="You are a coding agent. Make the failing test pass without changing the tests.",
    prompt="tests/test_app.py::test_total_one_item fails. Fix src/app.py.",
    tools=("run_tests", "edit_file", "read_file"),
    steps=(
        *(
            step
            for k in range(4)
            for step in (
                Step(
                    Reply("Running the tests.", [call("run_tests", path="tests")],
                          input_tokens=1300 + 240 * k, output_tokens=40),
                    (CYCLE_FAIL,),
                ),
                Step(
                    Reply("Adjusting total().",
                          [call("edit_file", path="src/app.py", patch=CYCLE_PATCH)],
                          input_tokens=1420 + 240 * k, output_tokens=96),
                    (CYCLE_EDIT,),
                ),
            )
        ),
        Step(
            Reply("I could not make test_total_one_item pass: the same change keeps failing "
                  "the same way. Someone should look at how total() treats the last item.",
                  input_tokens=2310, output_tokens=72),
        ),
    ),
)  # fmt: skip

# --------------------------------------------------------------------------- 4. retry

RETRY = Scenario(
    label="retry",
    api="openai",
    stream=False,
    model="gpt-4o",
    max_retries=3,
    system="You are a coding agent. Use the tools to answer questions about the repository.",
    prompt="Which Python versions does this project support?",
    tools=("read_file", "list_dir", "grep"),
    steps=(
        Step(
            Reply(None, [call("read_file", path="pyproject.toml")],
                  input_tokens=860, output_tokens=22),
            ('[project]\nname = "app"\nrequires-python = ">=3.10"\n',),
            attempts=(Reply(status=503),) * 3,
        ),
        Step(
            Reply(None, [call("grep", pattern="python-version", path=".github/workflows")],
                  input_tokens=1010, output_tokens=31, cache_read_tokens=768),
            ('.github/workflows/ci.yml:14:        python-version: ["3.10", "3.11", "3.12"]',),
        ),
        Step(
            Reply("Python 3.10 and later (requires-python >=3.10); CI tests 3.10, 3.11 and "
                  "3.12.", input_tokens=1120, output_tokens=35, cache_read_tokens=896),
        ),
    ),
)  # fmt: skip

# --------------------------------------------------------------------------- 5. errors

ERRORS = Scenario(
    label="errors",
    api="anthropic",
    stream=True,
    model="claude-sonnet-4-6",
    max_retries=1,
    system="You are a deployment assistant with a shell. Run commands to do what is asked.",
    prompt="Build the frontend and deploy it to staging.",
    tools=("bash", "read_file", "list_dir"),
    steps=(
        Step(
            Reply("Building with pnpm.", [call("bash", command="pnpm build")],
                  input_tokens=1150, output_tokens=48),
            ("bash: pnpm: command not found",), failed=True,
        ),
        Step(
            Reply("pnpm is missing; trying npm.", [call("bash", command="npm run build")],
                  input_tokens=1230, output_tokens=52),
            ("npm ERR! code ENOENT\nnpm ERR! syscall open\nnpm ERR! path /srv/app/package.json\n"
             "npm ERR! enoent Could not read package.json",), failed=True,
        ),
        Step(
            Reply("Running the deploy script directly.", [call("bash", command="./deploy.sh staging")],
                  input_tokens=1330, output_tokens=47),
            ("bash: ./deploy.sh: Permission denied",), failed=True,
            attempts=(Reply(status=429),),
        ),
        Step(
            Reply("Making it executable.", [call("bash", command="chmod +x deploy.sh")],
                  input_tokens=1410, output_tokens=39),
            ("chmod: changing permissions of 'deploy.sh': Operation not permitted",), failed=True,
        ),
        Step(
            Reply("I couldn't deploy: pnpm isn't installed, there is no package.json in "
                  "/srv/app, and deploy.sh isn't executable (I can't chmod it).",
                  input_tokens=1500, output_tokens=66),
        ),
    ),
)  # fmt: skip

# --------------------------------------------------------------------------- 6. spike


def _api_doc() -> str:
    """A long generated document, the kind of thing a model writes in a runaway turn."""
    out = ["# exporter API\n"]
    for n in range(160):
        out.append(
            f"\n## export_{n}(records, *, batch={n + 1})\n\nWrites records in batches of "
            f"{n + 1}. Returns the number written. Raises ExportError when the sink refuses a "
            f"batch; the batches before it stay written.\n"
        )
    return "".join(out)


SPIKE_CALLS = [
    (call("list_dir", path="."), "README.md\npyproject.toml\nsrc/\ntests/\ndocs/"),
    (call("read_file", path="pyproject.toml"), '[project]\nname = "exporter"\nversion = "0.3.1"\n'),
    (call("grep", pattern="def export", path="src"),
     "src/exporter.py:12:def export(records, sink):\nsrc/exporter.py:40:def export_batch(records, sink, size):"),
    (call("read_file", path="src/exporter.py"),
     "def export(records, sink):\n    for r in records:\n        sink.write(r)\n"),
    (call("run_tests", path="tests/test_exporter.py"), "6 passed in 0.12s"),
    (call("read_file", path="tests/test_exporter.py"),
     "def test_export(sink):\n    assert export([1, 2], sink) == 2\n"),
    (call("write_file", path="docs/exporter.md", content=_api_doc()), "Wrote docs/exporter.md."),
    (call("edit_file", path="src/exporter.py", patch="+    return len(records)\n"),
     "Applied 1 hunk to src/exporter.py (+1 -0)."),
    (call("run_tests", path="tests/test_exporter.py"), "7 passed in 0.13s"),
    (call("grep", pattern="TODO", path="src/exporter.py"), "(no matches)"),
]  # fmt: skip
SPIKE_OUTPUT = [92, 104, 85, 117, 96, 110, 9000, 101, 88, 113]
SPIKE = Scenario(
    label="spike",
    api="openai",
    stream=True,
    model="gpt-4o-mini",
    system="You are a coding agent. Keep the exporter's docs and code in step.",
    prompt="Document the exporter module in docs/exporter.md and make export() return a count.",
    tools=("list_dir", "read_file", "grep", "run_tests", "edit_file", "write_file"),
    steps=(
        *(
            Step(
                Reply(None, [c], input_tokens=1500 + 200 * k, output_tokens=SPIKE_OUTPUT[k]),
                (result,),
            )
            for k, (c, result) in enumerate(SPIKE_CALLS)
        ),
        Step(
            Reply("docs/exporter.md documents the module and export() now returns how many "
                  "records it wrote; the 7 tests pass.", input_tokens=3500, output_tokens=97),
        ),
    ),
)  # fmt: skip

# --------------------------------------------------------------------------- 7. stall

STALL_LS = "README.md\na.txt\nsrc/\ntests/"
STALL_A = "TODO: wire the exporter to the new sink API\n"
STALL = Scenario(
    label="stall",
    api="anthropic",
    stream=False,
    model="claude-sonnet-4-6",
    max_tokens=1024,
    system="You are a coding agent. Find the open TODOs and resolve them.",
    prompt="Resolve the TODO in this repository.",
    tools=("list_dir", "read_file", "edit_file"),
    steps=(
        Step(Reply("Looking around.", [call("list_dir", path=".")],
                   input_tokens=1020, output_tokens=35), (STALL_LS,)),
        Step(Reply("a.txt looks like the TODO list.", [call("read_file", path="a.txt")],
                   input_tokens=1110, output_tokens=41), (STALL_A,)),
        Step(Reply("Let me check the layout again.", [call("list_dir", path=".")],
                   input_tokens=1190, output_tokens=33), (STALL_LS,)),
        Step(Reply("Re-reading the TODO.", [call("read_file", path="a.txt")],
                   input_tokens=1270, output_tokens=30), (STALL_A,)),
        Step(Reply("Checking the directory once more.", [call("list_dir", path=".")],
                   input_tokens=1350, output_tokens=34), (STALL_LS,)),
        Step(Reply("The TODO asks to wire the exporter to the new sink API. To do that I first "
                   "need to find where the exporter lives, which means listing the directory "
                   "again and then reading", stop="max_tokens",
                   input_tokens=1430, output_tokens=1024)),
    ),
)  # fmt: skip

# --------------------------------------------------------------------------- 8. drift

DRIFT_SYSTEM = "You are a coding agent. Fix failing tests by changing the code, not the tests."
DRIFT_PROMPT = "The test suite fails. Find the bug and fix it."
DRIFT_TOOLS = ("list_dir", "read_file", "run_tests", "edit_file", "search_web")
DRIFT_COMMON = (
    Step(Reply(None, [call("list_dir", path=".")], input_tokens=900, output_tokens=18),
         ("setup.py\nsrc/\ntests/\ndocs/",)),
    Step(Reply(None, [call("read_file", path="setup.py")], input_tokens=990, output_tokens=21),
         ('from setuptools import setup\nsetup(name="app", packages=["app"])\n',)),
    Step(Reply(None, [call("read_file", path="src/app.py")], input_tokens=1080, output_tokens=22),
         (APP_PY,)),
)  # fmt: skip
DRIFT_SAME = (
    *DRIFT_COMMON,
    Step(Reply(None, [call("run_tests", path="tests")], input_tokens=1200, output_tokens=18),
         (CYCLE_FAIL,)),
    Step(Reply(None, [call("edit_file", path="src/app.py", patch="fix")],
               input_tokens=1380, output_tokens=64), ("Applied 1 hunk to src/app.py (+1 -1).",)),
    Step(Reply(None, [call("run_tests", path="tests")], input_tokens=1450, output_tokens=18),
         ("12 passed in 0.31s",)),
    Step(Reply("Fixed: total() skipped the last item; it now sums them all and the 12 tests "
               "pass.", input_tokens=1520, output_tokens=38)),
)  # fmt: skip
DRIFT_OFF = (
    *DRIFT_COMMON,
    Step(Reply(None, [call("search_web", query="pytest failure")],
               input_tokens=1200, output_tokens=20),
         ("1. How to invoke pytest - docs.pytest.org\n2. Managing pytest's output\n"
          "3. Stack Overflow: pytest fails with AssertionError",)),
    Step(Reply(None, [call("read_file", path="docs/README.md")],
               input_tokens=1330, output_tokens=22),
         ("# app\n\nRun the tests with `pytest -x`.\n",)),
    Step(Reply("The failure seems environmental; the README says to run `pytest -x`. I did not "
               "change any code.", input_tokens=1420, output_tokens=34)),
)  # fmt: skip


def _drift(label: str, steps: tuple[Step, ...]) -> Scenario:
    return Scenario(label=label, api="openai", stream=True, model="gpt-4o", system=DRIFT_SYSTEM,
                    prompt=DRIFT_PROMPT, tools=DRIFT_TOOLS, steps=steps)  # fmt: skip


SCRIPTS: dict[str, Scenario] = {
    s.label: s
    for s in (
        CLEAN,
        LOOP,
        CYCLE,
        RETRY,
        ERRORS,
        SPIKE,
        STALL,
        _drift("drift-1", DRIFT_SAME),
        _drift("drift-2", DRIFT_SAME),
        _drift("drift-3", DRIFT_OFF),
    )
}
SCENARIOS: tuple[str, ...] = tuple(SCRIPTS)

PLANTED: dict[str, str] = {
    "clean": "a good run: 4 turns, 3 different tool calls with distinct results, a final "
    "answer; no errors (nothing to find)",
    "loop": 'read_file {"path": "src/app.py"} called in 5 turns in a row with the same '
    "result, then an answer",
    "cycle": 'run_tests {"path": "tests"} -> edit_file {"path": "src/app.py", same patch} '
    "4 times round (8 turns), results identical each round, then gives up",
    "retry": "one request failed 3 times with 503 and was resent unchanged by the SDK "
    "(max_retries=3) until a 200; then a normal turn and an answer",
    "errors": "4 tool results sent back with is_error (bash failures) in 4 turns, plus one "
    "429 retried once by the SDK, within seconds",
    "spike": "10 steady turns (input 1,500 + 200/turn, output 80-120) but turn 7 outputs "
    "9,000 tokens; gpt-4o-mini",
    "stall": "2 useful turns, then 3 turns re-calling earlier calls with the same arguments "
    "and the same results, then cut off (max_tokens) without an answer",
    "drift-1": "the reference run: list_dir, read_file x2, run_tests, edit_file, run_tests, answer",
    "drift-2": "identical to drift-1 (same calls, arguments and results)",
    "drift-3": "as drift-1 for 3 calls, then departs at call 4 (search_web instead of "
    "run_tests), read_file docs/README.md, and answers differently",
}


# --------------------------------------------------------------------------- playing


def record_scenarios(proxy_url: str, fake: FakeProvider) -> None:
    """Play every scenario through the tapewire proxy at `proxy_url`, whose upstreams point at
    `fake`, each into its own session (``/s/<label>/``)."""
    for scenario in SCRIPTS.values():
        play(proxy_url, fake, scenario)


def play(proxy_url: str, fake: FakeProvider, scenario: Scenario) -> None:
    fake.script(scenario.label, scenario.replies())
    if scenario.api == "anthropic":
        _play_anthropic(proxy_url, scenario)
    else:
        _play_openai(proxy_url, scenario)
    left = fake.remaining(scenario.label)
    assert left == 0, f"{scenario.label}: {left} scripted replies were not taken"


def _expect(scenario: Scenario, step: Step, text: str | None, calls: list[Any]) -> None:
    """The SDK handed back what the script said (a sanity check of the round trip)."""
    want = [(name, args) for name, args in step.reply.tool_calls]
    got = [(name, args) for _, name, args in calls]
    assert (text, got) == (step.reply.text, want), f"{scenario.label}: {text!r} {got!r}"
    assert len(step.results) == len(calls), f"{scenario.label}: a result per tool call"


def _play_anthropic(proxy_url: str, scenario: Scenario) -> None:
    tools: Any = [
        {"name": n, "description": TOOLS[n][0], "input_schema": TOOLS[n][1]} for n in scenario.tools
    ]
    messages: list[Any] = [{"role": "user", "content": scenario.prompt}]
    with anthropic.Anthropic(
        base_url=f"{proxy_url}/s/{scenario.label}",
        api_key=API_KEY,
        max_retries=scenario.max_retries,
        default_headers={"x-fake-script": scenario.label},
    ) as client:
        for step in scenario.steps:
            kw: dict[str, Any] = {
                "model": scenario.model,
                "max_tokens": scenario.max_tokens,
                "system": scenario.system,
                "tools": tools,
                "messages": messages,
            }
            if scenario.stream:
                with client.messages.stream(**kw) as stream:
                    message = stream.get_final_message()
            else:
                message = client.messages.create(**kw)
            content: list[dict[str, Any]] = []
            texts: list[str] = []
            calls: list[tuple[str, str, Any]] = []
            for block in message.content:
                if block.type == "text":
                    texts.append(block.text)
                    content.append({"type": "text", "text": block.text})
                elif block.type == "tool_use":
                    calls.append((block.id, block.name, block.input))
                    content.append(
                        {"type": "tool_use", "id": block.id, "name": block.name,
                         "input": block.input}
                    )  # fmt: skip
            _expect(scenario, step, "".join(texts) if texts else None, calls)
            messages.append({"role": "assistant", "content": content})
            if not calls:
                break
            results: list[dict[str, Any]] = []
            for (call_id, _, _), result in zip(calls, step.results, strict=True):
                block_out: dict[str, Any] = {
                    "type": "tool_result",
                    "tool_use_id": call_id,
                    "content": result,
                }
                if step.failed:
                    block_out["is_error"] = True
                results.append(block_out)
            messages.append({"role": "user", "content": results})
        else:
            raise AssertionError(f"{scenario.label}: the last step called a tool")


def _play_openai(proxy_url: str, scenario: Scenario) -> None:
    tools: Any = [
        {"type": "function",
         "function": {"name": n, "description": TOOLS[n][0], "parameters": TOOLS[n][1]}}
        for n in scenario.tools
    ]  # fmt: skip
    messages: list[Any] = [
        {"role": "system", "content": scenario.system},
        {"role": "user", "content": scenario.prompt},
    ]
    with openai.OpenAI(
        base_url=f"{proxy_url}/s/{scenario.label}/v1",
        api_key=API_KEY,
        max_retries=scenario.max_retries,
        default_headers={"x-fake-script": scenario.label},
    ) as client:
        for step in scenario.steps:
            text, calls = (_openai_streamed if scenario.stream else _openai_plain)(
                client, scenario, tools, messages
            )
            _expect(scenario, step, text, [(i, n, json.loads(a)) for i, n, a in calls])
            assistant: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                assistant["tool_calls"] = [
                    {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                    for i, n, a in calls
                ]
            messages.append(assistant)
            if not calls:
                break
            for (call_id, _, _), result in zip(calls, step.results, strict=True):
                messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
        else:
            raise AssertionError(f"{scenario.label}: the last step called a tool")


def _openai_plain(
    client: openai.OpenAI, scenario: Scenario, tools: Any, messages: list[Any]
) -> tuple[str | None, list[tuple[str, str, str]]]:
    completion = client.chat.completions.create(
        model=scenario.model, messages=messages, tools=tools
    )
    message = completion.choices[0].message
    calls = [
        (c.id, c.function.name, c.function.arguments)
        for c in message.tool_calls or []
        if c.type == "function"
    ]
    return message.content, calls


def _openai_streamed(
    client: openai.OpenAI, scenario: Scenario, tools: Any, messages: list[Any]
) -> tuple[str | None, list[tuple[str, str, str]]]:
    """Accumulate a streamed answer as an agent does: text pieces, tool calls by index."""
    text: list[str] | None = None
    calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
    stream = client.chat.completions.create(
        model=scenario.model,
        messages=messages,
        tools=tools,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content is not None:
                text = [*(text or []), delta.content]
            for tc in delta.tool_calls or []:
                entry = calls.setdefault(tc.index, ["", "", ""])
                if tc.id:
                    entry[0] = tc.id
                if tc.function and tc.function.name:
                    entry[1] = tc.function.name
                if tc.function and tc.function.arguments:
                    entry[2] += tc.function.arguments
    joined = "".join(text) if text is not None else None
    return joined, [(i, n, a) for i, n, a in (calls[k] for k in sorted(calls))]
