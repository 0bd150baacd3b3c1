"""The shapes of the read API's answers, for its OpenAPI document: the query layer's dicts go
out as they are, these describe them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# ---- the shapes, for the OpenAPI document -------------------------------------------------


class Error(BaseModel):
    error: str = Field(description="What was wrong, in words.")


class Fork(BaseModel):
    """A session `tapewire fork` branched off this one."""

    id: str
    name: str | None = Field(description="its /s/ name (fork-<parent>-t<N>)")
    fork_turn: int | None = Field(description="this session's turn it was forked at, 1-based")
    fork_node: str | None = Field(description="that turn's request node")
    started_at: float


class Session(BaseModel):
    """A session (one agent run) with its totals, as `tapewire sessions --json` lists it."""

    id: str
    harness: str = Field(description="claude-code, codex, aider or unknown")
    harness_session_id: str | None
    name: str | None = Field(description="the /s/<name> or x-tapewire-session it was given")
    title: str | None = Field(description="the harness's title, else its first prompt")
    started_at: float = Field(description="Unix time, seconds")
    ended_at: float
    duration_s: float
    turns: int
    threads: int
    tool_calls: int
    tool_errors: int
    errors: int = Field(description="turns that ended in an error")
    input_tokens: int = Field(description="every prompt token: uncached, cache read and write")
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: float | None = Field(description="null when any turn's price is unknown")
    models: list[str]
    findings: int = Field(
        description="findings of warning or error severity in the session's own record "
        "(stored as its turns are derived)"
    )
    worst: str | None = Field(description="the most severe of them: info, warning or error")
    forked_from: str | None = Field(
        description="the parent session's id when `tapewire fork` made this one, else null"
    )
    fork_turn: int | None = Field(description="the parent's turn it was forked at, 1-based")
    fork_node: str | None = Field(description="that turn's request node (the fork point)")
    forks: list[Fork] | None = Field(
        None, description="the sessions forked from this one (in a single session's summary)"
    )
    source: str = Field(
        "wire",
        description="where its turns come from: wire (captured by the proxy), transcript "
        "(imported from the agent's transcript file: the exact bytes and timings are not "
        "known, request bodies are rebuilt, times are the transcript's record times) or "
        "wire+transcript (a capture that an imported transcript completed)",
    )
    facts: dict[str, Any] | None = Field(
        None,
        description="what an imported transcript said beyond the conversation (cwd, git "
        "branch, harness version, local commands, subagent links; in a single session's "
        "summary; null when none was imported)",
    )


class SessionPage(BaseModel):
    sessions: list[Session] = Field(description="newest first")
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


class Thread(BaseModel):
    id: str
    kind: str = Field(description="main or subagent")
    agent: str | None
    started_at: float
    spawned_by: str | None = Field(description="the tool call that started it")


class SessionDetail(BaseModel):
    session: Session
    threads: list[Thread]


class InputMessage(BaseModel):
    role: str
    node: str = Field(description="the message node's content address")
    parts: list[Any] = Field(description="text, thinking, tool_call, tool_result, image, …")


class ToolCall(BaseModel):
    id: str
    name: str | None
    arguments: Any
    result: str | None = Field(description="the result's text, once answered")
    is_error: bool | None
    answered: bool
    latency_ms: float | None


class Usage(BaseModel):
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    cache_write_1h_tokens: int | None
    reasoning_tokens: int | None


class Turn(BaseModel):
    """One exchange with the model: what it was sent that was new, what it answered, and the
    tool calls it made (with their results, linked across turns)."""

    index: int = Field(description="1-based, in time order")
    exchange_id: str
    thread: str | None
    kind: str = Field(description="main, subagent or side")
    api: str
    model: str | None
    started_at: float
    duration_ms: float | None
    ttfb_ms: float | None
    status: int | None
    outcome: str
    stop_reason: str | None
    error: str | None
    input: list[InputMessage] = Field(description="messages new since the thread's last turn")
    output: list[Any] = Field(description="the response's parts")
    response_node: str | None
    tool_calls: list[ToolCall]
    usage: Usage
    cost_usd: float | None


class Timeline(BaseModel):
    session: str = Field(description="the session's id")
    turns: list[Turn]


class Body(BaseModel):
    text: str | None = Field(description="the body, decoded, where it is UTF-8")
    base64: str | None = Field(description="else its bytes in base64")
    size: int
    note: str | None


class RawExchange(BaseModel):
    """One exchange as it crossed the wire. Credential headers were never stored: their
    values are empty."""

    id: str
    started_at: float
    method: str
    path: str
    upstream: str
    upstream_url: str
    provider: str | None
    status: int | None
    outcome: str
    error: str | None
    session: str | None
    evidence: dict[str, str]
    request_headers: list[tuple[str, str]]
    response_headers: list[tuple[str, str]]
    request_size: int
    response_size: int | None
    request_truncated: bool
    response_truncated: bool
    redactions: int
    timings: dict[str, float | None]
    request_sha256: str | None
    request_encoding: str | None
    response_encoding: str | None
    request_body: Body
    response_body: Body


class SearchHit(BaseModel):
    session: str
    session_title: str | None
    exchange_id: str
    turn: int | None = Field(description="the turn's index in its session's timeline")
    where: str = Field(description="prompt, response, thinking, tool_arguments or tool_result")
    role: str
    model: str | None
    started_at: float
    node: str
    snippet: str
    highlights: list[list[int]] = Field(description="[start, end) of each match in the snippet")


class SearchPage(BaseModel):
    hits: list[SearchHit] = Field(description="best first")
    next_offset: int | None = Field(description="the offset of the next page; null on the last")


class ToolStat(BaseModel):
    name: str
    calls: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None


class Tools(BaseModel):
    tools: list[ToolStat] = Field(description="most called first")


class Finding(BaseModel):
    """What a detector found (docs/analysis.md): deterministic, with its evidence."""

    id: str = Field(description="the same for the same record, every time")
    session: str
    kind: str = Field(description="repeated_call, call_cycle, retry, no_progress, unfinished, "
                      "truncated, context_full, tool_errors, error_burst, tool_error_rate, "
                      "turn_anomaly, session_anomaly")  # fmt: skip
    severity: str = Field(description="info, warning or error")
    title: str = Field(description="one line, for a person")
    turns: list[int] = Field(description="the turns it points at (1-based, as the timeline)")
    evidence: dict[str, Any]


class SessionFindings(BaseModel):
    session: str
    findings: list[Finding] = Field(description="most severe first")


class FindingsPage(BaseModel):
    sessions: list[SessionFindings] = Field(description="newest first")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "A parameter the API cannot use."},
    404: {"model": Error, "description": "No such session or exchange."},
    503: {"model": Error, "description": "The database cannot be read (yet)."},
}
