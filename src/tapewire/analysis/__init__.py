"""Analyses over derived sessions: pure functions of what `tapewire.query` returns.

`analyze` runs the detectors over one session: loops (`loops.py`), stalls (`stalls.py`),
errors (`errors.py`) and anomalies (`anomalies.py`). The same record and thresholds always give
the same findings, with the same ids. Detectors that compare a session with the rest of the
store (tool error rates, similar sessions) need a `History`; without one, only the session's
own record is used, which is what the ingester stores as turns arrive. `drift.py` compares
runs; `diff.py` two of them, turn by turn."""

from __future__ import annotations

from collections.abc import Callable

from tapewire.analysis import anomalies, errors, loops, stalls
from tapewire.analysis.findings import SEVERITIES, Finding, ordered, rank
from tapewire.analysis.history import History, Totals
from tapewire.analysis.record import Record, build
from tapewire.analysis.thresholds import Thresholds

__all__ = [
    "SEVERITIES", "Finding", "History", "Record", "Thresholds", "Totals", "analyze", "build",
    "rank",
]  # fmt: skip

Detector = Callable[[Record, Thresholds], list[Finding]]
Comparison = Callable[[Record, Thresholds, History], list[Finding]]

# The session's own record: what the ingester computes as turns arrive.
OWN: tuple[Detector, ...] = (
    loops.repeated_calls,
    loops.call_cycles,
    loops.retries,
    stalls.no_progress,
    stalls.unfinished,
    stalls.truncated,
    errors.tool_errors,
    errors.error_bursts,
    anomalies.turn_anomalies,
)
# Against the rest of the store: when a whole store is at hand (analyze, the API).
AGAINST_HISTORY: tuple[Comparison, ...] = (errors.tool_error_rates, anomalies.peer_anomalies)


def analyze(
    record: Record, limits: Thresholds | None = None, history: History | None = None
) -> list[Finding]:
    limits = limits or Thresholds()
    found = [f for detect in OWN for f in detect(record, limits)]
    if history is not None:
        found += [f for compare in AGAINST_HISTORY for f in compare(record, limits, history)]
    return ordered(found)
