"""The read side: the HTTP JSON API (`api.py`, FastAPI over the one query layer,
`tapewire.query`), the web UI's pages over the same queries (`pages.py`, Jinja2 templates,
`charts.py`), the guard around both (`guard.py`), and the server that runs them on their own
thread, loop and listener (`server.py`). docs/api.md and docs/ui.md describe them."""

from __future__ import annotations

from tapewire.web.app import create_app
from tapewire.web.server import ReadServer

__all__ = ["ReadServer", "create_app"]
