"""Reading the store off the event loop: a few threads, each with a read-only store of its
own, and the thread an export streams from."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from tapewire import query
from tapewire.store import Store, open_store
from tapewire.store.location import DbRef

log = logging.getLogger("tapewire.web")

T = TypeVar("T")
READ_THREADS = 4
EXPORT_CHUNK = 64 * 1024


def dumps(content: Any) -> bytes:
    try:
        return orjson.dumps(content)
    except (orjson.JSONEncodeError, TypeError):  # an integer past 64 bits, say
        return json.dumps(content, default=str).encode()


# ---- reading the store off the event loop ---------------------------------------------------


class Readers:
    """The threads that run queries. A SQLite connection serves only the thread that opened
    it, so each thread opens its own read-only store at its first job and closes it, in that
    thread, when the readers stop. (A ThreadPoolExecutor cannot close what its threads
    opened.) Threads start again at the next job after a stop."""

    def __init__(self, db: DbRef, threads: int = READ_THREADS) -> None:
        self.db = db
        self.size = threads
        self._jobs: queue.SimpleQueue[tuple[Callable[[Store], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[Store], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._work, name=f"tapewire-read-{i}", daemon=True)
                    for i in range(self.size)
                ]
                for thread in self._threads:
                    thread.start()
            self._jobs.put((fn, future))
        return future

    async def run(self, fn: Callable[[Store], T]) -> T:
        return await asyncio.wrap_future(self.submit(fn))

    def _work(self) -> None:
        store: Store | None = None
        try:
            while (job := self._jobs.get()) is not None:
                fn, future = job
                if not future.set_running_or_notify_cancel():
                    continue  # its request went away while it waited
                try:
                    if store is None:
                        store = open_store(self.db, readonly=True)
                    result = fn(store)
                except Exception as e:  # the request's to answer
                    future.set_exception(e)
                else:
                    future.set_result(result)
        finally:
            if store is not None:
                store.close()

    def stop(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
            for _ in threads:
                self._jobs.put(None)
        for thread in threads:
            thread.join()


class ExportStream:
    """The JSONL export, a chunk of lines at a time, from a thread of its own: the records come
    from one generator over one store, which must stay on the thread that opened it. Nothing
    is opened until the response's body is first asked for, and everything is closed when it
    ends, fails or the client goes away."""

    def __init__(self, db: DbRef, ids: list[str] | None) -> None:
        self._db = db
        self._ids = ids
        self._store: Store | None = None
        self._records: Iterator[dict[str, Any]] | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        pool = ThreadPoolExecutor(1, thread_name_prefix="tapewire-export")
        try:
            while chunk := await asyncio.wrap_future(pool.submit(self._chunk)):
                yield chunk
        finally:  # after any chunk still being read, on its thread
            pool.submit(self._close)
            pool.shutdown(wait=False)

    def _chunk(self) -> bytes:
        if self._records is None:
            self._store = open_store(self._db, readonly=True)
            self._records = query.export_records(self._store, self._ids)
        lines: list[bytes] = []
        size = 0
        for record in self._records:
            lines.append(dumps(record) + b"\n")
            size += len(lines[-1])
            if size >= EXPORT_CHUNK:
                break
        return b"".join(lines)

    def _close(self) -> None:
        if self._store is not None:
            self._store.close()
