"""Serve tests/fakeprovider.py's fake LLM provider (with the recorded Claude turns loaded) until
killed. Prints its URL on stdout once listening.

    python bench/fake_server.py [--no-recording]

For the benchmark the fake forgets what it received (the tests keep every request for
inspection, which would grow without bound under load) and runs on uvloop when available,
so that it takes as little of the shared CPU as it can.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
RECORDING = ROOT / "tests" / "fixtures" / "recordings" / "claude-20260727-019fa57e"
sys.path.insert(0, str(ROOT / "tests"))

from fakeprovider import FakeProvider, Received  # noqa: E402


class _Forget(list[Received]):
    """A `received` list that keeps nothing."""

    def append(self, item: Received) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-recording", action="store_true", help="do not load the recording")
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake = FakeProvider(None if args.no_recording else RECORDING)
    fake.received = _Forget()
    with fake:
        print(fake.url, flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
