"""Figures in the short forms people read: token counts, dollars, durations, moments, sizes.
The CLI and the web UI print them alike."""

from __future__ import annotations

from datetime import UTC, datetime


def tokens(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def cost(v: float | None) -> str:
    return "?" if v is None else f"${v:.4f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def when(ts: float | None) -> str:
    """Local time: the person reading sits at this machine (or the server's, for the UI)."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
