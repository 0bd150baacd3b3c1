"""Two runs of an agent, side by side: where they first part ways, which tool calls differ, and
what the second cost beyond the first. A pure function of two `query.session_detail` results,
for `tapewire diff A B` and `GET /api/diff`.

The main-thread turns are paired by position. Two turns agree when every new input message has
the same node id or, where the ids differ (a different parent chain), the same content, and
their responses have the same content. Tool call ids are compared by position, not by value:
each session's call ids are numbered in the order its main thread first mentions them, so two
real runs, whose provider hands out fresh ids, still compare equal where they did the same.

The tool calls of the whole session (main thread and subagents, in time order) are aligned
with `difflib.SequenceMatcher` on (name, canonical JSON of the arguments).

A fork (`tapewire fork`) is compared with its parent from the fork point: `a_from`/`b_from`
name the turn each side starts at, the turns before it are left out of the pairing, the tool
calls and the totals, and the first pair's inputs are compared less the messages the other
side's left-out turns already carried (the fork's first request resends them all).
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DETAIL_CHARS", "RESULT_CHARS", "diff_sessions"]

DETAIL_CHARS = 200  # each side's text in a divergence's `detail`
RESULT_CHARS = 500  # a tool call's result as the diff shows it

_CALL_PARTS = ("tool_call", "tool_result")


def diff_sessions(
    a: Mapping[str, Any], b: Mapping[str, Any], *, a_from: int = 1, b_from: int = 1
) -> dict[str, Any]:
    """How run `b` differs from run `a` (each a `session_detail` result), each compared from
    its turn `a_from`/`b_from` on (1-based among all its turns; for a fork and its parent, the
    fork's first turn and the parent's turn it was forked at).

    Returns, keys in this order:
    - `a`, `b`: each session's `id`, `title`, `harness`, `turns`, `started_at`;
    - `aligned_from` (only when a side starts past its first turn): `{"a": a_from, "b": b_from}`;
    - `identical`: no divergence and no tool call differences;
    - `first_divergence`: null, or `turn` (1-based position among the main-thread turns,
      counted from the start of the session compared from a later turn),
      `a_exchange`, `b_exchange` (null on the side that has no such turn), `a_turn`, `b_turn`
      (that turn's 1-based position among all its session's turns, as tool calls give it, or
      null), `reason` (`input`, `output`, `missing_in_a`, `missing_in_b`) and `detail`;
    - `tool_calls`: `added` (only in b), `removed` (only in a), `arguments_differ` and
      `results_differ` (`{"a": call, "b": call}` pairs); each call is `id`, `name`,
      `arguments`, `result` (at most RESULT_CHARS), `is_error`, `turn` (1-based among the
      session's turns) and `exchange_id`;
    - `deltas`, b minus a: `turns`, `tool_calls`, `tool_errors`, `input_tokens`,
      `output_tokens`, `cost_usd`, `duration_s` (null where either side's figure is); when a
      side starts past its first turn, of the compared turns only.
    """
    side_a, side_b = _Side(a, a_from), _Side(b, b_from)
    divergence = _first_divergence(side_a, side_b)
    calls = _diff_calls(side_a, side_b)
    out: dict[str, Any] = {"a": side_a.summary(), "b": side_b.summary()}
    if side_a.partial or side_b.partial:
        out["aligned_from"] = {"a": side_a.start, "b": side_b.start}
    out.update({
        "identical": divergence is None and not any(calls.values()),
        "first_divergence": divergence,
        "tool_calls": calls,
        "deltas": _deltas(side_a, side_b),
    })  # fmt: skip
    return out


# --------------------------------------------------------------------------- one session


class _Side:
    """One session_detail result, with what the comparison asks of it precomputed."""

    def __init__(self, detail: Mapping[str, Any], start: int = 1) -> None:
        self.session: Mapping[str, Any] = detail.get("session") or {}
        self.turns: list[Mapping[str, Any]] = list(detail.get("turns") or [])
        self.position = {id(t): i for i, t in enumerate(self.turns, 1)}
        self.start = max(1, start)
        self.partial = self.start > 1
        skipped, self.compared = self.turns[: self.start - 1], self.turns[self.start - 1 :]
        self.main = [t for t in self.compared if t.get("kind") == "main"]
        self.skipped_main = sum(1 for t in skipped if t.get("kind") == "main")
        # What the left-out turns carried: the other side's first compared turn resends it.
        self.skipped_nodes: set[Any] = {t.get("response_node") for t in skipped} - {None}
        for turn in skipped:
            self.skipped_nodes.update(m.get("node") for m in turn.get("input") or [])
        self.names: dict[str, str] = {}  # call id -> tool name
        self.calls: list[_Call] = []
        for pos, turn in enumerate(self.turns, 1):
            for call in turn.get("tool_calls") or []:
                if pos >= self.start:
                    self.calls.append(_Call(call, pos, turn.get("exchange_id")))
                if isinstance(call.get("id"), str) and isinstance(call.get("name"), str):
                    self.names.setdefault(call["id"], call["name"])
        # Call ids numbered in the order the main thread first mentions them (from its first
        # turn, left out or not: a fork's first request mentions its parent's calls in order).
        self.ordinals: dict[str, str] = {}
        for turn in (t for t in self.turns if t.get("kind") == "main"):
            for message in turn.get("input") or []:
                self._number_calls(message.get("parts"))
            self._number_calls(turn.get("output"))

    def _number_calls(self, parts: Any) -> None:
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            call_id = part.get("id")
            if part.get("type") in _CALL_PARTS and isinstance(call_id, str):
                self.ordinals.setdefault(call_id, f"call#{len(self.ordinals) + 1}")
                if part.get("type") == "tool_call" and isinstance(part.get("name"), str):
                    self.names.setdefault(call_id, part["name"])
            self._number_calls(part.get("content"))

    def normal(self, value: Any) -> Any:
        """Parts with call ids replaced by their ordinals, for comparing content across runs."""
        if isinstance(value, list):
            return [self.normal(v) for v in value]
        if isinstance(value, dict):
            out = {k: self.normal(v) if k == "content" else v for k, v in value.items()}
            call_id = value.get("id")
            if value.get("type") in _CALL_PARTS and isinstance(call_id, str):
                out["id"] = self.ordinals.get(call_id, call_id)
            return out
        return value

    def content_key(self, parts: Any) -> str:
        return _canonical(self.normal(parts))

    def turn_number(self, turn: Mapping[str, Any] | None) -> int | None:
        return None if turn is None else self.position.get(id(turn))

    def tool_name(self, call_id: Any) -> str | None:
        return self.names.get(call_id) if isinstance(call_id, str) else None

    def summary(self) -> dict[str, Any]:
        s = self.session
        turns = s.get("turns")
        return {
            "id": s.get("id"),
            "title": s.get("title"),
            "harness": s.get("harness"),
            "turns": turns if _number(turns) is not None else len(self.turns),
            "started_at": s.get("started_at"),
        }


class _Call:
    """One tool call of a session, with its place in it."""

    def __init__(self, call: Mapping[str, Any], turn: int, exchange: Any) -> None:
        self.raw = call
        self.key = (str(call.get("name")), _canonical(call.get("arguments")))
        self.outcome = (_canonical(call.get("result")), call.get("is_error"))
        self.turn = turn
        self.exchange = exchange

    def as_json(self) -> dict[str, Any]:
        result = self.raw.get("result")
        return {
            "id": self.raw.get("id"),
            "name": self.raw.get("name"),
            "arguments": copy.deepcopy(self.raw.get("arguments")),
            "result": _cut(result, RESULT_CHARS) if isinstance(result, str) else result,
            "is_error": self.raw.get("is_error"),
            "turn": self.turn,
            "exchange_id": self.exchange,
        }


# --------------------------------------------------------------------------- main thread


def _first_divergence(a: _Side, b: _Side) -> dict[str, Any] | None:
    skip = max(a.skipped_main, b.skipped_main)  # turns are numbered as that session has them
    for n, (ta, tb) in enumerate(zip(a.main, b.main, strict=False), 1):
        detail = _input_difference(a, b, ta, tb, first=n == 1)
        if detail is not None:
            return _divergence(a, b, n + skip, ta, tb, "input", detail)
        detail = _output_difference(a, b, ta, tb)
        if detail is not None:
            return _divergence(a, b, n + skip, ta, tb, "output", detail)
    la, lb = len(a.main), len(b.main)
    if la == lb:
        return None
    n = min(la, lb) + 1 + skip
    if la > lb:
        extra = a.main[lb]
        detail = f"b ends after {lb + skip} main-thread turns, a goes on to {la + skip}"
        return _divergence(a, b, n, extra, None, "missing_in_b", detail)
    extra = b.main[la]
    detail = f"a ends after {la + skip} main-thread turns, b goes on to {lb + skip}"
    return _divergence(a, b, n, None, extra, "missing_in_a", detail)


def _divergence(
    a: _Side,
    b: _Side,
    n: int,
    ta: Mapping[str, Any] | None,
    tb: Mapping[str, Any] | None,
    reason: str,
    detail: str,
) -> dict[str, Any]:
    return {
        "turn": n,
        "a_exchange": ta.get("exchange_id") if ta is not None else None,
        "b_exchange": tb.get("exchange_id") if tb is not None else None,
        "a_turn": a.turn_number(ta),
        "b_turn": b.turn_number(tb),
        "reason": reason,
        "detail": detail,
    }


def _same_message(a: _Side, b: _Side, ma: Mapping[str, Any], mb: Mapping[str, Any]) -> bool:
    if ma.get("node") is not None and ma.get("node") == mb.get("node"):
        return True
    return ma.get("role") == mb.get("role") and a.content_key(ma.get("parts")) == b.content_key(
        mb.get("parts")
    )


def _input_difference(
    a: _Side, b: _Side, ta: Mapping[str, Any], tb: Mapping[str, Any], *, first: bool = False
) -> str | None:
    ia: list[Mapping[str, Any]] = list(ta.get("input") or [])
    ib: list[Mapping[str, Any]] = list(tb.get("input") or [])
    if first:  # less what the other side's left-out turns already carried
        ia, ib = _past(ia, b.skipped_nodes), _past(ib, a.skipped_nodes)
    for k in range(max(len(ia), len(ib))):
        if k >= len(ia):
            return f"b sends one more {ib[k].get('role')} message: " + _quote_parts(b, ib[k])
        if k >= len(ib):
            return f"a sends one more {ia[k].get('role')} message: " + _quote_parts(a, ia[k])
        ma, mb = ia[k], ib[k]
        if _same_message(a, b, ma, mb):
            continue
        if ma.get("role") != mb.get("role"):
            return (
                f"new message {k + 1} is {ma.get('role')} in a, {mb.get('role')} in b — "
                f"a: {_quote_parts(a, ma)}; b: {_quote_parts(b, mb)}"
            )
        return _parts_difference(a, b, ma.get("parts"), mb.get("parts"), "input")
    return None


def _past(messages: list[Mapping[str, Any]], known: set[Any]) -> list[Mapping[str, Any]]:
    """`messages` after their leading run of `known` nodes."""
    k = 0
    while k < len(messages) and messages[k].get("node") in known:
        k += 1
    return messages[k:]


def _output_difference(
    a: _Side, b: _Side, ta: Mapping[str, Any], tb: Mapping[str, Any]
) -> str | None:
    node = ta.get("response_node")
    if node is not None and node == tb.get("response_node"):
        return None
    oa, ob = ta.get("output") or [], tb.get("output") or []
    if a.content_key(oa) == b.content_key(ob):
        return None
    for label, turn, other_side, other in (("a", ta, b, ob), ("b", tb, a, oa)):
        if not (oa if label == "a" else ob) and turn.get("error"):
            answered = _describe(other_side, other[0]) if other else "nothing"
            return (
                f"{label} has no response ({_short(str(turn.get('error')))}); the other: "
                + _quote(answered)
            )
    return _parts_difference(a, b, oa, ob, "output")


def _parts_difference(a: _Side, b: _Side, pa: Any, pb: Any, what: str) -> str:
    pa = pa if isinstance(pa, list) else []
    pb = pb if isinstance(pb, list) else []
    for j in range(max(len(pa), len(pb))):
        xa = pa[j] if j < len(pa) else None
        xb = pb[j] if j < len(pb) else None
        if xa is not None and xb is not None and a.content_key([xa]) == b.content_key([xb]):
            continue
        if xa is None or xb is None:
            only, side, part = ("b", b, xb) if xa is None else ("a", a, xa)
            return f"{what}: only {only} has " + _quote(_describe(side, part))
        ta, tb = xa.get("type"), xb.get("type")
        if ta == tb == "tool_result":
            return _result_difference(a, b, xa, xb)
        if ta == tb == "tool_call":
            na, nb = xa.get("name"), xb.get("name")
            if na != nb:
                return (
                    f"a calls {na} ({xa.get('id')}), b calls {nb} ({xb.get('id')}) — "
                    f"a: {_quote(_canonical(xa.get('arguments')))}; "
                    f"b: {_quote(_canonical(xb.get('arguments')))}"
                )
            return (
                f"arguments of the {na} call {_ids(xa.get('id'), xb.get('id'))} differ — "
                f"a: {_quote(_canonical(xa.get('arguments')))}; "
                f"b: {_quote(_canonical(xb.get('arguments')))}"
            )
        if ta == tb and ta in ("text", "thinking", "refusal"):
            return (
                f"{what} {ta} differs — a: {_quote(str(xa.get('text') or ''))}; "
                f"b: {_quote(str(xb.get('text') or ''))}"
            )
        return f"{what} differs — a: {_quote(_describe(a, xa))}; b: {_quote(_describe(b, xb))}"
    return f"{what} differs"


def _result_difference(a: _Side, b: _Side, xa: Mapping[str, Any], xb: Mapping[str, Any]) -> str:
    name = a.tool_name(xa.get("id")) or b.tool_name(xb.get("id")) or "tool"
    label = f"result of the {name} call {_ids(xa.get('id'), xb.get('id'))}"
    text_a, text_b = _result_text(xa), _result_text(xb)
    if text_a == text_b and xa.get("is_error") != xb.get("is_error"):
        return f"{label}: is_error {xa.get('is_error')} in a, {xb.get('is_error')} in b"
    flags = ""
    if xa.get("is_error") != xb.get("is_error"):
        flags = f" (is_error {xa.get('is_error')} in a, {xb.get('is_error')} in b)"
    return f"{label} differs{flags} — a: {_quote(text_a)}; b: {_quote(text_b)}"


# --------------------------------------------------------------------------- tool calls


def _diff_calls(a: _Side, b: _Side) -> dict[str, list[Any]]:
    added: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    arguments: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    matcher = difflib.SequenceMatcher(
        None, [c.key for c in a.calls], [c.key for c in b.calls], autojunk=False
    )
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        ca, cb = a.calls[i1:i2], b.calls[j1:j2]
        if op == "equal":
            results += [
                {"a": x.as_json(), "b": y.as_json()}
                for x, y in zip(ca, cb, strict=True)
                if x.outcome != y.outcome
            ]
            continue
        # No call of a replaced stretch equals one across: pair those of the same name.
        names = difflib.SequenceMatcher(
            None, [c.key[0] for c in ca], [c.key[0] for c in cb], autojunk=False
        )
        for op2, k1, k2, m1, m2 in names.get_opcodes():
            if op2 == "equal":
                arguments += [
                    {"a": x.as_json(), "b": y.as_json()}
                    for x, y in zip(ca[k1:k2], cb[m1:m2], strict=True)
                ]
            else:
                removed += [x.as_json() for x in ca[k1:k2]]
                added += [y.as_json() for y in cb[m1:m2]]
    return {
        "added": added,
        "removed": removed,
        "arguments_differ": arguments,
        "results_differ": results,
    }


# --------------------------------------------------------------------------- totals


def _deltas(a: _Side, b: _Side) -> dict[str, int | float | None]:
    partial = a.partial or b.partial  # then both sides' figures are of the compared turns

    def figure(side: _Side, key: str) -> int | float | None:
        if partial:
            return _turns_figure(side, key)
        value = _number(side.session.get(key))
        if value is not None:
            return value
        if key == "turns":  # countable from the turns where the summary lacks it
            return len(side.turns)
        if key == "tool_calls":
            return len(side.calls)
        if key == "tool_errors":
            return sum(1 for c in side.calls if c.raw.get("is_error") is True)
        return None

    def duration(side: _Side) -> float | None:
        if partial:
            return _turns_duration(side)
        start, end = _number(side.session.get("started_at")), _number(side.session.get("ended_at"))
        return None if start is None or end is None else end - start

    out: dict[str, int | float | None] = {}
    for key in ("turns", "tool_calls", "tool_errors", "input_tokens", "output_tokens"):
        out[key] = _minus(figure(a, key), figure(b, key))
    out["cost_usd"] = _minus(figure(a, "cost_usd"), figure(b, "cost_usd"), 9)
    out["duration_s"] = _minus(duration(a), duration(b), 3)
    return out


def _turns_figure(side: _Side, key: str) -> int | float | None:
    """A total of the compared turns alone."""
    if key == "turns":
        return len(side.compared)
    if key == "tool_calls":
        return len(side.calls)
    if key == "tool_errors":
        return sum(1 for c in side.calls if c.raw.get("is_error") is True)
    total: int | float = 0
    for turn in side.compared:
        usage = turn.get("usage") or {}
        value = _number(turn.get("cost_usd") if key == "cost_usd" else usage.get(key))
        if value is None and key == "cost_usd":
            return None  # unknown beats wrong
        total += value or 0
    return total


def _turns_duration(side: _Side) -> float | None:
    """From the first compared turn's start to the last one's end, seconds."""
    starts = [_number(t.get("started_at")) for t in side.compared]
    ends = [
        (start or 0) + (_number(t.get("duration_ms")) or 0) / 1000
        for start, t in zip(starts, side.compared, strict=True)
    ]
    if not starts or any(s is None for s in starts):
        return None
    return max(ends) - min(s for s in starts if s is not None)


def _minus(
    x: int | float | None, y: int | float | None, digits: int | None = None
) -> int | float | None:
    if x is None or y is None:
        return None
    d = y - x
    return round(d, digits) if digits is not None and isinstance(d, float) else d


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


# --------------------------------------------------------------------------- text


def _canonical(value: Any) -> str:
    """Key order, spacing and escaping fixed: equal JSON values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(text: str) -> str:
    """One line of at most DETAIL_CHARS."""
    return _cut(" ".join(text.split()), DETAIL_CHARS)


def _quote(text: str) -> str:
    return '"' + _short(text) + '"'


def _ids(id_a: Any, id_b: Any) -> str:
    return str(id_a) if id_a == id_b else f"{id_a} (b: {id_b})"


def _result_text(part: Mapping[str, Any]) -> str:
    """A tool_result part's text, as `query` gives a call's result."""
    if isinstance(part.get("text"), str):
        return str(part["text"])
    pieces = []
    for p in part.get("content") or []:
        if not isinstance(p, dict):
            continue
        if p.get("text") is not None:
            pieces.append(str(p["text"]))
        elif p.get("type") == "image":
            pieces.append("[image]")
    return "\n".join(pieces)


def _describe(side: _Side, part: Any) -> str:
    if not isinstance(part, dict):
        return _canonical(part)
    kind = part.get("type")
    if kind == "tool_result":
        name = side.tool_name(part.get("id")) or "tool"
        return f"result of {name} ({part.get('id')}): {_result_text(part)}"
    if kind == "tool_call":
        return f"{part.get('name')} ({part.get('id')}) {_canonical(part.get('arguments'))}"
    if isinstance(part.get("text"), str):
        return f"{kind}: {part['text']}"
    return _canonical(part)


def _quote_parts(side: _Side, message: Mapping[str, Any]) -> str:
    parts: Sequence[Any] = message.get("parts") or []
    return _quote(" | ".join(_describe(side, p) for p in parts) or "(empty)")
