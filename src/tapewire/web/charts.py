"""Server-side SVG charts of a session's turns for the web UI's session page: no JavaScript, no
chart library, nothing fetched. Recorded content is hostile (DESIGN.md, invariant 6): every piece
of text goes through `_el`, which escapes it, and every link is built from an integer.

No inline styles (the page's Content-Security-Policy forbids them): default `fill`/`stroke`
presentation attributes keep a chart legible without a stylesheet, and any CSS rule overrides
them. Classes, for the stylesheet:

- on the <svg>: `chart` and one of `chart-context`, `chart-tokens`, `chart-latency`, `chart-tools`
- furniture: `axis` (axis lines), `grid` (gridlines), `label` (every text), `subtitle` (a note
  at the top right), `empty` (the "no data" text), `legend` (the swatch group)
- context: `cache-read`, `cache-write`, `uncached` (the stacked parts of a turn's input)
- tokens: `bar` (output tokens), `line` (cumulative cost), `cost` (its axis labels)
- latency: `bar` (duration), `ttfb` (the time to first byte inside it), `err` (a failed turn)
- tools: `row` (one tool's marks), `mark` (its calls in one turn), `err` (a call that errored),
  `open` (a call never answered)

Each mark sits in `<a href="#tN">` with a `<title>` tooltip.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import accumulate
from typing import Any

from markupsafe import Markup, escape

from tapewire import figures

__all__ = ["Chart", "session_charts"]

WIDTH = 720  # the coordinate width; the page scales the whole chart, text included
HEIGHT = 180
EMPTY_HEIGHT = 40
LEFT, RIGHT, TOP, BOTTOM = 48, 52, 22, 20  # room for both y axes, the legend and the x labels
TOOL_LEFT, TOOL_RIGHT = 132, 16  # room for tool names
MAX_BAR = 40  # a bar's widest, when there are few turns
ROW = 16  # one tool's row
MAX_TOOL_ROWS = 12
NAME_CHARS = 20  # of a tool name beside its row; the full name is in its tooltip
TIP_CHARS = 120  # of an error message in a tooltip
# Past any real token count, cost, duration or unix time: a corrupt value, kept off the scale
# so a tick's arithmetic cannot overflow.
MAX_VALUE = 1e15
MARK_W = 4.0  # calls closer than this share a mark: bounds the output however many calls

SVG_NS = "http://www.w3.org/2000/svg"
MUTED, AXIS, GRID = "#555", "#888", "#e4e4e4"
CACHE_READ, CACHE_WRITE, UNCACHED = "#9ecae1", "#fdae6b", "#3182bd"
BAR, TTFB, LINE, MARK = "#7d9fd3", "#2b4c7e", "#e6550d", "#4a7ab5"
ERR, ERR_DARK = "#e8908d", "#a94442"

# Characters XML 1.0 cannot carry even escaped: a tool name with one would break the document.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class Chart:
    key: str  # "context", "tokens", "latency", "tools"
    title: str
    svg: Markup  # safe to drop into a Jinja2 template as-is


def session_charts(turns: Sequence[Mapping[str, Any]]) -> list[Chart]:
    """The session page's four charts, from `query.session_detail(...)["turns"]`."""
    rows = [t if isinstance(t, Mapping) else {} for t in turns or ()]
    return [_context_chart(rows), _tokens_chart(rows), _latency_chart(rows), _tools_chart(rows)]


# --- building SVG safely ---


def _el(tag: str, attrs: Mapping[str, object] | None = None, *children: str) -> Markup:
    """One element. Attribute names come from this module only; attribute values and plain-str
    children are escaped, Markup children (elements built here) are kept."""
    head = tag + "".join(f' {k}="{_attr(v)}"' for k, v in (attrs or {}).items() if v is not None)
    if not children:
        return Markup(f"<{head}/>")
    inner = "".join(c if isinstance(c, Markup) else _text(c) for c in children)
    return Markup(f"<{head}>{inner}</{tag}>")


def _text(s: str) -> str:
    return str(escape(_NOT_XML.sub("\ufffd", s)))


def _attr(v: object) -> str:
    return _fmt(v) if isinstance(v, float) else _text(str(v))


def _fmt(v: float) -> str:
    """A coordinate to 0.1 unit: finer is invisible and would only swell the page."""
    s = f"{v:.1f}".removesuffix(".0")
    return "0" if s == "-0" else s


def _link(index: int, tip: str, *marks: Markup) -> Markup:
    # `index` is an int: the href can hold nothing recorded.
    return _el("a", {"href": f"#t{int(index)}"}, _el("title", None, tip), *marks)


