"""The detectors as pure functions of a session's record, on records made by hand: each
threshold's edge, the evidence, the ids. The same detectors on sessions recorded through the
real proxy are in test_analysis.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tapewire.analysis import Thresholds, analyze, build
from tapewire.analysis.drift import drift, edit_distance
from tapewire.analysis.record import digest
from tapewire.config import ConfigError

T0 = 1_790_000_000.0


class Script:
    """A session written turn by turn: `turn(calls=[(name, args, result, is_error)], ...)`."""

    def __init__(self, session: str = "s1") -> None:
        self.session = session
        self.turns: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.final: str | None = None

    def turn(
        self,
        calls: list[tuple[str, Any, str | None, bool]] = (),  # type: ignore[assignment]
        *,
        at: float | None = None,
        thread: str = "main-thread",
        kind: str = "main",
        request: str | None = None,
        status: int = 200,
        error: str | None = None,
        stop: str | None = None,
        outcome: str = "complete",
        output: int = 100,
        input_tokens: int | None = None,
        cost: float | None = 0.001,
        duration: float = 1000.0,
    ) -> Script:
        n = len(self.turns)
        exchange = f"ex{n:04d}"
        started = at if at is not None else T0 + 10 * n
        self.turns.append({
            "exchange": exchange, "thread": thread, "kind": kind, "model": "m",
            "response_model": None, "started_at": started, "duration_ms": duration,
            "status": status, "outcome": outcome, "stop_reason": stop, "error": error,
            "request_node": request or f"node{n}", "input_tokens": input_tokens or 1000 + 50 * n,
            "output_tokens": output, "cost_usd": cost,
        })  # fmt: skip
        for i, (name, args, result, is_error) in enumerate(calls):
            self.calls.append({
                "id": f"c{n}_{i}", "thread": thread, "name": name, "arguments": args,
                "call_exchange": exchange, "asked_at": started + 1,
                "result_digest": None if result is None else digest(result),
                "is_error": is_error, "answered_at": None if result is None else started + 2,
            })  # fmt: skip
        return self

    def record(self) -> Any:
        return build({
            "session": {"id": self.session, "harness": "unknown", "name": None, "title": None},
            "turns": self.turns, "calls": self.calls, "final_answer": self.final,
        })  # fmt: skip


def kinds(script: Script, limits: Thresholds | None = None) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for f in analyze(script.record(), limits):
        out.setdefault(f.kind, []).append(f)
    return out


def test_a_clean_session_has_nothing_above_info() -> None:
    s = Script()
    s.turn([("list_dir", {"path": "."}, "a.py b.py", False)])
    s.turn([("read_file", {"path": "a.py"}, "print(1)", False)])
    s.turn([("run_tests", {}, "1 passed", False)])
    s.turn()
    assert analyze(s.record()) == []


def test_the_same_call_for_the_same_answer_three_times_is_a_loop() -> None:
    s = Script()
    for _ in range(2):
        s.turn([("read_file", {"path": "a.py", "n": 1}, "same", False)])
    s.turn()
    assert "repeated_call" not in kinds(s)
    s = Script()
    for i in range(3):
        # Argument order does not matter: canonical JSON.
        args = {"path": "a.py", "n": 1} if i % 2 else {"n": 1, "path": "a.py"}
        s.turn([("read_file", args, "same", False)])
    s.turn()
    (loop,) = kinds(s)["repeated_call"]
    assert loop.severity == "warning" and loop.turns == (1, 2, 3)
    assert loop.evidence["count"] == 3 and loop.evidence["tool"] == "read_file"
    # A different result each time is progress (a file being written, a test getting closer).
    s = Script()
    for i in range(4):
        s.turn([("read_file", {"path": "a.py"}, f"version {i}", False)])
    assert "repeated_call" not in kinds(s)
    # Twice the threshold is an error.
    s = Script()
    for _ in range(6):
        s.turn([("read_file", {"path": "a.py"}, "same", False)])
    assert kinds(s)["repeated_call"][0].severity == "error"


def test_a_cycle_of_calls_going_round() -> None:
    def cycle(rounds: int) -> Script:
        s = Script()
        s.turn([("list_dir", {}, "x", False)])
        for _ in range(rounds):
            s.turn([("run_tests", {"path": "tests"}, "1 failed", False)])
            s.turn([("edit_file", {"patch": "p"}, "ok", False)])
        s.turn()
        return s

    assert "call_cycle" not in kinds(cycle(2))
    (found,) = kinds(cycle(4))["call_cycle"]
    assert found.evidence["repeats"] == 4 and len(found.evidence["cycle"]) == 2
    assert found.turns == tuple(range(2, 10))
    assert "run_tests → edit_file" in found.title


def test_the_same_request_sent_again_is_a_retry() -> None:
    s = Script()
    s.turn(request="r1", status=529, error="overloaded", output=0, cost=None)
    s.turn(request="r1")
    s.turn(request="r2")
    (once,) = kinds(s)["retry"]
    assert once.severity == "info" and once.turns == (1, 2)
    s = Script()
    for _ in range(3):
        s.turn(request="r1", status=529, error="overloaded", output=0, cost=None)
    s.turn(request="r1")
    storm = kinds(s)["retry"][0]
    assert storm.severity == "warning" and storm.evidence == {
        "sent": 4, "failed": 3, "statuses": [529], "threshold": 3, "thread": "main-thread",
        "request_node": "r1",
    }  # fmt: skip


def test_turns_that_learn_nothing_new_and_a_run_cut_off() -> None:
    s = Script()
    s.turn([("list_dir", {"path": "."}, "a b", False)])
    s.turn([("read_file", {"path": "a"}, "A", False)])
    for call in (("list_dir", {"path": "."}, "a b"), ("read_file", {"path": "a"}, "A")) * 2:
        s.turn([(*call, False)])
    s.turn(stop="max_tokens", output=4096)
    found = kinds(s)
    assert found["no_progress"][0].turns == (3, 4, 5, 6)
    assert found["truncated"][0].turns == (7,)
    assert "unfinished" not in found  # it answered, though cut short


def test_an_agent_hanging_up_is_not_an_error() -> None:
    s = Script()
    for i in range(4):  # the SDK closed each stream at its last event
        s.turn(at=T0 + i, outcome="client_disconnect", error="client closed the connection")
    assert analyze(s.record()) == []


def test_a_thread_ending_on_unanswered_calls_is_unfinished() -> None:
    s = Script()
    s.turn([("bash", {"cmd": "make"}, None, False)])
    (found,) = kinds(s)["unfinished"]
    assert "bash" in found.title and found.turns == (1,)


def test_errors_close_in_time_are_a_burst() -> None:
    s = Script()
    s.turn([("bash", {"c": 1}, "not found", True)], at=T0)
    s.turn([("bash", {"c": 2}, "denied", True)], at=T0 + 20)
    s.turn(status=429, error="rate limited", at=T0 + 40, output=0, cost=None)
    s.turn(at=T0 + 200)
    s.turn([("bash", {"c": 3}, "not found", True)], at=T0 + 400)
    found = kinds(s)
    (burst,) = found["error_burst"]
    assert burst.evidence["by_kind"] == {"rate_limit": 1, "tool_error": 2}
    assert burst.turns == (1, 2, 3)
    assert found["tool_errors"][0].title == "bash failed 3 of 3 calls"
    assert found["tool_errors"][0].severity == "info"
    narrow = Thresholds(burst_window_s=10)
    assert "error_burst" not in kinds(s, narrow)


def test_a_turn_far_off_the_sessions_trend() -> None:
    s = Script()
    # The first turn writes the prompt cache: a high cost there is normal, not an anomaly.
    s.turn(cost=0.2)
    for i in range(10):
        s.turn(output=9000 if i == 6 else 100 + (i % 3) * 10, cost=0.05 if i == 6 else 0.002)
    (spike,) = kinds(s)["turn_anomaly"]
    assert spike.turns == (8,)
    metrics = {m["metric"] for m in spike.evidence["metrics"]}
    assert metrics == {"output_tokens", "cost_usd"}
    assert "output 9,000 tokens, 82x the session's median (110 tokens)" in spike.title
    # Too few turns for a trend: nothing said.
    short = Script()
    for i in range(4):
        short.turn(output=9000 if i == 2 else 100)
    assert "turn_anomaly" not in kinds(short)


def test_a_latency_spike_is_seconds_not_milliseconds() -> None:
    """A turn taking 40 s where the others take 2 is an anomaly; one taking 10 ms where the
    others take 1 is the machine being busy (a fake provider, a cache), and says nothing."""

    def spiked(usual_ms: float, spike_ms: float) -> Script:
        s = Script()
        for i in range(10):
            s.turn(duration=spike_ms if i == 6 else usual_ms * (1 + (i % 3) / 10))
        return s

    (slow,) = kinds(spiked(2000, 40_000))["turn_anomaly"]
    assert slow.turns == (7,) and "latency 40.0 s" in slow.title
    assert "turn_anomaly" not in kinds(spiked(1, 10))
    assert "turn_anomaly" in kinds(spiked(1, 10), Thresholds(anomaly_latency_s=0.005))


def test_ids_are_the_same_for_the_same_record() -> None:
    def make() -> Script:
        s = Script()
        for _ in range(3):
            s.turn([("read_file", {"path": "a"}, "A", False)])
        return s

    first = [f.id for f in analyze(make().record())]
    assert first and first == [f.id for f in analyze(make().record())]
    assert len(set(first)) == len(first)


def test_drift_names_the_step_and_the_run() -> None:
    path = [("list_dir", {"path": "."}), ("read_file", {"path": "setup.py"}),
            ("read_file", {"path": "src/app.py"}), ("run_tests", {"path": "tests"}),
            ("edit_file", {"patch": "fix"}), ("run_tests", {"path": "tests"})]  # fmt: skip
    other = [*path[:3], ("search_web", {"q": "pytest"}), ("read_file", {"path": "README"})]
    runs = []
    for i, steps in enumerate((path, path, other), 1):
        s = Script(f"run{i}")
        for name, args in steps:
            s.turn([(name, args, f"{name} ok", False)])
        s.final = "fixed" if i < 3 else "could not fix"
        s.turn()
        runs.append(s.record())
    report = drift(runs)
    assert report["split_step"] == 4
    assert report["drifted"] == ["run3"]
    assert report["usual"] in ("run1", "run2")
    third = report["runs"][2]
    assert third["split_step"] == 4 and third["distance"] == 3 and not third["final_answer_same"]
    assert "step 4 (run_tests)" in report["explanation"] and "run3" in report["explanation"]
    same = drift(runs[:2])
    assert same["split_step"] is None and same["drifted"] == []
    with pytest.raises(ValueError):
        drift(runs[:1])


def test_edit_distance() -> None:
    a = [("x", "1"), ("y", "2"), ("z", "3")]
    assert edit_distance(a, a) == 0
    assert edit_distance(a, a[:2]) == 1
    assert edit_distance(a, [("x", "1"), ("q", "9"), ("z", "3")]) == 1
    assert edit_distance([], a) == 3


def test_thresholds_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[analysis]\nrepeated_call = 5\nanomaly_z = 8\n")
    limits = Thresholds.load(config)
    assert limits.repeated_call == 5 and limits.anomaly_z == 8.0
    assert Thresholds.load(tmp_path / "absent.toml") == Thresholds()
    config.write_text("[analysis]\nrepeat_call = 5\n")
    with pytest.raises(ConfigError, match="unknown setting repeat_call"):
        Thresholds.load(config)
    config.write_text("[analysis]\nrepeated_call = -1\n")
    with pytest.raises(ConfigError, match="positive"):
        Thresholds.load(config)
    config.write_text("[analysis\n")
    with pytest.raises(ConfigError, match=str(config)):
        Thresholds.load(config)
