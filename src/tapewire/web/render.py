"""Jinja2 for the web UI: the environment, and the filters that turn recorded content (hostile
input: DESIGN.md, invariant 6) into text a page shows and never runs. Autoescaping is on for
every template; nothing here marks recorded text safe except `highlight`, which escapes each
piece itself."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from tapewire import figures

TEXT_LIMIT = 4000  # characters of one text in the timeline before "show all"
FOLD_CHARS, FOLD_LINES = 600, 8  # an input text longer than this starts folded
BODY_LIMIT = 256 * 1024  # of a raw body on the exchange page
PRETTY_LIMIT = 16 * 1024 * 1024  # past this a JSON body is shown as it came

# C0 controls but tab and newline, DEL and the C1 range: an ANSI escape or a backspace in a
# tool's output shows as a symbol, it does not act on the page or the terminal it is copied to.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: object) -> str:
    """`text` with control characters shown as escapes (ESC as \\x1b): fonts lack the
    control pictures (␛), an escape reads the same everywhere."""
    s = text if isinstance(text, str) else str(text)
    return _CONTROLS.sub(_symbol, s)


def _symbol(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group()):02x}"


def clip(text: object, limit: int | None = TEXT_LIMIT) -> tuple[str, bool]:
    """(the text to show, whether it was cut)."""
    s = visible(text)
    if limit is None or len(s) <= limit:
        return s, False
    return s[:limit], True


def pretty(value: Any) -> str:
    """A tool call's arguments as indented JSON (a string that is not JSON stays as it is)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return str(value)
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def readable_body(text: str) -> tuple[str, bool]:
    """A body to read: JSON indented (True), anything else (SSE, NDJSON, text) as it is."""
    if len(text) > PRETTY_LIMIT or not text.lstrip().startswith(("{", "[")):
        return text, False
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False), True
    except ValueError:
        return text, False


def one_line(value: Any, width: int = 120) -> str:
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    s = " ".join(visible(s).split())
    return s if len(s) <= width else s[: width - 1] + "…"


def highlight(text: str, spans: Sequence[Sequence[int]]) -> Markup:
    """A search snippet with its matched spans in <mark>, every piece escaped."""
    out: list[str] = []
    at = 0
    for start, end in sorted((int(s), int(e)) for s, e in spans):
        if start < at or end <= start:
            continue
        out.append(escape(visible(text[at:start])))
        out.append(Markup("<mark>%s</mark>") % visible(text[start:end]))
        at = end
    out.append(escape(visible(text[at:])))
    return Markup("").join(out)


def part_text(part: dict[str, Any]) -> str:
    """The text a tool result part carries (its content's texts, joined)."""
    if part.get("text"):
        return str(part["text"])
    pieces = [c.get("text") or "" for c in part.get("content") or [] if isinstance(c, dict)]
    return "\n".join(p for p in pieces if p)


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} ms" if value < 10_000 else figures.duration(value / 1000)


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("tapewire.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(
        visible=visible,
        pretty=pretty,
        one_line=one_line,
        part_text=part_text,
        tokens=figures.tokens,
        cost=figures.cost,
        duration=figures.duration,
        when=figures.when,
        size=figures.size,
        ms=ms,
    )
    env.globals.update(
        clip=clip,
        highlight=highlight,
        readable_body=readable_body,
        TEXT_LIMIT=TEXT_LIMIT,
        FOLD_CHARS=FOLD_CHARS,
        FOLD_LINES=FOLD_LINES,
    )
    return env
