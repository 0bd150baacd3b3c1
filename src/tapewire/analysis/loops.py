"""Loops: the same call made again and again for the same answer, a cycle of calls going
round, the same request sent again (a retry storm)."""

from __future__ import annotations

from collections.abc import Sequence

from tapewire.analysis.findings import Finding
from tapewire.analysis.record import Call, Record, TurnView
from tapewire.analysis.thresholds import Thresholds


def _severity(count: int, threshold: int, limits: Thresholds) -> str:
    return "error" if count >= threshold * limits.escalate else "warning"


def _lane(thread: str | None, turns: Sequence[TurnView]) -> str:
    return "" if not turns or turns[0].kind == "main" else " (in a subagent)"


def repeated_calls(record: Record, limits: Thresholds) -> list[Finding]:
    """The same tool, the same arguments, the same result, `repeated_call` times or more in
    one thread: the agent asked a question it already had the answer to."""
    out = []
    for thread, turns in record.threads():
        groups: dict[tuple[str, str, str], list[Call]] = {}
        for t in turns:
            for c in t.calls:
                if c.result is not None:
                    groups.setdefault((c.name, c.args, c.result), []).append(c)
        for (name, args, _), calls in groups.items():
            if len(calls) < limits.repeated_call:
                continue
            turn_ids = tuple(sorted({c.turn for c in calls}))
            out.append(Finding(
                session=record.session,
                kind="repeated_call",
                severity=_severity(len(calls), limits.repeated_call, limits),
                title=f"{name} called {len(calls)} times with the same arguments and the same "
                      f"result{_lane(thread, turns)}: {calls[0].short_args(60)}",
                turns=turn_ids,
                evidence={"tool": name, "arguments": args, "count": len(calls),
                          "threshold": limits.repeated_call, "thread": thread},
                key=f"{thread}:{name}:{args}",
            ))  # fmt: skip
    return out


def call_cycles(record: Record, limits: Thresholds) -> list[Finding]:
    """A block of 2 to `cycle_max_period` different calls (name and arguments) repeated back
    to back `cycle_repeats` times or more: A→B→A→B→A→B."""
    out = []
    for thread, turns in record.threads():
        calls = [c for t in turns for c in t.calls]
        keys = [c.call_key for c in calls]
        i = 0
        while i < len(keys):
            found = _cycle_at(keys, i, limits)
            if found is None:
                i += 1
                continue
            period, repeats = found
            span = calls[i : i + period * repeats]
            names = [c.name for c in span[:period]]
            turn_ids = tuple(sorted({c.turn for c in span}))
            out.append(Finding(
                session=record.session,
                kind="call_cycle",
                severity=_severity(repeats, limits.cycle_repeats, limits),
                title=f"a cycle of {period} tool calls went round {repeats} times"
                      f"{_lane(thread, turns)}: {' → '.join(names)} → …",
                turns=turn_ids,
                evidence={"cycle": [{"tool": c.name, "arguments": c.args} for c in span[:period]],
                          "repeats": repeats, "threshold": limits.cycle_repeats,
                          "thread": thread},
                key=f"{thread}:{calls[i].id}",
            ))  # fmt: skip
            i += period * repeats
    return out


def _cycle_at(
    keys: Sequence[tuple[str, str]], i: int, limits: Thresholds
) -> tuple[int, int] | None:
    """(period, repeats) of the longest-running cycle starting at i, if one runs long enough."""
    best: tuple[int, int] | None = None
    for period in range(2, limits.cycle_max_period + 1):
        block = keys[i : i + period]
        if len(block) < period or len(set(block)) < 2:
            continue
        repeats = 1
        while keys[i + repeats * period : i + (repeats + 1) * period] == block:
            repeats += 1
        if repeats >= limits.cycle_repeats and (
            best is None or repeats * period > best[0] * best[1]
        ):
            best = (period, repeats)
    return best


def retries(record: Record, limits: Thresholds) -> list[Finding]:
    """The same request (the same conversation, content-addressed: its last message's node)
    sent again and again in a row: a retry storm. Once is a retry, said as info."""
    out = []
    for thread, turns in record.threads():
        run: list[TurnView] = []
        for t in [*turns, None]:
            if t is not None and run and t.request_node == run[-1].request_node and t.request_node:
                run.append(t)
                continue
            if len(run) >= 2:
                out.append(_retry_finding(record, thread, run, limits))
            run = [t] if t is not None else []
    return out


def _retry_finding(
    record: Record, thread: str | None, run: list[TurnView], limits: Thresholds
) -> Finding:
    failed = [t for t in run if t.failed]
    statuses = sorted({t.status for t in failed if t.status is not None})
    why = (
        f" after {len(failed)} failed ({', '.join(map(str, statuses)) or 'errors'})"
        if failed
        else ""
    )
    sent = len(run)
    severity = "info" if sent < limits.retries else _severity(sent, limits.retries, limits)
    return Finding(
        session=record.session,
        kind="retry",
        severity=severity,
        title=f"the same request was sent {sent} times in a row{why}",
        turns=tuple(t.index for t in run),
        evidence={"sent": sent, "failed": len(failed), "statuses": statuses,
                  "threshold": limits.retries, "thread": thread,
                  "request_node": run[0].request_node},
        key=f"{thread}:{run[0].exchange}",
    )  # fmt: skip
