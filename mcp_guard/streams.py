"""Newline-delimited framing over raw file descriptors, with blocking system calls.

Measured, not guessed (docs/performance.md): each direction of the relay is one blocking loop in a worker
thread (read, decide, write), which is what a stdio relay in Python does fastest. The asyncio
alternatives (anyio process streams, or non-blocking descriptors with anyio.wait_readable) cost two
event-loop turns per message and missed the latency bar by a wide margin.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import threading
from collections.abc import Iterator
from dataclasses import dataclass

_SMALL_READ = 64 * 1024
_LARGE_READ = 1024 * 1024
_HEAD_BYTES = 512


class StreamClosed(Exception):
    """The other end of a file descriptor went away (EPIPE on write)."""


@dataclass(slots=True)
class Oversized:
    """A line longer than the limit. Only its first bytes were kept (to find its id); the rest was
    skipped without ever being held in memory whole."""

    size: int
    head: bytes


class ReadDone:
    """Yielded after the lines of one read: the moment to write out what they produced."""


READ_DONE = ReadDone()


def grow_pipe(fd: int, size: int = 1024 * 1024) -> None:
    """Ask Linux for a bigger pipe buffer: fewer wake-ups for multi-megabyte messages."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", 1031)
    try:
        fcntl.fcntl(fd, set_size, size)
    except OSError:
        pass


def _read_some(fd: int, size: int) -> bytes:
    while True:
        try:
            return os.read(fd, size)
        except InterruptedError:
            continue
        except BlockingIOError:
            # Someone handed us a non-blocking descriptor: wait for it the plain way.
            select.select([fd], [], [])
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ECONNRESET, errno.EBADF):
                return b""
            raise


def _head_of(parts: list[bytes]) -> bytes:
    head = b""
    for part in parts:
        head += part[: _HEAD_BYTES - len(head)]
        if len(head) >= _HEAD_BYTES:
            break
    return head


def iter_lines(fd: int, max_line: int) -> Iterator[bytes | Oversized | ReadDone]:
    """Every newline-terminated line read from `fd` until EOF, with READ_DONE after the lines of each
    read (so the caller writes them out in one system call). A final line without a newline counts
    too. No limit on line length below `max_line`; longer lines come as `Oversized`."""
    parts: list[bytes] = []
    parts_len = 0
    skipping = False
    skipped = 0
    head = b""
    while True:
        data = _read_some(fd, _LARGE_READ if parts_len > _SMALL_READ else _SMALL_READ)
        if not data:
            break
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                rest = data[start:] if start else data
                if not rest:
                    break
                if skipping:
                    skipped += len(rest)
                else:
                    parts.append(rest)
                    parts_len += len(rest)
                    if parts_len > max_line:
                        head = _head_of(parts)
                        skipping, skipped = True, parts_len
                        parts, parts_len = [], 0
                break
            piece = data[start:nl]
            start = nl + 1
            if skipping:
                size = skipped + len(piece)
                skipping, skipped = False, 0
                yield Oversized(size, head)
                continue
            if parts:
                parts.append(piece)
                line = b"".join(parts)
                parts, parts_len = [], 0
            else:
                line = piece
            if len(line) > max_line:
                yield Oversized(len(line), line[:_HEAD_BYTES])
            else:
                yield line
        del data
        yield READ_DONE
    if skipping:
        yield Oversized(skipped, head)
    elif parts:
        yield b"".join(parts)
    yield READ_DONE


class LineWriter:
    """Writes whole lines to a descriptor. Several threads may write to one (the client's stdout gets
    relayed answers and mcp-guard's own); a lock keeps every batch of lines whole and in order."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False
        self.busy = False  # a write is under way (read by the relay before it lets the process end)
        self._lock = threading.Lock()

    def write_lines(self, lines: list[bytes]) -> None:
        if not lines:
            return
        if self.closed:
            raise StreamClosed
        if len(lines) == 1:
            buffers: tuple[bytes, ...] = (lines[0], b"\n")
        else:
            lines.append(b"")
            buffers = (b"\n".join(lines),)
        total = sum(len(b) for b in buffers)
        with self._lock:
            self.busy = True
            try:
                try:
                    written = os.writev(self.fd, buffers)
                except BlockingIOError:
                    written = 0  # someone handed us a non-blocking descriptor: wait below
                if written < total:
                    view = memoryview(b"".join(buffers))[written:]
                    while view:
                        try:
                            view = view[os.write(self.fd, view):]
                        except BlockingIOError:
                            select.select([], [self.fd], [])
            except (BrokenPipeError, ConnectionResetError) as exc:
                self.closed = True
                raise StreamClosed from exc
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.EINVAL):
                    self.closed = True
                    raise StreamClosed from exc
                raise
            finally:
                self.busy = False
