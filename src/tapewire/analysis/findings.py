"""What analysis reports: findings, each with a kind, a severity, a one-line explanation a
person understands, the evidence (numbers, turns) and an id that is the same every time the
same record is analysed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("info", "warning", "error")


def rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass(frozen=True)
class Finding:
    session: str
    kind: str  # repeated_call, call_cycle, retry, no_progress, unfinished, truncated, …
    severity: str  # info | warning | error
    title: str  # one line, for a person
    turns: tuple[int, ...] = ()  # 1-based turn indices in the session's timeline
    evidence: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # what makes it this finding and not another of its kind in the session

    @property
    def id(self) -> str:
        raw = json.dumps([self.session, self.kind, self.key], separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session": self.session,
            "kind": self.kind,
            "severity": self.severity,
            "title": self.title,
            "turns": list(self.turns),
            "evidence": self.evidence,
        }


def ordered(findings: list[Finding]) -> list[Finding]:
    """Most severe first, then by the first turn they point at, then by id: a stable order."""
    return sorted(findings, key=lambda f: (-rank(f.severity), f.turns[:1] or (0,), f.kind, f.id))
