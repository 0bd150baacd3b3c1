"""Agent transcripts into the store: `tapewire import claude-code` and `tapewire import codex`
(docs/import.md). A transcript becomes the raw exchanges its conversation implies (recorder
`transcript:<harness>`), derived like any capture; where the wire already holds a session, the
transcript adds only what the wire lacks, and its facts (cwd, branch, version, local commands,
subagent links) go beside it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tapewire.derive import Deriver
from tapewire.importers import claude_code, codex
from tapewire.importers.common import Line, Report, jsonl_files, now, read_jsonl
from tapewire.pricing import PriceTable
from tapewire.store import Store

__all__ = ["Report", "default_path", "import_claude_code", "import_codex", "list_files"]

Progress = Callable[[int, int], None]  # (done, total) files


def default_path(harness: str) -> Path:
    home = Path.home()
    return (
        home / ".claude" / "projects" if harness == "claude-code" else home / ".codex" / "sessions"
    )


def list_files(harness: str, paths: list[Path]) -> list[Path]:
    pattern = "rollout-*.jsonl" if harness == "codex" else "*.jsonl"
    return [p.absolute() for p in jsonl_files(paths, pattern)]


def _deriver(store: Store, prices: PriceTable | None) -> Deriver:
    return Deriver(store, prices)


def import_claude_code(
    store: Store,
    files: list[Path],
    *,
    prices: PriceTable | None = None,
    progress: Progress | None = None,
) -> Report:
    """Read every file (a session's main transcript and its subagents may be anywhere in the
    list), then import session by session, subagents after the calls that spawned them."""
    report = Report(files=len(files))
    read: list[tuple[Path, list[Line]]] = []
    for i, path in enumerate(files, 1):
        read.append((path, read_jsonl(path, report)))
        if progress:
            progress(i, len(files) * 2)
    deriver = _deriver(store, prices)
    at = now()
    sessions = claude_code.read_files(read, report)
    for i, session in enumerate(sessions, 1):
        claude_code.import_session(store, deriver, session, report, at)
        if progress:
            progress(len(files) + round(i * len(files) / len(sessions)), len(files) * 2)
    deriver.analyse_pending()
    return report


def import_codex(
    store: Store,
    files: list[Path],
    *,
    prices: PriceTable | None = None,
    progress: Progress | None = None,
) -> Report:
    report = Report(files=len(files))
    deriver = _deriver(store, prices)
    at = now()
    for i, path in enumerate(files, 1):
        rollout = codex.read_rollout(path, read_jsonl(path, report), report)
        codex.import_rollout(store, deriver, rollout, report, at)
        if progress:
            progress(i, len(files))
    deriver.analyse_pending()
    return report
