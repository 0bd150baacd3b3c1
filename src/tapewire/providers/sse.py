"""A small line-based reader for Server-Sent Events bodies, shared by the streaming codecs.

It follows the parts of the WHATWG event-stream format that LLM providers use: events end at a
blank line, `event:` names the event, `data:` lines are joined with "\\n", lines starting with
':' are comments, and one space after the colon is dropped. Lines may end in \\n, \\r\\n or \\r.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_LINE_END = re.compile(r"\r\n|\r|\n")


def events(data: bytes) -> Iterator[tuple[str | None, str]]:
    """Yield (event name or None, data) for each event in an SSE body.

    Events without a data line are skipped (the spec dispatches nothing for them). A final event
    with no blank line after it, as a cut-off stream leaves, is still yielded when it has data.
    """
    text = data.decode("utf-8", "replace").removeprefix("\ufeff")
    name: str | None = None
    lines: list[str] = []
    has_data = False
    for line in _LINE_END.split(text):
        if not line:
            if has_data:
                yield name, "\n".join(lines)
            name, lines, has_data = None, [], False
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            name = value or None
        elif field == "data":
            lines.append(value)
            has_data = True
        # id:, retry: and unknown fields do not matter to a recording.
    if has_data:
        yield name, "\n".join(lines)
