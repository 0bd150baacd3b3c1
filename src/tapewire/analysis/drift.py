"""Drift between runs of the same task: how far apart their tool-call sequences are (edit
distance over (tool, canonical arguments) steps), which step the runs split at, and which run
left the group's usual path (its medoid: the run closest to all the others)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from tapewire.analysis.anomalies import totals
from tapewire.analysis.record import Record
from tapewire.analysis.thresholds import Thresholds

Step = tuple[str, str]


def steps(record: Record) -> list[Step]:
    """The run's path: its tool calls in time order, side calls left out."""
    return [c.call_key for t in record.turns if t.kind != "side" for c in t.calls]


def edit_distance(a: Sequence[Step], b: Sequence[Step]) -> int:
    """Levenshtein distance between two paths (insert, delete, substitute a step)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def _split(a: Sequence[Step], b: Sequence[Step]) -> int | None:
    """The 1-based step at which two paths first differ (None: the same path)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False), 1):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b)) + 1


def drift(runs: Sequence[Record], limits: Thresholds | None = None) -> dict[str, Any]:
    """How far two or more runs of one task drifted apart. Returns, keys in this order:
    `runs` (per run, in the order given: `session`, `title`, `steps`, `distance` to the usual
    path and `normalized` by the longer path, `split_step` against it, `drifted`, `turns`,
    `tool_calls`, `cost_usd`, `final_answer_same`, `final_answer_similarity`), `usual` (the
    medoid's session), `split_step` (where any run first leaves the usual path), `distances`
    (the matrix), `drifted` (the sessions off the path by more than `drift_ratio`), and
    `explanation`, a line a person reads."""
    if len(runs) < 2:
        raise ValueError("drift compares two or more runs")
    limits = limits or Thresholds()
    paths = [steps(r) for r in runs]
    matrix = [[edit_distance(a, b) for b in paths] for a in paths]
    usual = min(range(len(runs)), key=lambda i: (sum(matrix[i]), i))
    base = paths[usual]
    rows: list[dict[str, Any]] = []
    for i, (record, path) in enumerate(zip(runs, paths, strict=True)):
        longest = max(len(path), len(base), 1)
        normalized = matrix[i][usual] / longest
        t = totals(record)
        similarity = difflib.SequenceMatcher(
            None, record.final_answer or "", runs[usual].final_answer or ""
        ).ratio()
        rows.append({
            "session": record.session,
            "title": record.title,
            "steps": len(path),
            "distance": matrix[i][usual],
            "normalized": round(normalized, 3),
            "split_step": _split(base, path),
            "drifted": normalized > limits.drift_ratio,
            "turns": t.turns,
            "tool_calls": t.tool_calls,
            "cost_usd": t.cost_usd,
            "final_answer_same": (record.final_answer or "") == (runs[usual].final_answer or ""),
            "final_answer_similarity": round(similarity, 3),
        })  # fmt: skip
    splits: list[int] = [r["split_step"] for r in rows if r["split_step"] is not None]
    drifted = [r for r in rows if r["drifted"]]
    if not splits:
        explanation = f"the {len(runs)} runs took the same path ({len(base)} tool calls)"
    else:
        first = min(splits)
        who = drifted or [r for r in rows if r["split_step"] == first]
        step = base[first - 1] if first <= len(base) else None
        at = f"step {first}" + (f" ({step[0]})" if step else " (past the usual path's end)")
        explanation = f"the runs split at {at}; " + ", ".join(
            f"{r['session'][:8]} left the usual path at step {r['split_step']} "
            f"({r['distance']} of {max(r['steps'], len(base))} steps differ)"
            for r in who
        )
    return {
        "runs": rows,
        "usual": runs[usual].session,
        "split_step": min(splits) if splits else None,
        "distances": matrix,
        "drifted": [r["session"] for r in drifted],
        "threshold": limits.drift_ratio,
        "explanation": explanation,
    }
