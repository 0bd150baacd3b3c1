"""exchanges -> turns -> nodes -> sessions, threads and tool-call links (DESIGN layer 2).

Derivation is a function of the raw exchanges taken in the order they ended: running it again
(`tapewire rederive`) over the same exchanges yields the same ids and rows. It runs in the
ingest worker as exchanges arrive; the proxy never waits for it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from tapewire.derive.nodes import ChainHasher, node_id
from tapewire.derive.sessions import (
    derived_id,
    harness,
    is_side_call,
    session_key,
    subagent,
    title_from,
)
from tapewire.model import Message, Part, Turn, header_value, ws_messages
from tapewire.pricing import PriceTable, cost
from tapewire.providers import api_for, parse_exchange
from tapewire.store import ExchangeRow, Store
from tapewire.store.derived import (
    Derived,
    NodeRow,
    SessionRow,
    ThreadRow,
    ToolCallRow,
    ToolResultRow,
    TurnRow,
)

log = logging.getLogger("tapewire.derive")

ANALYSE_EVERY = 1.0  # seconds between analyses of the sessions turns keep arriving in

_SEARCH_KIND = {"assistant": "response", "tool": "tool_result"}


def _ms(start: float, end: float | None) -> float | None:
    return round((end - start) * 1000, 3) if end is not None else None


def result_text(part: Part) -> str:
    """What a tool returned, as text (images as a marker)."""
    pieces = []
    for p in part.content or []:
        if p.text is not None:
            pieces.append(p.text)
        elif p.type == "image":
            pieces.append("[image]")
    return "\n".join(pieces)


def search_rows(node: str, role: str, parts: list[Part]) -> list[tuple[str, str, str, str | None]]:
    """What full-text search sees of a message: its text, thinking, tool arguments, results;
    as (node, kind, text, tool call id)."""
    rows: list[tuple[str, str, str, str | None]] = []
    for p in parts:
        if p.type in ("text", "refusal") and p.text:
            rows.append((node, _SEARCH_KIND.get(role, "prompt"), p.text, None))
        elif p.type == "thinking" and p.text:
            rows.append((node, "thinking", p.text, None))
        elif p.type == "tool_call":
            args = (
                p.arguments if isinstance(p.arguments, str) else orjson.dumps(p.arguments).decode()
            )
            rows.append((node, "tool_arguments", f"{p.name or ''} {args}", p.id))
        elif p.type == "tool_result":
            text = result_text(p)
            if text:
                rows.append((node, "tool_result", text, p.id))
    return rows


@dataclass
class _Chain:
    """A request's messages and their nodes: (role, content, id, parent, depth) per message."""

    messages: list[Message]
    links: list[tuple[str, list[dict[str, Any]], str, str | None, int]]
    owner: tuple[str, str | None] | None  # the turn a previous_response_id named
    root_parent: str | None
    depth: int  # of a response to this request

    @property
    def ids(self) -> list[str]:
        return [link[2] for link in self.links]

    @property
    def tip(self) -> str | None:
        """The request's last message, or what it continues when it sent none."""
        return self.links[-1][2] if self.links else self.root_parent


