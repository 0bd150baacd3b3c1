"""The derived layer's rows, as `derive` hands them to a store. Everything here can be dropped
and rebuilt from the raw exchanges (`tapewire rederive`) to the same ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tapewire.model import Usage


@dataclass
class NodeRow:
    id: str
    parent: str | None
    role: str
    content: list[dict[str, Any]]  # canonical parts
    depth: int
    exchange: str  # the exchange that first carried it


@dataclass
class SessionRow:
    id: str
    key: str | None  # what identified it (s:<name>, claude-code:<id>, codex:<id>,
    # chain:<first exchange>); None: continues a session already known
    harness: str
    harness_session_id: str | None
    name: str | None  # the explicit /s/ session name
    started_at: float
    ended_at: float
    title: str | None = None  # set by a harness title call


@dataclass
class ThreadRow:
    id: str
    session: str
    kind: str  # main | subagent
    agent: str | None  # the harness's agent / thread id
    started_at: float
    spawned_by: str | None = None  # tool call id in the parent thread


@dataclass
class ToolCallRow:
    session: str
    thread: str | None
    call_id: str
    name: str | None
    arguments: Any
    call_exchange: str
    call_node: str
    asked_at: float | None  # when the response that asked ended


@dataclass
class ToolResultRow:
    session: str
    thread: str | None
    call_id: str
    is_error: bool | None
    result_exchange: str
    result_node: str
    answered_at: float  # when the request that answered started


@dataclass
class TurnRow:
    exchange: str
    session: str
    thread: str | None
    kind: str  # main | subagent | side
    api: str
    model: str | None
    response_model: str | None
    response_id: str | None
    started_at: float
    duration_ms: float | None
    ttfb_ms: float | None
    status: int | None
    outcome: str
    stop_reason: str | None
    error: str | None
    request_node: str | None
    response_nodes: list[str]
    input_nodes: list[str]  # new since the thread's previous turn
    tools_doc: str | None  # sha256 of the tool definitions; they stay in the raw body
    params: dict[str, Any]
    usage: Usage
    cost_usd: float | None
    stream: bool


@dataclass
class Derived:
    """Everything one exchange adds to the derived layer."""

    turn: TurnRow
    session: SessionRow
    thread: ThreadRow | None
    nodes: list[NodeRow] = field(default_factory=list)
    tool_calls: list[ToolCallRow] = field(default_factory=list)
    tool_results: list[ToolResultRow] = field(default_factory=list)
    # (node, kind, text, tool call id): what full-text search indexes
    search: list[tuple[str, str, str, str | None]] = field(default_factory=list)
