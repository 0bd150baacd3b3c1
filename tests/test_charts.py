"""The session page's SVG charts: well-formed, proportional, linked to turns, and inert whatever
the recorded content says."""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapewire.web.charts import Chart, session_charts

NS = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert(1)</script>" onload="x'


def turn(index: int, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "index": index, "started_at": 1_700_000_000.0 + 10 * index, "duration_ms": 1000.0,
        "ttfb_ms": 250.0, "kind": "main", "status": 200, "error": None, "cost_usd": 0.01,
        "usage": {"input_tokens": 1000, "output_tokens": 100, "cache_read_tokens": 600,
                  "cache_write_tokens": 100, "reasoning_tokens": None},
        "tool_calls": [],
    }  # fmt: skip
    usage = over.pop("usage", {})
    base.update(over)
    base["usage"] = {**base["usage"], **usage}
    return base


def call(name: str | None, *, is_error: bool = False, answered: bool = True) -> dict[str, Any]:
    return {"id": "c", "name": name, "is_error": is_error, "answered": answered, "latency_ms": 5.0}


def charts(turns: list[dict[str, Any]]) -> dict[str, ET.Element]:
    """Each chart parsed as XML: a chart that is not well-formed fails here."""
    return {c.key: ET.fromstring(str(c.svg)) for c in session_charts(turns)}


def tag(el: ET.Element) -> str:
    return el.tag.removeprefix(NS)


def links(root: ET.Element) -> dict[str, ET.Element]:
    return {a.get("href", ""): a for a in root.iter(f"{NS}a")}


def rects(el: ET.Element, cls: str = "") -> list[ET.Element]:
    """The rects under `el`, those of class `cls` if given."""
    return [r for r in el.iter(f"{NS}rect") if not cls or cls in r.get("class", "").split()]


def height(r: ET.Element) -> float:
    return float(r.get("height", "nan"))


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{NS}text")]


def test_four_charts_in_order() -> None:
    out = session_charts([turn(1), turn(2)])
    assert [c.key for c in out] == ["context", "tokens", "latency", "tools"]
    assert out[0].title == "Context size per turn"
    assert all(isinstance(c, Chart) and c.svg.startswith("<svg") for c in out)


def test_context_bars_stack_and_scale() -> None:
    turns = [
        turn(1, usage={"input_tokens": 10_000, "cache_read_tokens": 6000, "cache_write_tokens": 1000}),
        turn(2, usage={"input_tokens": 20_000, "cache_read_tokens": 12_000, "cache_write_tokens": 2000}),
    ]  # fmt: skip
    root = charts(turns)["context"]
    by_turn = links(root)
    assert set(by_turn) == {"#t1", "#t2"}
    parts = {
        href: {c: height(rects(a, c)[0]) for c in ("cache-read", "cache-write", "uncached")}
        for href, a in by_turn.items()
    }
    one, two = sum(parts["#t1"].values()), sum(parts["#t2"].values())
    assert two == pytest.approx(2 * one, abs=0.15)
    # the parts tile the bar: each sits on the one below, in proportion to its tokens
    assert parts["#t1"]["cache-read"] / one == pytest.approx(0.6, abs=0.01)
    assert parts["#t1"]["uncached"] / one == pytest.approx(0.3, abs=0.01)
    stack = sorted(rects(by_turn["#t2"]), key=lambda r: float(r.get("y", "0")))
    assert len(stack) == 3
    for upper, lower in itertools.pairwise(stack):
        assert float(upper.get("y", "0")) + height(upper) == pytest.approx(
            float(lower.get("y", "0"))
        )


def test_context_uncached_never_negative_and_tooltip() -> None:
    root = charts(
        [turn(3, usage={"input_tokens": 50, "cache_read_tokens": 900, "cache_write_tokens": None})]
    )["context"]
    a = links(root)["#t3"]
    assert [r.get("class") for r in rects(a)] == ["cache-read"]
    assert all(height(r) > 0 for r in rects(a))
    tip = a.findtext(f"{NS}title") or ""
    assert tip == "turn 3 · 900 tokens (cache read 900, cache write 0, uncached 0)"


def test_every_mark_links_to_its_turn_by_integer() -> None:
    turns = [turn(i, tool_calls=[call("Read")]) for i in (4, 5, 9)]
    for root in charts(turns).values():
        hrefs = [a.get("href", "") for a in root.iter(f"{NS}a")]
        assert hrefs
        assert all(re.fullmatch(r"#t\d+", h) for h in hrefs)
        assert {h for h in hrefs} <= {"#t4", "#t5", "#t9"}
        for a in root.iter(f"{NS}a"):
            assert a.find(f"{NS}title") is not None


