"""Replay and fork: re-serve a recorded run offline (`server.py`, `match.py`, `check.py`),
or branch a conversation at any turn (`fork.py`). docs/replay.md describes both."""
