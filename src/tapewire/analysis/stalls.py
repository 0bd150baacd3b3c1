"""Stalls: turns that learn nothing new, a thread that ends without an answer, a run cut off
by its output limit or its context window."""

from __future__ import annotations

import re

from tapewire.analysis.findings import Finding
from tapewire.analysis.record import Record, TurnView
from tapewire.analysis.thresholds import Thresholds

# Stop reasons that mean "cut off", by provider: Anthropic, OpenAI Chat, Responses, Ollama.
CUT_OFF = {"max_tokens", "length", "max_output_tokens", "model_context_window_exceeded"}
ASKED_TOOLS = {"tool_use", "tool_calls", "function_call"}
CONTEXT_ERROR = re.compile(
    r"prompt is too long|context[_ ]length|maximum context|context window|too many tokens",
    re.IGNORECASE,
)


def no_progress(record: Record, limits: Thresholds) -> list[Finding]:
    """`no_progress_turns` turns in a row whose every tool call got a result the thread had
    already seen for the same call: the agent is going over old ground."""
    out = []
    for thread, turns in record.threads():
        seen: set[tuple[str, str, str]] = set()
        streak: list[TurnView] = []
        for t in [*turns, None]:
            answered = [c for c in t.calls if c.result is not None] if t is not None else []
            old = bool(answered) and all((c.name, c.args, c.result) in seen for c in answered)
            if old and t is not None:
                streak.append(t)
            else:
                if len(streak) >= limits.no_progress_turns:
                    out.append(Finding(
                        session=record.session,
                        kind="no_progress",
                        severity="warning",
                        title=f"{len(streak)} turns in a row learned nothing new: every tool "
                              "result had been seen before for the same call",
                        turns=tuple(s.index for s in streak),
                        evidence={"turns_in_a_row": len(streak),
                                  "threshold": limits.no_progress_turns, "thread": thread},
                        key=f"{thread}:{streak[0].exchange}",
                    ))  # fmt: skip
                streak = []
            for c in answered:
                seen.add((c.name, c.args, c.result or ""))
    return out


def unfinished(record: Record, limits: Thresholds) -> list[Finding]:
    """A thread whose last turn asked for tools that never answered, or failed: it ended
    without a final answer. (Of a run still going, this holds until its next turn.)"""
    out = []
    for thread, turns in record.threads():
        last = turns[-1]
        if last.failed:
            why = f"its last turn failed ({last.status or last.error})"
        elif last.calls and all(c.result is None for c in last.calls):
            names = ", ".join(sorted({c.name for c in last.calls}))
            why = f"its last turn asked for {names} and no result came back"
        else:
            continue
        where = "the main thread" if last.kind == "main" else "a subagent"
        out.append(Finding(
            session=record.session,
            kind="unfinished",
            severity="warning",
            title=f"{where} ended without a final answer: {why}",
            turns=(last.index,),
            evidence={"thread": thread, "status": last.status, "error": last.error,
                      "stop_reason": last.stop_reason},
            key=f"{thread}",
        ))  # fmt: skip
    return out


def truncated(record: Record, limits: Thresholds) -> list[Finding]:
    """Turns cut off by the output limit (`max_tokens`, `length`) or refused for a context
    that no longer fits."""
    cut = [t for t in record.turns if t.kind != "side" and t.stop_reason in CUT_OFF]
    full = [
        t for t in record.turns if t.kind != "side" and t.error and CONTEXT_ERROR.search(t.error)
    ]
    out = []
    if cut:
        out.append(Finding(
            session=record.session,
            kind="truncated",
            severity="warning",
            title=f"{_count(cut)} cut off by the output limit ({cut[0].stop_reason})",
            turns=tuple(t.index for t in cut),
            evidence={"stop_reasons": sorted({t.stop_reason or "" for t in cut}),
                      "output_tokens": [t.output_tokens for t in cut]},
            key="output",
        ))  # fmt: skip
    if full:
        out.append(Finding(
            session=record.session,
            kind="context_full",
            severity="error",
            title=f"{_count(full)} refused: the context no longer fits ({full[0].error})"[:200],
            turns=tuple(t.index for t in full),
            evidence={"input_tokens": [t.input_tokens for t in full]},
            key="context",
        ))  # fmt: skip
    return out


def _count(turns: list[TurnView]) -> str:
    return "1 turn" if len(turns) == 1 else f"{len(turns)} turns"