class Deriver:
    def __init__(
        self,
        store: Store,
        prices: PriceTable | None = None,
        analyze: bool = True,
        export: Any = None,
    ) -> None:
        self.store = store
        self.prices = prices if prices is not None else PriceTable.load()
        self.hasher = ChainHasher()
        self.errors = 0
        self.analyze = analyze  # refresh the findings of the sessions batches touch
        self.export = export  # a LiveExport (export/live.py) the derived turns go out through
        self._limits: Any = None
        self._pending: set[str] = set()  # sessions whose findings are behind their turns
        self._digests: dict[str, str] = {}  # tool results' digests, kept between analyses
        self._analysed_at = 0.0

    # ---- driving -------------------------------------------------------------------------

    def derive_ids(self, ids: Iterable[str]) -> int:
        """Derive these exchanges (ended ones), in one transaction. Each is written before the
        next is derived, since the next may continue it; one failing is logged and skipped,
        unless the database failed it: then the whole batch is given up, for the caller to
        retry."""
        done = 0
        touched: set[str] = set()
        with self.store.derived_batch():
            for exchange_id in ids:
                session = self._derive_one(exchange_id)
                if session is None:
                    continue
                touched.add(session)
                if self.export is not None:
                    self.export.add(session, exchange_id)
                done += 1
                if self.store.derived_out_of_order(session, exchange_id):
                    # Another proxy's ingester got to a later turn first: what a turn links
                    # to and takes as new depends on the turns before it, so derive the
                    # session again in the order its exchanges ended.
                    for again in self.store.underive_session(session):
                        self._derive_one(again)
            if self.analyze:
                self._pending |= touched
            # A session is analysed (and exported) whole, so at most once a second while turns
            # pour in; `analyse_pending` catches up when they stop.
            if time.monotonic() - self._analysed_at >= ANALYSE_EVERY:
                self.analyse_pending()
        return done

    def _derive_one(self, exchange_id: str) -> str | None:
        """Derive and write one exchange; returns its session, None when it has no turn."""
        row = self.store.exchange(exchange_id)
        if row is None or row.outcome == "in_flight":
            return None
        try:
            derived = self.derive(row)
            if derived is None:
                return None
            self.store.write_derived([derived])
            return derived.turn.session
        except self.store.TRANSIENT:
            raise  # the database's trouble: the ingester retries the whole batch
        except Exception:  # a deriver bug must not stop ingestion; rederive repairs
            self.errors += 1
            log.exception("could not derive exchange %s", exchange_id)
            return None

    def analyse_pending(self) -> None:
        """Store the findings of every session changed since its last analysis, and export
        the turns derived since the last export."""
        if self.export is not None and self.export.pending:
            self._analysed_at = time.monotonic()
            self.export.flush(self.store)
        if not self._pending:
            return
        from tapewire.analysis import live  # analysis reads through the query layer

        sessions, self._pending = self._pending, set()
        self._analysed_at = time.monotonic()
        if self._limits is None:
            self._limits = live.thresholds()
        try:
            live.refresh(self.store, sessions, self._limits, self._digests)
        except Exception:  # an analysis bug must not stop ingestion; rederive repairs
            self.errors += 1
            log.exception("could not analyse sessions %s", sorted(sessions))

    def catch_up(self) -> int:
        """Derive what the store holds underived (an older store, interrupted exchanges)."""
        return self.derive_ids(
            i for i, method, path in self.store.underived() if api_for(method, path)
        )

    # ---- one exchange --------------------------------------------------------------------

    def derive(self, row: ExchangeRow) -> Derived | None:
        api = api_for(row.method, row.path)
        if api is None or not carries_turn(row):
            return None
        messages = None
        if row.ws_frames is not None:  # over a WebSocket: the upstream's messages are the reply
            messages = ws_messages(row.ws_frames, row.response_body or b"", "upstream")
        turn = parse_exchange(
            api,
            row.request_body or b"",
            row.request_encoding,
            row.response_body if row.status is not None else None,
            row.response_encoding,
            header_value(row.response_headers, "content-type"),
            row.status,
            messages,
            path=row.path,
        )
        if row.request_truncated:
            turn.error = "; ".join(
                e for e in ("request body truncated at capture", turn.error) if e
            )
        harness_name = harness(row.request_headers, row.evidence)
        side = is_side_call(turn, harness_name)
        chain = self._chain(row, turn, side)
        session, thread = self._place(row, chain, harness_name, side)
        session.title = title_from(turn) if side else None

        # New input: what follows the deepest message an earlier turn of this thread sent or
        # received. Asked of the store, not of memory, so that a restart, or exchanges that
        # overlap and end out of order, give the same answer as one uninterrupted run.
        start = self.store.known_depth(thread.id, chain.ids, row.id) + 1 if thread else 0
        new = chain.links[start:]
        nodes = [NodeRow(nid, parent, role, content, depth, row.id)
                 for role, content, nid, parent, depth in new]  # fmt: skip
        search = [s for (_, _, nid, _, _), m in zip(new, chain.messages[start:], strict=True)
                  for s in search_rows(nid, m.role, m.parts)]  # fmt: skip
        response_ids = []
        for out in turn.outputs:  # each a child of the request's last message
            content = [p.canonical() for p in out.parts]
            rid = node_id(chain.tip, out.role, content)
            response_ids.append(rid)
            nodes.append(NodeRow(rid, chain.tip, out.role, content, chain.depth, row.id))
            search.extend(search_rows(rid, out.role, out.parts))

        # Tool calls this response asks, and the results this request carries for earlier ones.
        ended = row.timings.get("last_byte") or row.started_at
        thread_id = thread.id if thread else None
        calls = [
            ToolCallRow(
                session.id, thread_id, p.id, p.name, p.arguments, row.id, response_ids[0], ended
            )
            for p in (turn.output.parts if turn.output and response_ids else [])
            if p.type == "tool_call" and p.id
        ]
        results = [
            ToolResultRow(session.id, thread_id, p.id, p.is_error, row.id, nid, row.started_at)
            for (_, _, nid, _, _), m in zip(new, chain.messages[start:], strict=True)
            for p in m.parts
            if p.type == "tool_result" and p.id
        ]
        if thread is not None and thread.kind == "subagent" and start == 0:
            thread.spawned_by = self.store.spawning_call(session.id, _texts(chain.messages))

        price = self.prices.lookup(turn.response_model or turn.model or "", provider=row.provider)
        turn_row = TurnRow(
            exchange=row.id,
            session=session.id,
            thread=thread_id,
            kind="side" if side else thread.kind if thread else "main",
            api=api,
            model=turn.model,
            response_model=turn.response_model,
            response_id=turn.response_id,
            started_at=row.started_at,
            duration_ms=_ms(row.started_at, row.timings.get("last_byte")),
            ttfb_ms=_ms(row.started_at, row.timings.get("first_byte")),
            status=row.status,
            outcome=row.outcome,
            stop_reason=turn.stop_reason,
            error="; ".join(e for e in (row.error, turn.error) if e) or None,
            request_node=chain.tip,
            response_nodes=response_ids,
            input_nodes=[link[2] for link in new],
            # Claude Code sends 100 KB of tool definitions: the raw body keeps them, a hash
            # tells tool sets apart.
            tools_doc=_sha256(orjson.dumps(turn.tools, option=orjson.OPT_SORT_KEYS))
            if turn.tools
            else None,
            params=turn.params,
            usage=turn.usage,
            cost_usd=cost(turn.usage, price),
            stream=turn.stream,
        )
        return Derived(turn_row, session, thread, nodes, calls, results, search)

    def _chain(self, row: ExchangeRow, turn: Turn, side: bool) -> _Chain:
        """The request's messages as nodes. A Responses request naming previous_response_id
        continues that response's node; any other starts at its system prompt (the root)."""
        messages, parent, depth, owner = turn.messages, None, 0, None
        if turn.previous_response_id:
            found = self.store.response_owner(turn.previous_response_id)
            if found is not None and found[2] is not None:
                owner, parent = (found[0], found[1]), found[2]
                depth = self.store.node_depth(parent) + 1
        if parent is None:
            if turn.system:
                messages = [Message("system", turn.system), *messages]
            keyed = session_key(row.evidence)
            agent = subagent(row.evidence)
            conversation = f"{keyed[0] if keyed else '-'}|{agent or ''}|{'side' if side else ''}"
            hashed = self.hasher.chain(conversation, messages)
        else:
            hashed = _chain_from(parent, messages)
        links = []
        for i, (role, content, nid) in enumerate(hashed):
            links.append((role, content, nid, hashed[i - 1][2] if i else parent, depth + i))
        return _Chain(messages, links, owner, parent, depth + len(links))

    def _place(
        self, row: ExchangeRow, chain: _Chain, harness_name: str, side: bool
    ) -> tuple[SessionRow, ThreadRow | None]:
        """Session and thread: the wire's own identity first, then conversation continuity."""
        ev = row.evidence
        keyed = session_key(ev)
        owner = chain.owner
        key: str | None
        if keyed is not None:
            key = keyed[0]
            session_id = derived_id("session", key)
        else:
            owner = owner or self.store.chain_owner(chain.ids[::-1])
            if owner is not None:
                key, session_id = None, owner[0]
            else:
                key = "chain:" + row.id
                session_id = derived_id("session", key)
        session = SessionRow(
            id=session_id,
            key=key,
            harness=harness_name,
            harness_session_id=ev.get("claude_session") or ev.get("codex_session"),
            name=ev.get("session"),
            started_at=row.started_at,
            ended_at=row.timings.get("last_byte") or row.started_at,
        )
        if side:  # side calls belong to the session, not to a thread
            return session, None
        agent = subagent(ev)
        if agent:
            thread_id = derived_id("thread", session_id, "agent", agent)
        elif keyed is None and owner is not None and owner[1] is not None:
            thread_id = owner[1]
        else:
            thread_id = derived_id("thread", session_id, "main")
        kind = "subagent" if agent else "main"
        return session, ThreadRow(thread_id, session_id, kind, agent, row.started_at)

    # ---- helpers -------------------------------------------------------------------------


def carries_turn(row: ExchangeRow) -> bool:
    """A WebSocket exchange without a message from the agent (the frames before its first, or
    after a reply ended: pings, the close) holds no turn."""
    return row.ws_frames is None or row.request_size > 0


def _chain_from(
    parent: str, messages: list[Message]
) -> list[tuple[str, list[dict[str, Any]], str]]:
    out = []
    for m in messages:
        content = [p.canonical() for p in m.parts]
        parent = node_id(parent, m.role, content)
        out.append((m.role, content, parent))
    return out


def _texts(messages: list[Message]) -> list[str]:
    return [
        p.text for m in messages if m.role == "user" for p in m.parts if p.type == "text" and p.text
    ]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
