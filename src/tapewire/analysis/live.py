"""Findings as turns arrive: after each batch it derives, the ingester analyses the sessions
the batch touched (their own record; comparisons with the rest of the store are made when
someone asks) and stores what it found, which the sessions list and the timeline show."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from tapewire import query
from tapewire.analysis import Thresholds, analyze, build
from tapewire.config import ConfigError
from tapewire.store import Store

log = logging.getLogger("tapewire.analysis")


def thresholds() -> Thresholds:
    """The config file's thresholds; a broken config file costs the defaults, not ingestion."""
    try:
        return Thresholds.load()
    except ConfigError as e:
        log.warning("analysis: %s; using the default thresholds", e)
        return Thresholds()


DIGESTS_KEPT = 200_000  # result digests remembered between analyses (~30 MB at most)


def refresh(
    store: Store, sessions: Iterable[str], limits: Thresholds, digests: dict[str, str]
) -> int:
    """Analyse these sessions and store their findings; returns how many were found.
    `digests` carries the results' digests from one analysis to the next."""
    if len(digests) > DIGESTS_KEPT:
        digests.clear()
    found = 0
    for session in sorted(sessions):
        findings = analyze(build(query.analysis_input(store, session, digests)), limits)
        store.replace_findings(session, [f.as_json() for f in findings])
        found += len(findings)
    return found
