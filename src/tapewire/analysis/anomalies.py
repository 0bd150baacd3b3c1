"""Anomalies in cost and size, by robust statistics (median and MAD, so that the outliers being
looked for do not hide themselves by moving the mean): a turn far off its session's own trend,
and a session far off the others of its harness and model."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence

from tapewire.analysis.findings import Finding
from tapewire.analysis.history import History, Totals
from tapewire.analysis.record import Record, TurnView
from tapewire.analysis.thresholds import Thresholds

_MAD_SCALE = 1.4826  # MAD of a normal distribution, as a standard deviation
_MEAN_AD_SCALE = 1.2533  # mean absolute deviation, likewise (when over half the values agree)

_UNITS = {"output_tokens": "output", "cost_usd": "cost", "duration_ms": "latency",
          "context_growth": "context growth"}  # fmt: skip


def spread(values: Sequence[float]) -> tuple[float, float] | None:
    """(median, robust standard deviation) of the values, or None when they do not spread."""
    med = statistics.median(values)
    scale = _MAD_SCALE * statistics.median(abs(v - med) for v in values)
    if scale == 0:
        scale = _MEAN_AD_SCALE * statistics.fmean(abs(v - med) for v in values)
    return None if scale == 0 else (med, scale)


def _show(metric: str, v: float) -> str:
    if metric == "cost_usd":
        return f"${v:.4f}"
    if metric == "duration_ms":
        return f"{v / 1000:.1f} s"
    return f"{v:,.0f} tokens"


def _series(turns: list[TurnView]) -> dict[str, list[tuple[TurnView, float]]]:
    """Each metric's values by turn. A thread's first turn is left out of cost and context
    growth: it writes the prompt cache, and costs several times what the turns reading it do."""
    series: dict[str, list[tuple[TurnView, float]]] = {k: [] for k in _UNITS}
    previous: dict[str | None, int] = {}
    for t in turns:
        if t.failed:
            continue
        first = t.thread not in previous
        for metric in (
            ("output_tokens", "duration_ms")
            if first
            else ("output_tokens", "cost_usd", "duration_ms")
        ):
            v = getattr(t, metric)
            if v is not None:
                series[metric].append((t, float(v)))
        if t.input_tokens is not None:
            if not first:
                series["context_growth"].append((t, float(t.input_tokens - previous[t.thread])))
            previous[t.thread] = t.input_tokens
    return series


def turn_anomalies(record: Record, limits: Thresholds) -> list[Finding]:
    """A turn whose output tokens, cost, latency or context growth is `anomaly_z` robust
    z-scores and `anomaly_ratio` times above the session's median of it."""
    turns = [t for t in record.turns if t.kind != "side"]
    off: dict[int, list[dict[str, float | str]]] = {}
    for metric, points in _series(turns).items():
        if len(points) < limits.anomaly_min_turns:
            continue
        stats = spread([v for _, v in points])
        if stats is None:
            continue
        med, scale = stats
        for t, v in points:
            z = (v - med) / scale
            if (
                z >= limits.anomaly_z
                and v >= limits.anomaly_ratio * max(med, 1e-9)
                # Milliseconds against milliseconds say how busy the machine was, not the
                # provider: a fake or a cache answering in 1 ms, then in 8.
                and (metric != "duration_ms" or v - med >= limits.anomaly_latency_s * 1000)
            ):
                off.setdefault(t.index, []).append(
                    {"metric": metric, "value": v, "median": med, "z": round(z, 1)}
                )
    by_index = {t.index: t for t in turns}
    out = []
    for index, metrics in sorted(off.items()):
        said = "; ".join(
            f"{_UNITS[str(m['metric'])]} {_show(str(m['metric']), float(m['value']))}, "
            f"{float(m['value']) / max(float(m['median']), 1e-9):.0f}x the session's median "
            f"({_show(str(m['metric']), float(m['median']))})"
            for m in metrics
        )
        out.append(Finding(
            session=record.session,
            kind="turn_anomaly",
            severity="warning",
            title=f"turn {index} is far off the session's trend: {said}",
            turns=(index,),
            evidence={"metrics": metrics, "z_threshold": limits.anomaly_z,
                      "ratio_threshold": limits.anomaly_ratio, "model": by_index[index].model},
            key=by_index[index].exchange,
        ))  # fmt: skip
    return out


def totals(record: Record) -> Totals:
    turns = [t for t in record.turns]
    costs = [t.cost_usd for t in turns if t.input_tokens is not None]
    start = min((t.started_at for t in turns), default=0.0)
    end = max((t.started_at + (t.duration_ms or 0) / 1000 for t in turns), default=start)
    return Totals(
        session=record.session,
        turns=len(turns),
        tool_calls=len(record.calls),
        output_tokens=sum(t.output_tokens or 0 for t in turns),
        cost_usd=None if any(c is None for c in costs) else round(sum(c or 0 for c in costs), 9),
        duration_s=round(end - start, 3),
    )


def main_model(record: Record) -> str:
    models = Counter(t.model for t in record.turns if t.kind == "main" and t.model)
    return models.most_common(1)[0][0] if models else ""


def peer_anomalies(record: Record, limits: Thresholds, history: History) -> list[Finding]:
    """The session's cost, output, tool calls or turns `history_ratio` times the median of
    the other sessions of its harness and main model (and `anomaly_z` robust z-scores off)."""
    model = main_model(record)
    peers = [
        p for p in history.peers.get((record.harness, model), []) if p.session != record.session
    ]
    if len(peers) < limits.history_min_sessions:
        return []
    mine = totals(record)
    out = []
    for metric in ("cost_usd", "output_tokens", "tool_calls", "turns"):
        x = getattr(mine, metric)
        values = [float(getattr(p, metric)) for p in peers if getattr(p, metric) is not None]
        if x is None or len(values) < limits.history_min_sessions:
            continue
        stats = spread(values)
        if stats is None:
            continue
        med, z = stats[0], (float(x) - stats[0]) / stats[1]
        if z < limits.anomaly_z or x < limits.history_ratio * max(med, 1e-9):
            continue
        shown = f"${x:.4f}" if metric == "cost_usd" else f"{x:,}"
        out.append(Finding(
            session=record.session,
            kind="session_anomaly",
            severity="warning",
            title=f"{metric.replace('_usd', '').replace('_', ' ')} {shown} is "
                  f"{x / max(med, 1e-9):.0f}x the median of {len(values)} other "
                  f"{record.harness} sessions on {model or 'this model'}",
            evidence={"metric": metric, "value": x, "median": med, "z": round(z, 1),
                      "peers": len(values), "harness": record.harness, "model": model,
                      "ratio_threshold": limits.history_ratio},
            key=metric,
        ))  # fmt: skip
    return out
