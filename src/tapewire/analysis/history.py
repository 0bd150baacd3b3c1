"""What a session is compared with: every recorded session's tool error rates, and the totals
of sessions of the same harness and model. Built once per analysis run by
`query.analysis_history`; pure data."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Totals:
    session: str
    turns: int
    tool_calls: int
    output_tokens: int
    cost_usd: float | None
    duration_s: float


@dataclass(frozen=True)
class History:
    tool_rates: dict[str, tuple[int, int]] = field(default_factory=dict)  # name: (errors, calls)
    peers: dict[tuple[str, str], list[Totals]] = field(default_factory=dict)  # (harness, model)
