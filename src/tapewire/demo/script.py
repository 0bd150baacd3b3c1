"""The scripted OpenAI Chat Completions conversation: a user asks why a test fails, the model
reads the test, runs the tests, and answers. The fake provider plays the model's side
(`reply_for`), the demo's client the user's and the tools' (`PROMPT`, `run_tool`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MODEL = "gpt-4o-mini"  # priced in data/prices.json
SERVED_MODEL = "gpt-4o-mini-2024-07-18"  # the snapshot OpenAI names in its answers
SESSION = "demo-openai"

SYSTEM = (
    "You are a coding assistant working in the user's Python repository. "
    "Use the tools to look at files and run tests before you answer."
)
PROMPT = "tests/test_math.py::test_add started failing on main. Can you find out why?"

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file of the repository.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string", "description": "Repository path."}},
                "required": ["path"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_tests",
            "description": "Run pytest on a path and return its output.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string", "description": "Test path."}},
                "required": ["path"],
                "additionalProperties": False,
            },
        },
    },
]

_TEST_FILE = """\
from mathlib import add, sub


def test_add():
    assert add(2, 2) == 5


def test_sub():
    assert sub(5, 3) == 2
"""

_PYTEST_OUTPUT = """\
============================= test session starts ==============================
collected 4 items

tests/test_math.py F.                                                    [ 50%]
tests/test_strings.py ..                                                 [100%]

=================================== FAILURES ===================================
___________________________________ test_add ___________________________________

    def test_add():
>       assert add(2, 2) == 5
E       assert 4 == 5
E        +  where 4 = add(2, 2)

tests/test_math.py:5: AssertionError
=========================== short test summary info ============================
FAILED tests/test_math.py::test_add - AssertionError: assert 4 == 5
========================= 1 failed, 3 passed in 0.04s ==========================
"""

_ANSWER = (
    "`add` is fine; the test is wrong. `test_add` asserts `add(2, 2) == 5`, and `add(2, 2)` "
    "returns 4, so pytest reports `AssertionError: assert 4 == 5`. The other 3 tests pass. "
    "Change the expectation to `assert add(2, 2) == 4` (or use operands that sum to 5) and "
    "the suite is green again."
)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model streams it


@dataclass(frozen=True)
class Reply:
    """One answer of the model: a tool call or text, and what it was billed."""

    tool_call: ToolCall | None
    text: str | None
    prompt_tokens: int
    completion_tokens: int


# The model's answers, by how many tool results the request already holds.
REPLIES: tuple[Reply, ...] = (
    Reply(
        ToolCall("call_Qm4XkV8dR2pL7sNw1cTz9bEa", "read_file", '{"path":"tests/test_math.py"}'),
        None,
        prompt_tokens=163,
        completion_tokens=19,
    ),
    Reply(
        ToolCall("call_Hy6JtB3nW0qF5uZe8mKr2gLc", "run_tests", '{"path":"tests"}'),
        None,
        prompt_tokens=231,
        completion_tokens=16,
    ),
    Reply(None, _ANSWER, prompt_tokens=498, completion_tokens=84),
)

_TOOL_OUTPUTS = {"read_file": _TEST_FILE, "run_tests": _PYTEST_OUTPUT}


def reply_for(request: dict[str, Any]) -> Reply:
    """The model's answer to a request: the turn is how many tool results it holds."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        messages = []
    results = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "tool")
    return REPLIES[min(results, len(REPLIES) - 1)]


def run_tool(name: str, arguments: str) -> str:
    """What the (pretend) tool returns; arguments are checked as a real tool would."""
    args = json.loads(arguments)
    if not isinstance(args, dict) or not isinstance(args.get("path"), str):
        return f"error: {name} needs a path"
    return _TOOL_OUTPUTS.get(name, f"error: no tool named {name}")


def first_request() -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPT},
        ],
        "tools": TOOLS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
