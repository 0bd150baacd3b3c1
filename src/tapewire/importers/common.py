"""What both importers share: reading JSONL that may be damaged, the import's report, and
turning the model calls a transcript implies into raw exchanges the deriver reads like any
other (docs/import.md)."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from tapewire.derive import Deriver
from tapewire.model import Evidence, Exchange, ExchangeEnd, Headers, Outcome
from tapewire.store import Batch, Store

_NAMESPACE = uuid.UUID("0b5e7c52-3f0e-4d7a-9a61-6c2f1d8e4b90")  # the importers', fixed forever

RUN = "import"


def import_id(*parts: str) -> str:
    """A deterministic exchange id: importing the same file again names the same exchanges."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(("import", *parts))))


def timestamp(value: Any) -> float | None:
    """An ISO 8601 time (`2026-07-27T21:32:31.123Z`) as Unix seconds; None when it is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class Report:
    """What an import did, for the summary line and `--json`."""

    files: int = 0
    records: int = 0
    sessions_new: int = 0
    sessions_enriched: int = 0  # a wire capture of the same session existed
    sessions_unchanged: int = 0  # imported before: nothing new
    synthesized: int = 0  # exchanges written from transcript records
    skipped: int = 0  # exchanges already in the store (imported before)
    on_wire: int = 0  # model calls the wire capture already holds
    malformed: list[str] = field(default_factory=list)  # "file:line: reason"
    unknown: Counter[str] = field(default_factory=Counter)  # record type -> count
    errors: list[str] = field(default_factory=list)  # files that could not be read

    def as_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["unknown"] = dict(sorted(self.unknown.items()))
        return data


@dataclass
class Line:
    number: int  # 1-based
    record: dict[str, Any]


def read_jsonl(path: Path, report: Report) -> list[Line]:
    """The file's JSON objects with their line numbers. A line that is not one is reported as
    `file:line: reason` and skipped; a file with no readable line at all is reported once."""
    try:
        data = path.read_bytes()
    except OSError as e:
        report.errors.append(f"{path}: {e.strerror or e}")
        return []
    lines: list[Line] = []
    bad: list[str] = []
    for number, text in enumerate(data.split(b"\n"), 1):
        raw = text.strip()
        if not raw:
            continue
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            bad.append(f"{path}:{number}: not JSON ({str(e).partition(':')[0]})")
            continue
        if not isinstance(record, dict):
            bad.append(f"{path}:{number}: a JSON {type(record).__name__}, not an object")
            continue
        lines.append(Line(number, record))
    if bad and not lines:
        report.malformed.append(f"{path}: not a JSONL file ({len(bad)} unreadable lines)")
    else:
        report.malformed.extend(bad)
    report.records += len(lines)
    return lines


def jsonl_files(paths: list[Path], pattern: str = "*.jsonl") -> Iterator[Path]:
    """Each named file, and the JSONL files under each named directory, in name order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob(pattern) if p.is_file())
        else:
            yield path


@dataclass
class Call:
    """One model call a transcript implies: the request the conversation made at that point
    and the response it got, as the provider would have sent them unstreamed."""

    id: str
    provider: str  # anthropic | openai
    path: str
    headers: Headers
    evidence: Evidence
    request: dict[str, Any]
    response: dict[str, Any]
    started_at: float
    first_byte_at: float
    last_byte_at: float

    @property
    def order(self) -> tuple[float, str]:
        return (self.last_byte_at, self.id)


_UPSTREAM_URL = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com",
}


def write_calls(store: Store, calls: list[Call], recorder: str, report: Report) -> list[str]:
    """Store the calls not stored yet as raw exchanges (one transaction); their ids, in the
    order they ended, for the deriver."""
    existing = store.existing_exchanges([c.id for c in calls])
    batch = Batch()
    new = sorted((c for c in calls if c.id not in existing), key=lambda c: c.order)
    report.skipped += len(calls) - len(new)
    for c in new:
        body = orjson.dumps(c.request)
        answer = orjson.dumps(c.response)
        batch.begins.append(
            Exchange(
                id=c.id,
                run_id=RUN,
                started_at=c.started_at,
                method="POST",
                path=c.path,
                upstream=c.provider,
                upstream_url=_UPSTREAM_URL[c.provider] + c.path,
                provider=c.provider,
                request_headers=c.headers,
                request_body=body,
                request_size=len(body),
                evidence=c.evidence,
                recorder=recorder,
                request_end_at=c.started_at,
                request_sha256=hashlib.sha256(body).hexdigest(),
            )
        )
        batch.ends.append(
            ExchangeEnd(
                id=c.id,
                status=200,
                response_headers=[("content-type", "application/json")],
                response_body=answer,
                response_truncated=False,
                response_size=len(answer),
                upstream_headers_at=c.first_byte_at,
                first_byte_at=c.first_byte_at,
                last_byte_at=c.last_byte_at,
                outcome=Outcome.COMPLETE,
                error=None,
                response_sha256=hashlib.sha256(answer).hexdigest(),
            )
        )
    if new:
        store.write(batch)
    report.synthesized += len(new)
    return [c.id for c in new]


def derive(deriver: Deriver, ids: list[str]) -> None:
    if ids:
        deriver.derive_ids(ids)


def now() -> float:
    return time.time()
