"""A session as the detectors see it: its turns in timeline order, each with its tool calls,
the calls' arguments in canonical JSON and their results as digests, so that "the same call
with the same result" is a comparison of strings. Built from `query.analysis_input`."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class Call:
    id: str
    name: str
    args: str  # the arguments as canonical JSON (`canonical`)
    result: str | None  # sha256 of the result's text (`digest`); None until answered
    is_error: bool
    turn: int  # the turn that asked for it
    thread: str | None
    asked_at: float | None
    answered_at: float | None

    @property
    def call_key(self) -> tuple[str, str]:
        return self.name, self.args

    def short_args(self, width: int = 80) -> str:
        return self.args if len(self.args) <= width else self.args[: width - 1] + "…"


@dataclass(frozen=True)
class TurnView:
    index: int  # 1-based, in the session's timeline
    exchange: str
    thread: str | None
    kind: str  # main | subagent | side
    model: str | None
    started_at: float
    duration_ms: float | None
    status: int | None
    outcome: str | None
    stop_reason: str | None
    error: str | None
    request_node: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    calls: tuple[Call, ...]

    @property
    def failed(self) -> bool:
        """An error answer or a failed exchange. The agent hanging up is not a failure: SDKs
        close a stream at its last event, sometimes before the upstream's end of body."""
        if self.status is not None and self.status >= 400:
            return True
        return self.error is not None and self.outcome != "client_disconnect"


@dataclass(frozen=True)
class Record:
    session: str
    harness: str
    name: str | None
    title: str | None
    turns: tuple[TurnView, ...]
    final_answer: str | None = None  # the main thread's last text answer

    def threads(self) -> Iterator[tuple[str | None, list[TurnView]]]:
        """The conversation's threads (main, subagents), each in time order; side calls
        (titles, probes) are outside the conversation and left out."""
        by: dict[str | None, list[TurnView]] = {}
        for t in self.turns:
            if t.kind != "side":
                by.setdefault(t.thread, []).append(t)
        yield from by.items()

    @property
    def calls(self) -> list[Call]:
        return [c for t in self.turns for c in t.calls]


def canonical(value: Any) -> str:
    """One spelling of a JSON value: keys sorted, no spaces. (Compared only with itself, so
    orjson's sorted form serves: RFC 8785 in pure Python costs ten times as much.)"""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):  # integers past 64 bits
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def build(data: Mapping[str, Any]) -> Record:
    """`query.analysis_input`'s plain data as a Record."""
    turns = []
    calls_by_exchange: dict[str, list[Mapping[str, Any]]] = {}
    for c in data["calls"]:
        calls_by_exchange.setdefault(c["call_exchange"], []).append(c)
    for index, t in enumerate(data["turns"], 1):
        calls = tuple(
            Call(
                id=str(c["id"]),
                name=str(c["name"] or "?"),
                args=canonical(c["arguments"]),
                result=c["result_digest"],
                is_error=bool(c["is_error"]),
                turn=index,
                thread=c["thread"],
                asked_at=_number(c["asked_at"]),
                answered_at=_number(c["answered_at"]),
            )
            for c in calls_by_exchange.get(t["exchange"], [])
        )
        turns.append(
            TurnView(
                index=index,
                exchange=t["exchange"],
                thread=t["thread"],
                kind=t["kind"],
                model=t["response_model"] or t["model"],
                started_at=float(t["started_at"]),
                duration_ms=_number(t["duration_ms"]),
                status=t["status"],
                outcome=t["outcome"],
                stop_reason=t["stop_reason"],
                error=t["error"],
                request_node=t["request_node"],
                input_tokens=t["input_tokens"],
                output_tokens=t["output_tokens"],
                cost_usd=_number(t["cost_usd"]),
                calls=calls,
            )
        )
    s = data["session"]
    return Record(
        s["id"], s["harness"], s.get("name"), s.get("title"), tuple(turns),
        data.get("final_answer"),
    )  # fmt: skip
