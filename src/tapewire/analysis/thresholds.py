"""The detectors' thresholds, with their defaults (docs/analysis.md lists them). The user's
config file overrides any of them in its `[analysis]` table:

    [analysis]
    repeated_call = 4
    anomaly_z = 8.0
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tapewire.config import ConfigError, section


@dataclass(frozen=True)
class Thresholds:
    repeated_call: int = 3  # the same call with the same result this many times in a thread
    cycle_repeats: int = 3  # a cycle of 2-4 calls going round this many times
    cycle_max_period: int = 4
    retries: int = 3  # the same request sent this many times in a row
    no_progress_turns: int = 3  # turns in a row whose tool results were all seen before
    burst_errors: int = 3  # errors (tool errors, HTTP 4xx/5xx) ...
    burst_window_s: float = 60.0  # ... within this many seconds of each other
    anomaly_min_turns: int = 8  # a session's own trend needs this many turns
    anomaly_z: float = 6.0  # robust z-score (median/MAD) above which a turn is off its trend
    anomaly_ratio: float = 8.0  # and at least this many times the session's median
    anomaly_latency_s: float = 1.0  # and a latency at least this much above it: less is noise
    tool_error_ratio: float = 2.0  # a tool failing this many times its rate over all sessions
    tool_error_min: int = 3  # with at least this many errors
    history_min_sessions: int = 5  # comparing with similar sessions needs this many of them
    history_ratio: float = 5.0  # a session this many times the median of similar ones
    drift_ratio: float = 0.2  # a run whose path differs from the usual one in this share of steps
    escalate: int = 2  # a count this many times its threshold raises warning to error

    @classmethod
    def load(cls, path: Path | None = None) -> Thresholds:
        return cls.from_mapping(section("analysis", path))

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Thresholds:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"[analysis]: unknown setting {', '.join(unknown)}")
        out: dict[str, Any] = {}
        for name, value in values.items():
            want = float if known[name].type in ("float", float) else int
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"[analysis] {name}: a positive number, not {value!r}")
            out[name] = want(value)
        return cls(**out)
