"""The read side: the HTTP JSON API (`api.py`, FastAPI over the one query layer,
`tapewire.query`) and the server that runs it on its own thread, loop and listener
(`server.py`). docs/api.md describes the endpoints."""

from __future__ import annotations

from tapewire.web.api import create_app
from tapewire.web.server import ReadServer

__all__ = ["ReadServer", "create_app"]
