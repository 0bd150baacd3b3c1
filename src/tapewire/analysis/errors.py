"""Errors: which tools failed, errors clustered in time (tool errors, rate limits, overloads,
other HTTP errors), and a tool failing far more here than it does over all sessions."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tapewire.analysis.findings import Finding
from tapewire.analysis.history import History
from tapewire.analysis.record import Record
from tapewire.analysis.thresholds import Thresholds


@dataclass(frozen=True)
class _Event:
    at: float
    turn: int
    kind: str  # tool_error | rate_limit | overloaded | http_4xx | http_5xx | error
    what: str


_NAMES = {
    "tool_error": ("tool error", "tool errors"), "rate_limit": ("rate limit", "rate limits"),
    "overloaded": ("overload", "overloads"), "http_4xx": ("HTTP 4xx", "HTTP 4xx"),
    "http_5xx": ("HTTP 5xx", "HTTP 5xx"), "error": ("failed turn", "failed turns"),
}  # fmt: skip


def _kind(status: int | None) -> str:
    if status == 429:
        return "rate_limit"
    if status in (503, 529):
        return "overloaded"
    if status is not None and 400 <= status < 500:
        return "http_4xx"
    if status is not None and status >= 500:
        return "http_5xx"
    return "error"


def _events(record: Record) -> list[_Event]:
    events = []
    for t in record.turns:
        if t.failed:
            events.append(_Event(t.started_at, t.index, _kind(t.status), str(t.status or t.error)))
        for c in t.calls:
            if c.is_error:
                events.append(_Event(c.answered_at or t.started_at, t.index, "tool_error", c.name))
    return sorted(events, key=lambda e: (e.at, e.turn))


def tool_errors(record: Record, limits: Thresholds) -> list[Finding]:
    """Per tool, the calls that came back as errors (info: agents try things; the bursts and
    the rates below say when it is more)."""
    calls = Counter(c.name for c in record.calls if c.result is not None)
    failed: dict[str, list[int]] = {}
    for c in record.calls:
        if c.is_error:
            failed.setdefault(c.name, []).append(c.turn)
    return [
        Finding(
            session=record.session,
            kind="tool_errors",
            severity="info",
            title=f"{name} failed {len(turns)} of {calls[name]} calls",
            turns=tuple(sorted(set(turns))),
            evidence={"tool": name, "errors": len(turns), "calls": calls[name]},
            key=name,
        )
        for name, turns in sorted(failed.items())
    ]


def error_bursts(record: Record, limits: Thresholds) -> list[Finding]:
    """`burst_errors` or more errors each within `burst_window_s` of the one before."""
    out = []
    cluster: list[_Event] = []
    for e in [*_events(record), None]:
        if e is not None and (not cluster or e.at - cluster[-1].at <= limits.burst_window_s):
            cluster.append(e)
            continue
        if len(cluster) >= limits.burst_errors:
            kinds = Counter(x.kind for x in cluster)
            tools = Counter(x.what for x in cluster if x.kind == "tool_error")
            parts = [
                f"{n} {k.replace('_', ' ')}{'s' if n > 1 else ''}" for k, n in sorted(kinds.items())
            ]
            span = cluster[-1].at - cluster[0].at
            severity = (
                "error" if len(cluster) >= limits.burst_errors * limits.escalate else "warning"
            )
            out.append(Finding(
                session=record.session,
                kind="error_burst",
                severity=severity,
                title=f"{len(cluster)} errors in {span:.0f} s: {', '.join(parts)}"
                      + (f" ({', '.join(f'{t} x{n}' for t, n in tools.most_common())})" if tools else ""),
                turns=tuple(sorted({x.turn for x in cluster})),
                evidence={"errors": len(cluster), "seconds": round(span, 3),
                          "by_kind": dict(sorted(kinds.items())), "tools": dict(tools),
                          "threshold": limits.burst_errors, "window_s": limits.burst_window_s},
                key=f"{cluster[0].turn}:{cluster[0].at}",
            ))  # fmt: skip
        cluster = [e] if e is not None else []
    return out


def tool_error_rates(record: Record, limits: Thresholds, history: History) -> list[Finding]:
    """A tool failing here at `tool_error_ratio` times its rate over all recorded sessions."""
    out = []
    calls = Counter(c.name for c in record.calls if c.result is not None)
    errors = Counter(c.name for c in record.calls if c.is_error)
    for name, n_err in sorted(errors.items()):
        all_errors, all_calls = history.tool_rates.get(name, (0, 0))
        if n_err < limits.tool_error_min or not all_calls or not calls[name]:
            continue
        rate, overall = n_err / calls[name], all_errors / all_calls
        if rate < limits.tool_error_ratio * overall:
            continue
        out.append(Finding(
            session=record.session,
            kind="tool_error_rate",
            severity="warning",
            title=f"{name} failed {rate:.0%} of its calls here, {rate / overall if overall else float('inf'):.1f}x "
                  f"its rate over all sessions ({overall:.0%} of {all_calls})",
            turns=tuple(sorted({c.turn for c in record.calls if c.is_error and c.name == name})),
            evidence={"tool": name, "errors": n_err, "calls": calls[name], "rate": round(rate, 4),
                      "overall_rate": round(overall, 4), "overall_calls": all_calls,
                      "ratio_threshold": limits.tool_error_ratio},
            key=name,
        ))  # fmt: skip
    return out
