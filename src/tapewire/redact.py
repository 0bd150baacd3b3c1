"""Replace secrets (API keys, tokens, private keys) with ``[REDACTED:<rule>]`` in bodies.

Applied to what is stored only, never to the bytes forwarded upstream."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DEFAULT_RULES", "Redactor", "Rule"]


@dataclass(frozen=True)
class Rule:
    """A named pattern; when it has a capture group only group 1 is replaced."""

    name: str
    pattern: re.Pattern[bytes]
    # Literal substrings every match starts with; () means scan with finditer.
    anchors: tuple[bytes, ...] = ()


# Token start: not glued to a preceding identifier character ("desk-", "task-"), but still
# allowed right after a JSON escape (a .env line after "\n") or a percent-encoded byte.
_START = rb"(?:(?<![A-Za-z0-9_-])|(?<=\\[nrt])|(?<=%[0-9A-Fa-f]{2}))"

# Random keys mix digits and both cases; hyphenated identifiers ("sk-admin-panel-...") do not.
_MIXED = rb"(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*[a-z])"

# One element of a PEM body, raw or inside a (possibly twice) JSON-encoded string. A lone
# backslash is excluded so a match never ends halfway through an escape like \" .
_PEM_ITEM = rb"(?:[A-Za-z0-9+/=\s:,]|\\[nrt]|\\\\|-(?!----END))"


def _rule(name: str, pattern: bytes, *anchors: bytes) -> Rule:
    return Rule(name, re.compile(pattern), anchors)


DEFAULT_RULES: tuple[Rule, ...] = (
    # api03 / admin01 / oat01 / ort01 / sid01: the prefix alone is unambiguous, and a loose
    # length keeps working if Anthropic changes the body (today 93 chars + "AA").
    _rule(
        "anthropic-key",
        _START + rb"sk-ant-[a-z]{2,8}[0-9]{2}-[A-Za-z0-9_-]{32,}",
        b"sk-ant-",
    ),
    _rule(
        "openai-key",
        _START + rb"sk-(?:"
        # Project / service-account / admin keys.
        rb"(?:proj|svcacct|admin)-" + _MIXED + rb"[A-Za-z0-9_-]{40,}"
        # Every key since 2023 embeds base64("OpenAI"), "sk-<project-name>-..." ones too.
        rb"|(?=[A-Za-z0-9_-]*T3BlbkFJ)[A-Za-z0-9_-]{20,}"
        # Legacy user keys.
        rb"|[A-Za-z0-9]{48}(?![A-Za-z0-9_-]))",
        b"sk-",
    ),
    _rule(
        "aws-access-key-id",
        _START + rb"(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        b"AKIA",
        b"ASIA",
    ),
    # A bare 40-char base64 run is far too common to redact unless it is named.
    _rule(
        "aws-secret-key",
        rb"(?:aws_secret_access_key|AWS_SECRET_ACCESS_KEY|SecretAccessKey)"
        rb"[\s\"'\\]{0,8}(?:=>|[:=])[\s\"'\\]{0,8}"
        rb"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
        b"aws_secret_access_key",
        b"AWS_SECRET_ACCESS_KEY",
        b"SecretAccessKey",
    ),
    _rule(
        "github-token",
        _START + rb"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9]{20,}_[A-Za-z0-9]{40,})",
        b"ghp_",
        b"gho_",
        b"ghu_",
        b"ghs_",
        b"ghr_",
        b"github_pat_",
    ),
    # Requiring a digit spares placeholders like "xoxb-your-token-here".
    _rule(
        "slack-token",
        _START + rb"xox[abprs]-(?=[A-Za-z0-9-]*[0-9])[A-Za-z0-9-]{10,}",
        b"xoxb-",
        b"xoxp-",
        b"xoxa-",
        b"xoxr-",
        b"xoxs-",
    ),
    # Anchored after the scheme so scheme-less and http:// copies are caught too.
    _rule(
        "slack-webhook",
        rb"hooks\.slack\.com/services/[A-Za-z0-9]+/[A-Za-z0-9]+/[A-Za-z0-9]{16,}",
        b"hooks.slack.com/services/",
    ),
    # The body must hold a 40+ char base64 run so code that merely mentions the header
    # survives; a block cut off before its END line is still redacted up to where it stops.
    _rule(
        "private-key",
        rb"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
        + _PEM_ITEM
        + rb"*?[A-Za-z0-9+/]{40}"
        + _PEM_ITEM
        + rb"*(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)?",
        b"-----BEGIN ",
    ),
)


# Per scan needle, the rules to try at each hit with the anchors to check there first
# (None: the needle is the rule's only anchor, so no check is needed).
_Plan = list[tuple[bytes, list[tuple[Rule, int, tuple[bytes, ...] | None]]]]


class Redactor:
    """Applies the default rules plus user patterns to a body."""

    def __init__(self, extra_patterns: Sequence[str] = (), *, defaults: bool = True) -> None:
        rules: list[Rule] = list(DEFAULT_RULES) if defaults else []
        for i, source in enumerate(extra_patterns, start=1):
            try:
                pattern = re.compile(source.encode())
            except re.error as exc:
                raise ValueError(f"invalid redaction pattern {source!r}: {exc}") from exc
            rules.append(Rule(f"custom-{i}", pattern))
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._labels = {r.name: b"[REDACTED:" + r.name.encode("ascii") + b"]" for r in rules}
        self._plan = _scan_plan([r for r in rules if r.anchors])
        self._full_scans = [r for r in rules if not r.anchors]

    def redact(self, data: bytes) -> tuple[bytes, int]:
        """Return ``(redacted, count)``; ``data`` itself when nothing matched."""
        spans: list[tuple[int, int, str]] = []
        for needle, members in self._plan:
            pos = data.find(needle)
            while pos != -1:
                for rule, group, anchors in members:
                    if anchors is None or data.startswith(anchors, pos):
                        m = rule.pattern.match(data, pos)
                        if m is not None:
                            _add(m, group, rule.name, spans)
                pos = data.find(needle, pos + 1)
        for rule in self._full_scans:
            group = 1 if rule.pattern.groups else 0
            for m in rule.pattern.finditer(data):
                _add(m, group, rule.name, spans)
        if not spans:
            return data, 0

        # Union overlapping spans rather than dropping one: a partly kept secret is a leak.
        spans.sort(key=lambda s: (s[0], -s[1]))
        merged: list[tuple[int, int, str]] = []
        for start, end, name in spans:
            if merged and start < merged[-1][1]:
                if end > merged[-1][1]:
                    merged[-1] = (merged[-1][0], end, merged[-1][2])
                continue
            merged.append((start, end, name))

        out: list[bytes] = []
        pos = 0
        for start, end, name in merged:
            out.append(data[pos:start])
            out.append(self._labels[name])
            pos = end
        out.append(data[pos:])
        return b"".join(out), len(merged)


def _scan_plan(rules: Sequence[Rule]) -> _Plan:
    # Each bytes.find pass over a body costs about as much as hundreds of startswith checks,
    # so anchors sharing their first three bytes share one pass over their common prefix
    # ("sk-ant-" and "sk-" -> "sk-"; "xoxb-" ... "xoxs-" -> "xox"). Not two: "gh" occurs
    # hundreds of times in English prose, and each hit is a Python-level check.
    clusters: dict[bytes, list[tuple[Rule, bytes]]] = {}
    for rule in rules:
        for anchor in rule.anchors:
            if not anchor:
                raise ValueError(f"rule {rule.name}: empty anchor")
            clusters.setdefault(anchor[:3], []).append((rule, anchor))
    plan: _Plan = []
    for pairs in clusters.values():
        needle = pairs[0][1]
        for _, anchor in pairs[1:]:
            while not anchor.startswith(needle):
                needle = needle[:-1]
        members: list[tuple[Rule, int, tuple[bytes, ...] | None]] = []
        for rule in dict.fromkeys(r for r, _ in pairs):
            anchors = tuple(a for r, a in pairs if r is rule)
            group = 1 if rule.pattern.groups else 0
            members.append((rule, group, None if anchors == (needle,) else anchors))
        plan.append((needle, members))
    return plan


def _add(m: re.Match[bytes], group: int, name: str, spans: list[tuple[int, int, str]]) -> None:
    data: bytes = m.string
    start, end = m.span(group)
    if start >= end:  # an empty match, or a group that did not take part
        return
    # Keep a JSON body valid even for JSON-unaware user patterns such as password=(\S+):
    # stop at the closing quote of the string, and never split a backslash escape. A match
    # that starts with a quote is deliberately matching JSON syntax, so it is left alone.
    if data[start] != 0x22:
        q = data.find(b'"', start, end)
        while q != -1 and _escaped(data, q):
            q = data.find(b'"', q + 1, end)
        if q != -1:
            end = q
    if _escaped(data, start):
        start -= 1
    if end < len(data) and _escaped(data, end):
        end += 1
    spans.append((start, end, name))


def _escaped(data: bytes, i: int) -> bool:
    """Whether data[i] is preceded by an odd run of backslashes."""
    j = i
    while j > 0 and data[j - 1] == 0x5C:
        j -= 1
    return (i - j) % 2 == 1