def test_hostile_text_stays_text() -> None:
    turns = [
        turn(1, kind=HOSTILE, error=HOSTILE, status=500,
             tool_calls=[call(HOSTILE), call("javascript:alert(1)")]),
        turn(2, tool_calls=[call(HOSTILE + "\x00\x1b[31m")]),
    ]  # fmt: skip
    for chart in session_charts(turns):
        assert "<script" not in chart.svg
        root = ET.fromstring(str(chart.svg))
        for el in root.iter():
            assert tag(el) not in {"script", "style", "foreignObject"}
            assert not any(name.lower().startswith("on") for name in el.attrib)
            assert "style" not in el.attrib
            assert not el.get("href", "#").lower().startswith("javascript")
    tools = charts(turns)["tools"]
    # the name is shown as the text it is (clipped beside its row, whole in the tooltips)
    tips = [t.text or "" for t in tools.iter(f"{NS}title")]
    assert any(HOSTILE in tip for tip in tips)


def test_no_inline_styles_anywhere() -> None:
    turns = [turn(i, tool_calls=[call("Bash", is_error=i == 2), call("Read", answered=i != 3)],
                  status=529 if i == 2 else 200) for i in range(1, 5)]  # fmt: skip
    for chart in session_charts(turns):
        assert "style" not in chart.svg
        root = ET.fromstring(str(chart.svg))
        assert root.get("viewBox", "").startswith("0 0 720 ")
        assert root.get("preserveAspectRatio") == "xMinYMin meet"


@pytest.mark.parametrize(
    "turns",
    [
        [],
        [{}],
        [None],
        [{"index": 1, "usage": None, "tool_calls": None, "started_at": None, "cost_usd": None,
          "duration_ms": None, "ttfb_ms": None, "status": None, "error": None}],
        [turn(1, usage={k: None for k in ("input_tokens", "output_tokens", "cache_read_tokens",
                                          "cache_write_tokens")},
              cost_usd=None, duration_ms=None, tool_calls=[])],
        [turn(1, usage={"input_tokens": math.nan, "output_tokens": math.inf, "cache_read_tokens":
                        -math.inf, "cache_write_tokens": math.nan},
              cost_usd=math.nan, duration_ms=math.inf, tool_calls=[call("Read")],
              started_at=math.nan)],
    ],
    ids=["empty", "blank-turn", "none-turn", "all-none", "usage-none", "nan-inf"],
)  # fmt: skip
def test_nothing_known_says_no_data(turns: list[Any]) -> None:
    for key, root in charts(turns).items():
        assert texts(root) == ["no data"], key
        assert root.find(f".//{NS}a") is None


def test_nan_and_inf_are_missing_not_drawn() -> None:
    turns = [turn(1), turn(2, usage={"output_tokens": math.nan}, duration_ms=math.inf), turn(3)]
    out = session_charts(turns)
    for chart in out:
        assert not re.search(r"nan|inf", chart.svg, re.IGNORECASE)
    parsed = charts(turns)
    assert set(links(parsed["tokens"])) == {"#t1", "#t3"}
    assert set(links(parsed["latency"])) == {"#t1", "#t3"}


def test_all_zero_values_render() -> None:
    turns = [turn(i, usage={"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0,
                            "cache_write_tokens": 0}, duration_ms=0.0, ttfb_ms=0.0, cost_usd=0.0,
                  started_at=5.0, tool_calls=[call("Read")]) for i in (1, 2)]  # fmt: skip
    for root in charts(turns).values():
        assert "no data" not in texts(root)
        for r in root.iter(f"{NS}rect"):
            assert math.isfinite(float(r.get("height", "0")))


def test_single_turn() -> None:
    parsed = charts([turn(1, tool_calls=[call("Read")])])
    for key in ("context", "tokens", "latency"):
        assert set(links(parsed[key])) == {"#t1"}
    assert len(list(parsed["tokens"].iter(f"{NS}polyline"))) == 1
    assert set(links(parsed["tools"])) == {"#t1"}


def test_cost_line_and_unknown_costs() -> None:
    turns = [turn(1, cost_usd=0.25), turn(2, cost_usd=None), turn(3, cost_usd=0.5)]
    root = charts(turns)["tokens"]
    (line,) = root.iter(f"{NS}polyline")
    ys = [float(p.split(",")[1]) for p in (line.get("points") or "").split()]
    assert len(ys) == 4  # $0 at the start, then one point per turn
    assert ys[1] == ys[2]  # an unknown cost leaves the running total where it was
    assert (ys[0] - ys[1]) * 3 == pytest.approx(ys[0] - ys[3], abs=0.15)  # $0.25 of $0.75
    assert "(cost unknown for 1 turn)" in texts(root)
    assert any(t.startswith("$") for t in texts(root))


def test_no_cost_line_when_no_cost_is_known() -> None:
    root = charts([turn(1, cost_usd=None), turn(2, cost_usd=None)])["tokens"]
    assert list(root.iter(f"{NS}polyline")) == []
    assert "(cost unknown for 2 turns)" in texts(root)
    assert len(links(root)) == 2


