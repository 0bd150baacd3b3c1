"""Helpers for the failure tests: a raw HTTP/1.1 client that shows exactly what crossed the
socket, a look at the kernel's TCP table, and ways to take a directory away from the store
(read-only, or a tiny tmpfs that fills up)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# --------------------------------------------------------------------------- raw HTTP/1.1


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes  # de-chunked
    raw: bytes  # every byte read off the socket, head included
    complete: bool  # the body ended the way HTTP/1.1 says it should
    chunks: list[bytes] = field(default_factory=list)  # chunk payloads, when chunked

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def request_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Reader:
    """Reads from a stream while keeping every byte seen; EOF or a reset ends it."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.raw = bytearray()

    async def _take(self, read: Awaitable[bytes]) -> bytes | None:
        """What a read returned (kept in raw), or None when the peer ended it early."""
        try:
            data = await read
        except asyncio.IncompleteReadError as e:
            self.raw += e.partial
            return None
        except ConnectionError:
            return None
        self.raw += data
        return data

    async def until(self, sep: bytes) -> bytes | None:
        return await self._take(self.reader.readuntil(sep))

    async def exactly(self, n: int) -> bytes | None:
        return await self._take(self.reader.readexactly(n))

    async def rest(self) -> bytes:
        out = bytearray()
        with contextlib.suppress(ConnectionError):
            while data := await self.reader.read(1 << 16):
                out += data
        self.raw += out
        return bytes(out)


async def raw_request(
    port: int,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    *,
    within: float = 30.0,
) -> RawResponse:
    """Send exactly these bytes to 127.0.0.1:port and read one response as it crossed the wire."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    try:
        async with asyncio.timeout(within):
            writer.write(request_head(method, target, headers))
            if body:
                view = memoryview(body)
                for i in range(0, len(body), 1 << 20):
                    writer.write(view[i : i + (1 << 20)])
                    await writer.drain()
            await writer.drain()
            return await _read_response(_Reader(reader))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _read_response(r: _Reader) -> RawResponse:
    head = await r.until(b"\r\n\r\n")
    if head is None:
        raise ConnectionError(f"no response head; got {bytes(r.raw)!r}")
    lines = head.decode("latin-1").split("\r\n")
    _, status, *reason = lines[0].split(" ", 2)
    headers = [tuple(line.split(": ", 1)) for line in lines[1:] if line]
    resp = RawResponse(
        status=int(status),
        reason=reason[0] if reason else "",
        headers=[(k, v) for k, v in headers],
        body=b"",
        raw=b"",
        complete=False,
    )
    body = bytearray()
    te = (resp.header("transfer-encoding") or "").lower()
    length = resp.header("content-length")
    if "chunked" in te:
        while True:
            size_line = await r.until(b"\r\n")
            if size_line is None:
                break
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                resp.complete = await r.until(b"\r\n") == b"\r\n"  # no trailers expected
                break
            chunk = await r.exactly(size + 2)
            if chunk is None:
                break
            body += chunk[:-2]
            resp.chunks.append(chunk[:-2])
    elif length is not None:
        data = await r.exactly(int(length))
        if data is None:
            body += r.raw[len(head) :]
        else:
            body += data
            resp.complete = True
    elif resp.status in (204, 304):
        resp.complete = True
    else:
        body += await r.rest()
        resp.complete = True  # close-delimited
    resp.body = bytes(body)
    resp.raw = bytes(r.raw)
    return resp


# --------------------------------------------------------------------------- TCP table

_TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


@dataclass(frozen=True)
class Socket:
    local_port: int
    remote_port: int
    state: str


def tcp_sockets(port: int) -> list[Socket]:
    """Every TCP socket on this host with `port` at either end, as the kernel lists it."""
    found: list[Socket] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                local = int(parts[1].rsplit(":", 1)[1], 16)
                remote = int(parts[2].rsplit(":", 1)[1], 16)
                if port in (local, remote):
                    found.append(Socket(local, remote, _TCP_STATES.get(parts[3], parts[3])))
    return found


def open_connections(port: int) -> list[Socket]:
    """Connections to or from `port` that either side still holds open."""
    return [
        s
        for s in tcp_sockets(port)
        if s.state in ("ESTABLISHED", "CLOSE_WAIT", "SYN_SENT", "SYN_RECV")
    ]


# --------------------------------------------------------------------------- unwritable places


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


class ReadOnly:
    """Makes a directory unwritable, even to root: a read-only bind mount over it when we may
    mount (root ignores permission bits), else chmod for an ordinary user. `release` undoes it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.how: str | None = None
        self._modes: dict[Path, int] = {}

    def apply(self) -> None:
        d = str(self.directory)
        if os.geteuid() == 0 and shutil.which("mount"):
            bind = _run("mount", "--bind", d, d)
            if bind.returncode == 0:
                ro = _run("mount", "-o", "remount,bind,ro", d)
                if ro.returncode == 0:
                    self.how = "mount"
                    return
                _run("umount", d)
            raise OSError(f"cannot make {d} read-only: {bind.stderr or 'remount failed'}")
        for p in [self.directory, *self.directory.iterdir()]:
            self._modes[p] = p.stat().st_mode
            p.chmod(0o555 if p.is_dir() else 0o444)
        self.how = "chmod"

    def release(self) -> None:
        if self.how == "mount":
            result = _run("umount", str(self.directory))
            if result.returncode != 0:
                _run("umount", "-l", str(self.directory))
        elif self.how == "chmod":
            for p, mode in self._modes.items():
                p.chmod(mode)
        self.how = None


@contextlib.contextmanager
def tiny_tmpfs(directory: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `directory`; raises PermissionError when we may not mount."""
    directory.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        raise PermissionError("no mount(8) on this system")
    result = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory))
    if result.returncode != 0:
        raise PermissionError(f"mount -t tmpfs not permitted: {result.stderr.strip()}")
    try:
        yield directory
    finally:
        if _run("umount", str(directory)).returncode != 0:
            _run("umount", "-l", str(directory))
