"""Who is talking: the harness, the session and thread an exchange belongs to, and whether it is
a side call (DESIGN, Sessions). Pure functions of the exchange and its Turn."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from tapewire.model import Headers, Turn, header_value

_NAMESPACE = uuid.UUID("5d6a0c1e-7a9f-4f0e-9b52-2c5b1f0b7a31")  # tapewire's, fixed forever


def derived_id(*parts: str) -> str:
    """A deterministic id: re-deriving, or deriving on another proxy, gives the same one."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def harness(headers: Headers, evidence: dict[str, str]) -> str:
    agent = (header_value(headers, "user-agent") or "").lower()
    originator = (header_value(headers, "originator") or "").lower()
    if "claude_session" in evidence or agent.startswith("claude-cli"):
        return "claude-code"
    if "codex_session" in evidence or "codex" in originator or agent.startswith("codex"):
        return "codex"
    if "aider" in agent:
        return "aider"
    if agent.startswith("geminicli"):  # GeminiCLI/<version>[/<model>] (<os>; <arch>)
        return "gemini-cli"
    return "unknown"


def session_key(evidence: dict[str, str]) -> tuple[str, str | None] | None:
    """(key, harness session id) from the strongest identity the wire carried, or None when
    only conversation continuity can tell."""
    harness_id = evidence.get("claude_session") or evidence.get("codex_session")
    if evidence.get("session"):
        return "s:" + evidence["session"], harness_id
    if evidence.get("claude_session"):
        return "claude-code:" + evidence["claude_session"], harness_id
    if evidence.get("codex_session"):
        return "codex:" + evidence["codex_session"], harness_id
    return None


def subagent(evidence: dict[str, str]) -> str | None:
    """The sub-thread id per the thread fixtures: a non-empty Claude Code agent id first; then a
    Codex thread id that differs from its session id (an equal pair is the root thread, a lone
    member of the pair is no evidence)."""
    agent = evidence.get("claude_agent")
    if agent:
        return agent
    thread, session = evidence.get("codex_thread"), evidence.get("codex_session")
    if thread and session and thread != session:
        return thread
    return None


def _text(parts: list[Any]) -> str:
    return "\n".join(p.text for p in parts if p.type == "text" and p.text)


def is_side_call(turn: Turn, harness_name: str) -> bool:
    """Calls a harness makes beside the conversation: title generation, quota probes,
    summaries. Claude Code gives its conversation turns (main and subagents) tools, and its
    side calls none; any harness's 1-token probe is a side call."""
    max_tokens = turn.params.get("max_tokens") or turn.params.get("max_output_tokens")
    if isinstance(max_tokens, int) and max_tokens <= 1:
        return True
    return harness_name == "claude-code" and not turn.tools and bool(turn.messages)


def title_from(turn: Turn) -> str | None:
    """The title a harness's title call produced (Claude Code answers `{"title": "…"}`)."""
    asked = _text(turn.system) + "\n" + "\n".join(_text(m.parts) for m in turn.messages[-1:])
    if "title" not in asked.lower() or turn.output is None:
        return None
    text = _text(turn.output.parts).strip()
    if not text:
        return None
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("title"), str):
        text = data["title"].strip()
    text = text.strip().strip('"').strip()
    return text[:200] if text and "\n" not in text else None
