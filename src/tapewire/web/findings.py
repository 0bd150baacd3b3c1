"""Findings for the read side: the sessions' analysis against the rest of the store, whose
summary (`query.analysis_history`, an aggregate over every session) is kept for a minute
rather than computed for every page."""

from __future__ import annotations

import threading
import time
from typing import Any

from tapewire import query
from tapewire.analysis import History
from tapewire.analysis.live import thresholds
from tapewire.store import Store

HISTORY_TTL = 60.0

_lock = threading.Lock()
_cache: dict[str, tuple[float, History]] = {}
_limits = thresholds()


def _history(store: Store) -> History:
    key = str(store.location)  # one per database: every PostgreSQL store has its own
    with _lock:
        cached = _cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < HISTORY_TTL:
            return cached[1]
    history = query.analysis_history(store)
    with _lock:
        _cache[key] = (time.monotonic(), history)
    return history


def findings_of(store: Store, sessions: list[str]) -> dict[str, list[dict[str, Any]]]:
    return query.findings(store, sessions, _limits, _history(store))
