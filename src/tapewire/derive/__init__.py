"""exchanges -> turns -> nodes -> sessions, threads and tool-call links (DESIGN layer 2).

Derivation is a function of the raw exchanges taken in the order they ended: running it again
(`tapewire rederive`) over the same exchanges yields the same ids and rows. It runs in the
ingest worker as exchanges arrive; the proxy never waits for it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
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
from tapewire.model import Message, Part, header_value
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

_SEARCH_KIND = {"assistant": "response", "tool": "tool_result"}


def _ms(start: float, end: float | None) -> float | None:
    return round((end - start) * 1000, 3) if end is not None else None


def _result_text(part: Part) -> str:
    pieces = []
    for p in part.content or []:
        if p.text is not None:
            pieces.append(p.text)
        elif p.type == "image":
            pieces.append("[image]")
    return "\n".join(pieces)


def search_rows(node: str, role: str, parts: list[Part]) -> list[tuple[str, str, str]]:
    """What full-text search sees of a message: its text, thinking, tool arguments, results."""
    rows = []
    for p in parts:
        if p.type in ("text", "refusal") and p.text:
            rows.append((node, _SEARCH_KIND.get(role, "prompt"), p.text))
        elif p.type == "thinking" and p.text:
            rows.append((node, "thinking", p.text))
        elif p.type == "tool_call":
            args = (
                p.arguments if isinstance(p.arguments, str) else orjson.dumps(p.arguments).decode()
            )
            rows.append((node, "tool_arguments", f"{p.name or ''} {args}"))
        elif p.type == "tool_result":
            text = _result_text(p)
            if text:
                rows.append((node, "tool_result", text))
    return rows


class Deriver:
    def __init__(self, store: Store, prices: PriceTable | None = None) -> None:
        self.store = store
        self.prices = prices if prices is not None else PriceTable.load()
        self.hasher = ChainHasher()
        self.errors = 0

    # ---- driving -------------------------------------------------------------------------

    def derive_ids(self, ids: Iterable[str]) -> int:
        """Derive these exchanges (ended ones) and write the result in one transaction."""
        done = 0
        for exchange_id in ids:
            row = self.store.exchange(exchange_id)
            if row is None or row.outcome == "in_flight":
                continue
            try:
                derived = self.derive(row)
                if derived is not None:  # written one by one: the next may continue this one
                    self.store.write_derived([derived])
                    done += 1
            except Exception:  # a deriver bug must not stop ingestion; rederive repairs
                self.errors += 1
                log.exception("could not derive exchange %s", exchange_id)
        return done

    def catch_up(self) -> int:
        """Derive what the store holds underived (an older store, interrupted exchanges)."""
        return self.derive_ids(
            i for i, method, path in self.store.underived() if api_for(method, path)
        )

    # ---- one exchange --------------------------------------------------------------------

    def derive(self, row: ExchangeRow) -> Derived | None:
        api = api_for(row.method, row.path)
        if api is None:
            return None
        turn = parse_exchange(
            api,
            row.request_body or b"",
            row.request_encoding,
            row.response_body if row.status is not None else None,
            row.response_encoding,
            header_value(row.response_headers, "content-type"),
            row.status,
        )
        if row.request_truncated:
            turn.error = "request body truncated at capture" + (
                f"; {turn.error}" if turn.error else ""
            )
        ev = row.evidence
        harness_name = harness(row.request_headers, ev)
        side = is_side_call(turn, harness_name)
        agent = subagent(ev)
        ended = row.timings.get("last_byte") or row.started_at

        # The chain: a Responses request naming previous_response_id continues that response.
        messages = turn.messages
        parent, base_depth, owner = None, 0, None
        if turn.previous_response_id:
            found = self.store.response_owner(turn.previous_response_id)
            if found is not None:
                owner = found[:2]
                parent = found[2]
                base_depth = self.store.node_depth(parent) + 1 if parent else 0
        if parent is None and turn.system:
            messages = [Message("system", turn.system), *messages]
        keyed = session_key(ev)
        if parent is None:
            conversation = f"{keyed[0] if keyed else '-'}|{agent or ''}|{'side' if side else ''}"
            chain = self.hasher.chain(conversation, messages)
        else:
            chain = _chain_from(parent, messages)
        chain_ids = [nid for _, _, nid in chain]
        request_node = chain_ids[-1] if chain_ids else parent

        # Session and thread: the wire's own identity first, then conversation continuity.
        harness_session_id = ev.get("claude_session") or ev.get("codex_session")
        key: str | None
        if keyed is not None:
            key = keyed[0]
            session_id = derived_id("session", key)
        else:
            owner = owner or self.store.chain_owner(chain_ids[::-1])
            if owner is not None:
                key, session_id = None, owner[0]
            else:
                key = "chain:" + row.id
                session_id = derived_id("session", key)
        thread: ThreadRow | None = None
        kind = "side" if side else ("subagent" if agent else "main")
        if not side:
            if agent:
                thread_id = derived_id("thread", session_id, "agent", agent)
            elif keyed is None and owner is not None and owner[1] is not None:
                thread_id = owner[1]
            else:
                thread_id = derived_id("thread", session_id, "main")
            thread = ThreadRow(thread_id, session_id, kind, agent, row.started_at)

        # What is new since the thread's previous turn.
        # New input: what follows the deepest message an earlier turn of this thread sent or
        # received. Asked of the store, not of memory, so that a restart, or exchanges that
        # overlap and end out of order, give the same answer as one uninterrupted run.
        start = self.store.known_depth(thread.id, chain_ids, row.id) + 1 if thread else 0
        input_ids = chain_ids[start:]

        nodes: list[NodeRow] = []
        search: list[tuple[str, str, str]] = []
        new_messages = messages[len(messages) - len(input_ids) :] if input_ids else []
        parent_of = parent if start == 0 else chain_ids[start - 1]
        for offset, ((role, content, nid), message) in enumerate(
            zip(chain[start:], new_messages, strict=True)
        ):
            nodes.append(
                NodeRow(nid, parent_of, role, content, base_depth + start + offset, row.id)
            )
            search.extend(search_rows(nid, role, message.parts))
            parent_of = nid
        response_ids = []
        for out in turn.outputs:
            content = [p.canonical() for p in out.parts]
            rid = node_id(request_node, out.role, content)
            response_ids.append(rid)
            depth = base_depth + len(chain_ids)
            nodes.append(NodeRow(rid, request_node, out.role, content, depth, row.id))
            search.extend(search_rows(rid, out.role, out.parts))

        # Tool calls asked by this response, and results this request carries for earlier ones.
        thread_id_ = thread.id if thread else None
        calls = []
        if turn.output is not None and response_ids:
            for p in turn.output.parts:
                if p.type == "tool_call" and p.id:
                    calls.append(ToolCallRow(session_id, thread_id_, p.id, p.name, p.arguments,
                                             row.id, response_ids[0], ended))  # fmt: skip
        results = []
        for (_, _, nid), message in zip(chain[start:], new_messages, strict=True):
            for p in message.parts:
                if p.type == "tool_result" and p.id:
                    results.append(ToolResultRow(session_id, thread_id_, p.id, p.is_error,
                                                 row.id, nid, row.started_at))  # fmt: skip
        if thread is not None and thread.kind == "subagent" and start == 0:
            thread.spawned_by = self.store.spawning_call(session_id, _texts(new_messages))

        tools_doc = None
        if turn.tools:  # 100 KB for Claude Code: the raw body keeps them; a hash tells sets apart
            tools_doc = _sha256(orjson.dumps(turn.tools, option=orjson.OPT_SORT_KEYS))

        price = self.prices.lookup(turn.response_model or turn.model or "", provider=row.provider)
        session = SessionRow(
            id=session_id,
            key=key,
            harness=harness_name,
            harness_session_id=harness_session_id,
            name=ev.get("session"),
            started_at=row.started_at,
            ended_at=ended,
            title=title_from(turn) if side else None,
        )
        turn_row = TurnRow(
            exchange=row.id,
            session=session_id,
            thread=thread_id_,
            kind=kind,
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
            request_node=request_node,
            response_nodes=response_ids,
            input_nodes=input_ids,
            tools_doc=tools_doc,
            params=turn.params,
            usage=turn.usage,
            cost_usd=cost(turn.usage, price),
            stream=turn.stream,
        )
        return Derived(turn_row, session, thread, nodes, calls, results, search)

    # ---- helpers -------------------------------------------------------------------------


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