def test_latency_ttfb_inside_and_errors_marked() -> None:
    turns = [turn(1, duration_ms=1000.0, ttfb_ms=250.0), turn(2, duration_ms=2000.0, status=500),
             turn(3, duration_ms=None, error="connection reset"), turn(4, duration_ms=500.0,
             ttfb_ms=9000.0)]  # fmt: skip
    by_turn = links(charts(turns)["latency"])
    bar1, bar2 = rects(by_turn["#t1"], "bar")[0], rects(by_turn["#t2"], "bar")[0]
    assert height(bar2) == pytest.approx(2 * height(bar1), abs=0.15)
    assert height(rects(by_turn["#t1"], "ttfb")[0]) == pytest.approx(height(bar1) / 4, abs=0.15)
    assert "err" not in bar1.get("class", "")
    assert "err" in bar2.get("class", "").split()
    stub = rects(by_turn["#t3"])
    assert stub
    assert all("err" in r.get("class", "").split() for r in stub)
    # a first byte later than the whole reply is clipped to the bar
    assert height(rects(by_turn["#t4"], "ttfb")[0]) <= height(rects(by_turn["#t4"], "bar")[0])


def test_tool_rows_most_called_first_and_capped() -> None:
    names = [f"tool{i:02d}" for i in range(15)]
    turns = [turn(1, tool_calls=[call(n) for n in names] + [call("tool14")] * 3)]
    root = charts(turns)["tools"]
    # a row's label carries the tool's full name as its tooltip
    rows = [
        t.findtext(f"{NS}title") for t in root.iter(f"{NS}text") if t.find(f"{NS}title") is not None
    ]
    assert len(rows) == 12
    assert rows[0] == "tool14"
    assert rows[1:3] == ["tool00", "tool01"]
    assert rows[-1] == "other"


def test_tool_marks_error_and_open() -> None:
    turns = [turn(1, tool_calls=[call("Bash", is_error=True)]),
             turn(2, started_at=1_700_010_000.0, tool_calls=[call("Bash", answered=False)]),
             turn(3, started_at=1_700_020_000.0, tool_calls=[call("Bash")])]  # fmt: skip
    by_turn = links(charts(turns)["tools"])
    assert "err" in by_turn["#t1"][1].get("class", "").split()
    assert "open" in by_turn["#t2"][1].get("class", "").split()
    assert by_turn["#t3"][1].get("class") == "mark"


def test_many_turns_stay_small_and_thin_their_labels() -> None:
    tools = ["Read", "Bash", "Edit", "Grep", HOSTILE]
    turns = [
        turn(i, usage={"input_tokens": 1000 + 150 * i, "cache_read_tokens": 100 * i},
             tool_calls=[call(tools[i % 5]), call(tools[(i * 7) % 5]), call("Read")],
             started_at=1_700_000_000.0 + 7.5 * i, error="boom" if i % 50 == 0 else None)
        for i in range(1, 601)
    ]  # fmt: skip
    out = session_charts(turns)
    for chart in out:
        assert len(chart.svg.encode()) < 250_000, chart.key
    parsed = {c.key: ET.fromstring(str(c.svg)) for c in out}
    assert len(links(parsed["context"])) == 600
    numbers = [t for t in texts(parsed["context"]) if t.isdigit()]
    assert 5 <= len(numbers) <= 30


def test_calls_too_close_to_tell_apart_share_a_mark() -> None:
    burst = [turn(i, started_at=1000.0 + i / 100, tool_calls=[call("Read")]) for i in range(1, 51)]
    root = charts([*burst, turn(51, started_at=5000.0, tool_calls=[call("Read")])])["tools"]
    by_turn = links(root)
    assert set(by_turn) == {"#t1", "#t51"}
    assert by_turn["#t1"].findtext(f"{NS}title") == "turns 1-50 · Read (50 calls)"


# Anything a recording could hold, in any field: the charts never raise and stay well-formed.
_ANY = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
)  # fmt: skip
_CALL = st.fixed_dictionaries(
    {"name": _ANY, "is_error": _ANY, "answered": _ANY, "latency_ms": _ANY}
)
_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
_TURN = st.fixed_dictionaries(
    {
        "index": _ANY, "started_at": _ANY, "duration_ms": _ANY, "ttfb_ms": _ANY, "kind": _ANY,
        "status": _ANY, "error": _ANY, "cost_usd": _ANY,
        "usage": st.one_of(st.none(), st.fixed_dictionaries({k: _ANY for k in _USAGE_KEYS})),
        "tool_calls": st.one_of(st.none(), st.lists(_CALL, max_size=4)),
    }
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(_TURN, max_size=8))
def test_any_recorded_values_render(turns: list[dict[str, Any]]) -> None:
    for chart in session_charts(turns):
        root = ET.fromstring(str(chart.svg))
        assert "style" not in chart.svg
        assert all(re.fullmatch(r"#t-?\d+", a.get("href", "")) for a in root.iter(f"{NS}a"))