def _rect(cls: str, fill: str, x: float, y: float, w: float, h: float) -> Markup:
    return _el("rect", {"class": cls, "x": x, "y": y, "width": w, "height": h, "fill": fill})


def _label(x: float, y: float, text: str, anchor: str = "middle", cls: str = "label") -> Markup:
    return _el("text", {"class": cls, "x": x, "y": y, "text-anchor": anchor, "fill": MUTED}, text)


def _svg(key: str, title: str, height: float, body: Iterable[Markup]) -> Chart:
    attrs = {
        "xmlns": SVG_NS, "class": f"chart chart-{key}", "viewBox": f"0 0 {WIDTH} {_fmt(height)}",
        "width": "100%", "preserveAspectRatio": "xMinYMin meet", "role": "img",
        "aria-label": title, "font-family": "sans-serif", "font-size": 10,
    }  # fmt: skip
    return Chart(key, title, _el("svg", attrs, *body))


def _empty(key: str, title: str) -> Chart:
    text = _label(WIDTH / 2, EMPTY_HEIGHT / 2 + 4, "no data", cls="label empty")
    return _svg(key, title, EMPTY_HEIGHT, [text])


# --- reading turns: anything may be missing, NaN, infinite or of the wrong type ---


def _amount(v: object) -> float | None:
    """A finite, non-negative, believable number, else None."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:  # an int too big for a float
        return None
    return f if 0 <= f <= MAX_VALUE else None  # also False for NaN


def _usage(turn: Mapping[str, Any], key: str) -> float | None:
    usage = turn.get("usage")
    return _amount(usage.get(key)) if isinstance(usage, Mapping) else None


def _index(turn: Mapping[str, Any], position: int) -> int:
    i = turn.get("index")
    return i if isinstance(i, int) and not isinstance(i, bool) else position + 1


def _who(turn: Mapping[str, Any], position: int) -> str:
    """'turn 5', or 'turn 5 (subagent)' off the main thread."""
    kind = turn.get("kind")
    aside = f" ({_clip(kind, 20)})" if isinstance(kind, str) and kind and kind != "main" else ""
    return f"turn {_index(turn, position)}{aside}"


def _failed(turn: Mapping[str, Any]) -> bool:
    status = _amount(turn.get("status"))
    return (status is not None and status >= 400) or bool(turn.get("error"))


def _calls(turn: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    calls = turn.get("tool_calls")
    return [c for c in calls if isinstance(c, Mapping)] if isinstance(calls, list) else []


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- figures in short forms ---


def _trim(s: str) -> str:
    return s.removesuffix(".0")


def _count(v: float) -> str:
    """1.2k, 3.4M: the unit grows before the number reaches 1000."""
    for size, unit in ((1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "G")):
        if abs(v) / size < 999.95 or unit == "G":
            return _trim(f"{v / size:.1f}") + unit
    raise AssertionError("unreachable")


def _money(v: float) -> str:
    """Enough digits to tell gridlines apart: a cheap model's turns cost fractions of a cent."""
    if v >= 100:
        return f"${v:,.0f}"
    if v == 0:
        return "$0"
    digits = max(2, 1 - math.floor(math.log10(abs(v))) + 1)
    return "$" + f"{v:.{digits}f}".rstrip("0").rstrip(".")


def _ms(v: float) -> str:
    if v == 0:
        return "0"
    if v < 1000:
        return f"{v:.0f}ms"
    if v < 60_000:
        return _trim(f"{v / 1000:.1f}") + "s"
    return _trim(f"{v / 60_000:.1f}") + "m"


def _clock(seconds: float) -> str:
    """Time since the session started: 45s, 2m30s, 1h05m."""
    if seconds < 60:
        return _trim(f"{seconds:.1f}") + "s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


# --- geometry ---


@dataclass(frozen=True)
class _Frame:
    """The plot area in SVG units, and the value its top edge stands for."""

    left: float
    top: float
    width: float
    height: float
    top_value: float

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def y(self, value: float) -> float:
        return self.bottom - self.height * value / self.top_value


def _bar_frame(top_value: float) -> _Frame:
    # The three bar charts share one frame so a turn sits at the same x in each.
    return _Frame(LEFT, TOP, WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM, top_value)


