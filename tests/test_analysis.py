"""The detectors on sessions recorded through the real proxy (tests/scenarios.py: each with a
planted problem, played by the real SDKs against the scripted fake provider): every planted
problem is found, the clean run has nothing above info, findings are stored as turns arrive
and are the same after `tapewire rederive`; drift names the step and the run; the CLI's exit
codes gate; the API and the UI show the same findings."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from conftest import Databases
from tapewire.analysis import rank
from tapewire.cli import main
from tapewire.store import open_store
from tapewire.store.location import DbRef
from tapewire.web import create_app

# What each scenario plants, as the kinds that must be found (at warning or above).
PLANTED = {
    "loop": {"repeated_call"},
    "cycle": {"call_cycle"},
    "retry": {"retry"},
    "errors": {"error_burst"},
    "spike": {"turn_anomaly"},
    "stall": {"no_progress", "truncated"},
}


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def analyze_json(db: DbRef, *sessions: str) -> dict[str, list[dict[str, Any]]]:
    result = run("analyze", *sessions, "--json", "--fail-on", "never", "--db", str(db))
    assert result.exit_code == 0, result.output
    return {s["session"]: s["findings"] for s in json.loads(result.stdout)["sessions"]}


@pytest.fixture(scope="module")
def found(scenarios_db: tuple[DbRef, dict[str, str]]) -> dict[str, list[dict[str, Any]]]:
    db, ids = scenarios_db
    by_id = analyze_json(db, *ids.values())
    return {label: by_id[sid] for label, sid in ids.items()}


@pytest.mark.parametrize("label", sorted(PLANTED))
def test_every_planted_problem_is_found(label: str, found: dict[str, list[dict[str, Any]]]) -> None:
    serious = {f["kind"] for f in found[label] if rank(f["severity"]) >= rank("warning")}
    assert PLANTED[label] <= serious, found[label]
    for f in found[label]:
        assert f["title"] and f["evidence"] and len(f["id"]) == 16


def test_the_clean_run_has_nothing_above_info(found: dict[str, list[dict[str, Any]]]) -> None:
    assert [f for f in found["clean"] if f["severity"] != "info"] == []
    for label in ("drift-1", "drift-2", "drift-3"):  # ordinary runs too
        assert [f for f in found[label] if f["severity"] != "info"] == [], label


def test_the_findings_point_at_the_planted_turns(found: dict[str, list[dict[str, Any]]]) -> None:
    (loop,) = [f for f in found["loop"] if f["kind"] == "repeated_call"]
    assert loop["evidence"]["tool"] == "read_file" and loop["evidence"]["count"] == 5
    assert loop["turns"] == [1, 2, 3, 4, 5]
    (cycle,) = [f for f in found["cycle"] if f["kind"] == "call_cycle"]
    assert cycle["evidence"]["repeats"] == 4
    assert [c["tool"] for c in cycle["evidence"]["cycle"]] == ["run_tests", "edit_file"]
    (retry,) = [f for f in found["retry"] if f["kind"] == "retry"]
    assert retry["evidence"]["sent"] == 4 and retry["evidence"]["failed"] == 3
    (spike,) = [f for f in found["spike"] if f["kind"] == "turn_anomaly"]
    assert spike["turns"] == [7]
    assert {m["metric"] for m in spike["evidence"]["metrics"]} >= {"output_tokens"}
    (burst,) = [f for f in found["errors"] if f["kind"] == "error_burst"]
    assert burst["evidence"]["by_kind"]["tool_error"] == 4
    assert burst["evidence"]["by_kind"]["rate_limit"] == 1


def test_findings_are_stored_as_turns_arrive_and_survive_rederive(
    scenarios_db: tuple[DbRef, dict[str, str]], dbs: Databases
) -> None:
    db, ids = scenarios_db
    store = open_store(db, readonly=True)
    try:
        stored = {row["id"]: row for row in store.finding_rows()}
        listed = {r["id"]: r for r in store.session_rows()}
    finally:
        store.close()
    loop_kinds = {f["kind"] for f in stored.values() if f["session"] == ids["loop"]}
    assert "repeated_call" in loop_kinds
    assert listed[ids["loop"]]["findings"] >= 1 and listed[ids["loop"]]["worst"] == "warning"
    assert listed[ids["clean"]]["findings"] == 0

    copy = dbs.clone(db)
    before = analyze_json(copy, *ids.values())
    result = run("rederive", "--db", str(copy))
    assert result.exit_code == 0, result.output
    store = open_store(copy, readonly=True)
    try:
        again = {row["id"]: row for row in store.finding_rows()}
    finally:
        store.close()
    assert again == stored  # the same findings, the same ids
    assert analyze_json(copy, *ids.values()) == before


def test_the_recorded_claude_session_reports_its_errors_and_no_loop(recorded_db: DbRef) -> None:
    (findings,) = analyze_json(recorded_db).values()
    kinds = {f["kind"] for f in findings}
    assert not kinds & {"repeated_call", "call_cycle", "no_progress", "retry"}
    errors = [f for f in findings if f["kind"] == "tool_errors"]
    assert sum(f["evidence"]["errors"] for f in errors) == 5
    assert {f["evidence"]["tool"] for f in errors} == {"Bash", "Read", "Edit"}


def test_analyze_exit_codes_gate_ci(scenarios_db: tuple[DbRef, dict[str, str]]) -> None:
    db, ids = scenarios_db
    clean = run("analyze", ids["clean"], "--fail-on", "warning", "--db", str(db))
    assert clean.exit_code == 0, clean.output
    loop = run("analyze", ids["loop"], "--fail-on", "warning", "--db", str(db))
    assert loop.exit_code == 1
    assert "repeated_call" in loop.output and "read_file called 5 times" in loop.output
    assert run("analyze", ids["loop"], "--db", str(db)).exit_code == 0  # error is the default
    assert (
        run("analyze", "--since", "2000-01-01", "--fail-on", "never", "--db", str(db)).exit_code
        == 0
    )
    bad = run("analyze", "nope", "--db", str(db))
    assert bad.exit_code == 1 and "no session matches" in bad.output


def test_drift_names_the_step_and_the_run(scenarios_db: tuple[DbRef, dict[str, str]]) -> None:
    db, ids = scenarios_db
    result = run("drift", ids["drift-1"], ids["drift-2"], ids["drift-3"], "--json", "--db", str(db))
    assert result.exit_code == 1  # a run drifted
    report = json.loads(result.stdout)
    assert report["split_step"] == 4
    assert report["drifted"] == [ids["drift-3"]]
    assert report["usual"] in (ids["drift-1"], ids["drift-2"])
    first, second, third = report["runs"]
    assert first["distance"] == second["distance"] == 0
    assert third["split_step"] == 4 and not third["final_answer_same"]
    family = run("drift", "--family", "drift-", "--db", str(db))
    assert family.exit_code == 1 and "step 4" in family.output
    # The three runs share their first prompt: --same-prompt finds them from any one.
    like = run("drift", "--same-prompt", ids["drift-2"], "--json", "--db", str(db))
    assert like.exit_code == 1
    assert sorted(r["session"] for r in json.loads(like.stdout)["runs"]) == sorted(
        ids[f"drift-{n}"] for n in (1, 2, 3)
    )
    same = run("drift", ids["drift-1"], ids["drift-2"], "--db", str(db))
    assert same.exit_code == 0 and "the same path" in same.output


@pytest.fixture
async def client(scenarios_db: tuple[DbRef, dict[str, str]]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(scenarios_db[0])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as c:
        yield c
    app.state.readers.stop()


async def test_the_api_and_the_ui_show_the_same_findings(
    scenarios_db: tuple[DbRef, dict[str, str]], client: httpx.AsyncClient
) -> None:
    db, ids = scenarios_db
    cli = analyze_json(db, ids["loop"])[ids["loop"]]
    api = (await client.get(f"/api/sessions/{ids['loop']}/findings")).json()
    assert api == {"session": ids["loop"], "findings": cli}
    twin = (await client.get(f"/sessions/{ids['loop']}.json")).json()
    assert twin["findings"] == cli
    page = (await client.get(f"/sessions/{ids['loop']}")).text
    assert page.count('class="badge sev-warning marker"') >= 5  # a marker on each looping turn
    assert 'id="findings"' in page and "read_file called 5 times" in page
    listing = (await client.get("/sessions")).text
    assert f'href="/sessions/{ids["loop"]}#findings"' in listing
    every = (await client.get("/api/findings", params={"min_severity": "warning"})).json()
    by_session = {s["session"]: s["findings"] for s in every["sessions"]}
    assert by_session[ids["clean"]] == []
    assert {f["kind"] for f in by_session[ids["loop"]]} >= {"repeated_call"}
    bad = await client.get("/api/findings", params={"min_severity": "fatal"})
    assert bad.status_code == 400