def _nice(x: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least x (> 0)."""
    power = 10.0 ** math.floor(math.log10(x))
    return next(power * m for m in (1, 2, 5, 10) if power * m >= x * (1 - 1e-9))


def _ticks(top: float, min_step: float = 0.0, count: int = 4) -> list[float]:
    """Round gridline values from 0 to at least `top`; the last is the frame's top value, never
    0, so nothing divides by zero."""
    top = top if top > 1e-9 else 1.0  # a zero (or next to it) still gets a scale
    step = max(_nice(top / count), min_step)
    return [step * i for i in range(max(1, math.ceil(top / step - 1e-9)) + 1)]


# Steps a reader counts time in; beyond them, whole hours in 1-2-5 steps.
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


def _time_ticks(span: float, count: int = 6) -> list[float]:
    want = span / count
    step = next((s for s in _TIME_STEPS if s >= want), None) or _nice(want / 3600) * 3600
    return [step * i for i in range(math.floor(span / step + 1e-9) + 1)]


def _slot(frame: _Frame, position: int, count: int) -> tuple[float, float]:
    """(x, width) of the bar for the turn at `position`, centred in its band: a gap between
    wide bars, none once they are thin (500 turns) so they stay visible, and no slab for a
    session of one or two turns."""
    band = frame.width / count
    width = min(band * 0.8 if band >= 4 else band, MAX_BAR)
    return frame.left + position * band + (band - width) / 2, width


def _stack(
    frame: _Frame, x: float, w: float, parts: Sequence[tuple[str, str, float]]
) -> list[Markup]:
    """Rects piled from the baseline, one per non-zero (class, fill, value). Edges are rounded
    before heights are taken, so the parts tile the bar exactly."""
    out: list[Markup] = []
    base = 0.0
    for cls, fill, value in parts:
        if value > 0:
            lower, upper = round(frame.y(base), 1), round(frame.y(base + value), 1)
            out.append(_rect(cls, fill, x, upper, w, lower - upper))
        base += value
    return out


# --- furniture ---


def _y_axis(
    frame: _Frame, ticks: Sequence[float], fmt: Callable[[float], str], *, right: bool = False
) -> list[Markup]:
    """Labels at each tick; the left axis also draws the gridlines (one set is enough)."""
    out: list[Markup] = []
    x_end = frame.left + frame.width
    for t in ticks:
        y = frame.y(t)
        if right:
            out.append(_label(x_end + 4, y + 3, fmt(t), "start", "label cost"))
        else:
            grid = {
                "class": "grid",
                "x1": frame.left,
                "x2": x_end,
                "y1": y,
                "y2": y,
                "stroke": GRID,
            }
            out += [_el("line", grid), _label(frame.left - 4, y + 3, fmt(t), "end")]
    return out


def _baseline(frame: _Frame) -> Markup:
    y = frame.bottom
    return _el("line", {"class": "axis", "x1": frame.left, "x2": frame.left + frame.width,
                        "y1": y, "y2": y, "stroke": AXIS})  # fmt: skip


def _turn_labels(frame: _Frame, indexes: Sequence[int]) -> list[Markup]:
    """Turn numbers under the bars: every one when they fit, else every k-th (k = 2, 5, 10…)."""
    every = max(1, round(_nice(len(indexes) / (frame.width / 28))))
    out: list[Markup] = []
    for position, index in enumerate(indexes):
        if index % every == 0 or every == 1:
            x, w = _slot(frame, position, len(indexes))
            out.append(_label(x + w / 2, frame.bottom + 12, str(index)))
    return out


def _legend(items: Sequence[tuple[str, str, str]], x: float = LEFT) -> Markup:
    """Swatches along the top margin: (class, fill, label); class `line` draws a stroke."""
    out: list[Markup] = []
    for cls, fill, text in items:
        if cls == "line":
            out.append(_el("line", {"class": cls, "x1": x, "x2": x + 10, "y1": 10, "y2": 10,
                                    "stroke": fill, "stroke-width": 2}))  # fmt: skip
        else:
            swatch = {"class": cls, "x": x, "y": 5, "width": 9, "height": 9, "fill": fill}
            out.append(_el("rect", {**swatch, "stroke": MARK if "open" in cls else None}))
        out.append(_label(x + 13, 13, text, "start"))
        x += 13 + 5.2 * len(text) + 14  # a rough text width: no font metrics here
    return _el("g", {"class": "legend"}, *out)


def _subtitle(text: str) -> Markup:
    return _label(WIDTH - 4, 13, text, "end", "label subtitle")


# --- the charts ---


def _context_chart(turns: Sequence[Mapping[str, Any]]) -> Chart:
    key, title = "context", "Context size per turn"
    stacks = [_context_parts(t) for t in turns]
    if not any(stacks):
        return _empty(key, title)
    ticks = _ticks(max(sum(s) for s in stacks if s), min_step=1)
    frame = _bar_frame(ticks[-1])
    body = _y_axis(frame, ticks, _count)
    for position, (turn, parts) in enumerate(zip(turns, stacks, strict=True)):
        if parts:
            x, w = _slot(frame, position, len(turns))
            read, write, uncached = parts
            rects = _stack(frame, x, w, [("cache-read", CACHE_READ, read),
                                         ("cache-write", CACHE_WRITE, write),
                                         ("uncached", UNCACHED, uncached)])  # fmt: skip
            tip = (f"{_who(turn, position)} · {_count(sum(parts))} tokens (cache read "
                   f"{_count(read)}, cache write {_count(write)}, uncached {_count(uncached)})")  # fmt: skip
            if rects:
                body.append(_link(_index(turn, position), tip, *rects))
    body += [_baseline(frame), *_turn_labels(frame, _indexes(turns))]
    legend = [("cache-read", CACHE_READ, "cache read"), ("cache-write", CACHE_WRITE, "cache write"),
              ("uncached", UNCACHED, "uncached")]  # fmt: skip
    return _svg(key, title, HEIGHT, [*body, _legend(legend)])


def _context_parts(turn: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """(cache read, cache write, uncached) input tokens, or None when the turn reports none."""
    total, read, write = (_usage(turn, k) for k in
                          ("input_tokens", "cache_read_tokens", "cache_write_tokens"))  # fmt: skip
    if total is None and read is None and write is None:
        return None
    read, write = read or 0.0, write or 0.0
    return read, write, max((total or 0.0) - read - write, 0.0)


def _indexes(turns: Sequence[Mapping[str, Any]]) -> list[int]:
    return [_index(t, p) for p, t in enumerate(turns)]


def _tokens_chart(turns: Sequence[Mapping[str, Any]]) -> Chart:
    key, title = "tokens", "Output tokens and cost per turn"
    outputs = [_usage(t, "output_tokens") for t in turns]
    costs = [_amount(t.get("cost_usd")) for t in turns]
    if all(o is None for o in outputs) and all(c is None for c in costs):
        return _empty(key, title)
    ticks = _ticks(max((o for o in outputs if o is not None), default=0.0), min_step=1)
    frame = _bar_frame(ticks[-1])
    totals = list(accumulate(c or 0.0 for c in costs))  # an unknown cost adds nothing
    body = _y_axis(frame, ticks, _count)
    for position, (turn, out) in enumerate(zip(turns, outputs, strict=True)):
        if out is not None:
            x, w = _slot(frame, position, len(turns))
            tip = _tokens_tip(turn, position, out, costs[position], totals[position])
            bar = _stack(frame, x, w, [("bar", BAR, out)])
            if bar:  # a zero has nothing to click
                body.append(_link(_index(turn, position), tip, *bar))
    body += [_baseline(frame), *_turn_labels(frame, _indexes(turns))]
    legend = [("bar", BAR, "output tokens")]
    if any(c is not None for c in costs):
        body += _cost_line(frame, totals)
        legend.append(("line", LINE, "cumulative cost"))
    unknown = sum(c is None for c in costs)
    if unknown:
        body.append(_subtitle(f"(cost unknown for {unknown} turn{'s' * (unknown != 1)})"))
    return _svg(key, title, HEIGHT, [*body, _legend(legend)])


def _tokens_tip(
    turn: Mapping[str, Any], position: int, out: float, cost: float | None, total: float
) -> str:
    reasoning = _usage(turn, "reasoning_tokens")
    thought = f" (reasoning {_count(reasoning)})" if reasoning else ""
    spent = (
        "cost unknown" if cost is None else f"{figures.cost(cost)} (total {figures.cost(total)})"
    )
    return f"{_who(turn, position)} · {_count(out)} output tokens{thought} · {spent}"


def _cost_line(frame: _Frame, totals: Sequence[float]) -> list[Markup]:
    """The running cost on its own right-hand scale, from $0 at the left edge so that even a
    single turn draws a line."""
    ticks = _ticks(totals[-1])
    money = replace(frame, top_value=ticks[-1])
    points = [(frame.left, frame.bottom)]
    for position, total in enumerate(totals):
        x, w = _slot(frame, position, len(totals))
        points.append((x + w / 2, money.y(total)))
    line = _el("polyline", {"class": "line", "points": " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in points),
                            "fill": "none", "stroke": LINE, "stroke-width": 1.5})  # fmt: skip
    return [*_y_axis(money, ticks, _money, right=True), line]


def _latency_chart(turns: Sequence[Mapping[str, Any]]) -> Chart:
    key, title = "latency", "Latency per turn"
    durations = [_amount(t.get("duration_ms")) for t in turns]
    failed = [_failed(t) for t in turns]
    if all(d is None for d in durations) and not any(failed):
        return _empty(key, title)
    ticks = _ticks(max((d for d in durations if d is not None), default=0.0), min_step=1)
    frame = _bar_frame(ticks[-1])
    body = _y_axis(frame, ticks, _ms)
    for position, turn in enumerate(turns):
        marks = _latency_marks(frame, position, len(turns), durations[position], turn)
        if marks:
            body.append(_link(_index(turn, position), _latency_tip(turn, position), *marks))
    body += [_baseline(frame), *_turn_labels(frame, _indexes(turns))]
    legend = [
        ("bar", BAR, "duration"),
        ("ttfb", TTFB, "time to first byte"),
        ("err", ERR, "failed"),
    ]
    return _svg(key, title, HEIGHT, [*body, _legend(legend)])


def _latency_marks(
    frame: _Frame, position: int, count: int, duration: float | None, turn: Mapping[str, Any]
) -> list[Markup]:
    """The duration bar with the first-byte part over its foot. A failed turn with no duration
    still gets a stub, so the failure shows."""
    x, w = _slot(frame, position, count)
    failed = _failed(turn)
    err = " err" if failed else ""
    if duration is None:
        return [_rect("bar err", ERR, x, frame.bottom - 4, w, 4)] if failed else []
    ttfb = min(_amount(turn.get("ttfb_ms")) or 0.0, duration)
    marks = _stack(frame, x, w, [("bar" + err, ERR if failed else BAR, duration)])
    return marks + _stack(frame, x, w, [("ttfb" + err, ERR_DARK if failed else TTFB, ttfb)])


def _latency_tip(turn: Mapping[str, Any], position: int) -> str:
    duration, ttfb = _amount(turn.get("duration_ms")), _amount(turn.get("ttfb_ms"))
    tip = f"{_who(turn, position)} · {'duration unknown' if duration is None else _ms(duration)}"
    if ttfb is not None:
        tip += f" (first byte {_ms(ttfb)})"
    status, error = _amount(turn.get("status")), turn.get("error")
    if status is not None and status >= 400:
        tip += f" · HTTP {status:.0f}"
    if error:
        tip += f" · {_clip(str(error), TIP_CHARS)}"
    return tip


# --- tool calls ---


@dataclass
class _Cell:
    """The calls of one row that land on one mark: usually one turn's calls of one tool."""

    x: float
    turns: list[int] = field(default_factory=list)
    names: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    unanswered: int = 0
    latency_ms: float | None = None


@dataclass(frozen=True)
class _Call:
    at: float  # seconds since the session started
    index: int
    name: str
    is_error: bool
    answered: bool
    latency_ms: float | None


def _tools_chart(turns: Sequence[Mapping[str, Any]]) -> Chart:
    key, title = "tools", "Tool calls over time"
    starts = [s for t in turns if (s := _amount(t.get("started_at"))) is not None]
    calls = _tool_calls(turns, min(starts, default=0.0))
    if not calls:
        return _empty(key, title)
    rows = _tool_rows(calls)
    span = max(max(starts) - min(starts), 1.0)
    frame = _Frame(TOOL_LEFT, TOP, WIDTH - TOOL_LEFT - TOOL_RIGHT, len(rows) * ROW, span)
    body = [*_time_axis(frame), _baseline(frame)]
    row_of = {name: i for i, name in enumerate(rows)}
    for i, name in enumerate(rows):
        picked = [c for c in calls if row_of.get(c.name, len(rows) - 1) == i]
        body += _tool_row(frame, i, name, picked)
    body.append(_legend([("mark", MARK, "call"), ("mark err", ERR_DARK, "error"),
                         ("mark open", "#fff", "unanswered")], TOOL_LEFT))  # fmt: skip
    skipped = sum(len(_calls(t)) for t in turns) - len(calls)
    if skipped:
        body.append(_subtitle(f"({skipped} call{'s' * (skipped != 1)} with no time)"))
    return _svg(key, title, frame.bottom + BOTTOM, body)


def _tool_calls(turns: Sequence[Mapping[str, Any]], start: float) -> list[_Call]:
    """Every call whose turn has a start time, placed at that time."""
    out: list[_Call] = []
    for position, turn in enumerate(turns):
        at = _amount(turn.get("started_at"))
        if at is None:
            continue
        for call in _calls(turn):
            name = call.get("name")
            out.append(_Call(at - start, _index(turn, position),
                             "(no name)" if name is None else str(name),
                             call.get("is_error") is True, call.get("answered") is not False,
                             _amount(call.get("latency_ms"))))  # fmt: skip
    return out


def _tool_rows(calls: Sequence[_Call]) -> list[str | None]:
    """Tool names, most called first; past MAX_TOOL_ROWS the rest share a last row (None)."""
    counts = Counter(c.name for c in calls)
    names = sorted(counts, key=lambda n: (-counts[n], n))
    if len(names) <= MAX_TOOL_ROWS:
        return list(names)
    return [*names[: MAX_TOOL_ROWS - 1], None]


def _time_axis(frame: _Frame) -> list[Markup]:
    """Vertical gridlines and labels in seconds, minutes or hours since the session started."""
    out: list[Markup] = []
    for t in _time_ticks(frame.top_value):
        x = frame.left + frame.width * t / frame.top_value
        out.append(_el("line", {"class": "grid", "x1": x, "x2": x, "y1": frame.top,
                                "y2": frame.bottom, "stroke": GRID}))  # fmt: skip
        out.append(_label(x, frame.bottom + 12, _clock(t)))
    return out


def _tool_row(frame: _Frame, row: int, name: str | None, calls: Sequence[_Call]) -> list[Markup]:
    y = frame.top + row * ROW
    text = "other" if name is None else _clip(name, NAME_CHARS)
    label = _el("text", {"class": "label", "x": frame.left - 6, "y": y + ROW / 2 + 3,
                         "text-anchor": "end", "fill": MUTED},
                _el("title", None, "other" if name is None else name), text)  # fmt: skip
    marks = [_tool_mark(cell, ROW - 4, name is None) for cell in _cells(frame, calls)]
    # Marks inherit the row's fill and offset, so each costs only its x.
    row_g = _el(
        "g", {"class": "row", "transform": f"translate(0,{_fmt(y + 2)})", "fill": MARK}, *marks
    )
    return [label, row_g]


def _cells(frame: _Frame, calls: Sequence[_Call]) -> list[_Cell]:
    """Calls gathered by the MARK_W-wide column they fall in: one mark per column."""
    cells: dict[int, _Cell] = {}
    for call in calls:
        x = frame.left + frame.width * call.at / frame.top_value
        cell = cells.setdefault(int((x - frame.left) // MARK_W), _Cell(x))
        if call.index not in cell.turns:
            cell.turns.append(call.index)
        cell.names[call.name] += 1
        cell.errors += call.is_error
        cell.unanswered += not call.answered
        cell.latency_ms = call.latency_ms
    return list(cells.values())


def _tool_mark(cell: _Cell, height: float, other: bool) -> Markup:
    cls, fill, stroke = "mark", None, None
    if cell.errors:
        cls, fill = "mark err", ERR_DARK
    if cell.unanswered:
        cls += " open"
        fill, stroke = fill or "#fff", MARK
    rect = _el("rect", {"class": cls, "x": cell.x - MARK_W / 2, "width": MARK_W, "height": height,
                        "fill": fill, "stroke": stroke})  # fmt: skip
    return _link(cell.turns[0], _tool_tip(cell, other), rect)


def _tool_tip(cell: _Cell, other: bool) -> str:
    first, last = cell.turns[0], cell.turns[-1]
    who = f"turn {first}" if first == last else f"turns {first}-{last}"
    calls = sum(cell.names.values())
    shown = sorted(cell.names, key=lambda n: -cell.names[n])
    what = ", ".join(_clip(n, 60) for n in shown[:3]) + (", …" if len(shown) > 3 else "")
    tip = f"{who} · {'other: ' if other else ''}{what}"
    notes = [f"{calls} calls" if calls > 1 else "",
             f"{cell.errors} error{'s' * (cell.errors != 1)}" if cell.errors else "",
             f"{cell.unanswered} unanswered" if cell.unanswered else "",
             _ms(cell.latency_ms) if calls == 1 and cell.latency_ms is not None else ""]  # fmt: skip
    notes = [n for n in notes if n]
    return tip + (f" ({', '.join(notes)})" if notes else "")
