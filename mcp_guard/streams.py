"""File-descriptor plumbing shared by the relay's pumps: reading a chunk, bounded output buffers written
without blocking. Framing is framing.py's (sans-I/O); what differs between systems (waiting, blocking
mode, gathered writes, wake-ups between threads) is oslayer.py's."""

from __future__ import annotations

import errno
import os
from collections import deque

from . import oslayer

READ_CHUNK = 64 * 1024  # bytes asked of one read (bigger ones cost an mmap per read)
READ_CHUNK_LARGE = 1024 * 1024  # while a line longer than READ_CHUNK is being assembled
# Output queued for one destination above which its sources stop being read (back-pressure); a single
# line longer than this is still queued whole, so the bound is this plus one message.
OUTPUT_HIGH_WATER = 1024 * 1024
# A source whose own destination is fine, but which also queues lines for a destination that does not
# drain (the client's refusals, while the client does not read), stops above this.
OUTPUT_HARD_LIMIT = 4 * OUTPUT_HIGH_WATER
_IOV_MAX = 512  # buffers per writev (Linux allows 1024)
_NEWLINE = b"\n"
_JOIN_BELOW = 64 * 1024  # a line shorter than this is queued with its newline in one buffer
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.EBADF, errno.EINVAL)


class StreamClosed(Exception):
    """The other end of a file descriptor went away (EPIPE on write)."""


_writev = oslayer.writev
_wait_readable = oslayer.wait_readable


def read_chunk(fd: int, size: int) -> bytes | None:
    """Up to `size` bytes; b"" at EOF (or when the descriptor is unusable); None when a non-blocking
    descriptor has nothing yet."""
    while True:
        try:
            return os.read(fd, size)
        except InterruptedError:
            continue
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ECONNRESET, errno.EBADF):
                return b""
            raise


def read_chunk_blocking(fd: int, size: int) -> bytes:
    while True:
        data = read_chunk(fd, size)
        if data is not None:
            return data
        _wait_readable(fd, None)  # someone handed us a non-blocking descriptor: wait the plain way


class OutputBuffer:
    """Lines waiting for one destination, written with as few system calls as possible and never more
    than the descriptor takes at once. Lines are not joined (a 256 MiB line is never copied)."""

    __slots__ = ("size", "closed", "_chunks")

    def __init__(self) -> None:
        self.size = 0
        self.closed = False
        self._chunks: deque[bytes | memoryview] = deque()

    def __bool__(self) -> bool:
        return self.size > 0

    def add(self, lines: list[bytes]) -> None:
        if self.closed:
            return
        chunks = self._chunks
        for line in lines:
            if len(line) < _JOIN_BELOW:
                chunks.append(line + _NEWLINE)  # a small copy beats a second buffer in every writev
            else:
                chunks.append(line)
                chunks.append(_NEWLINE)
            self.size += len(line) + 1

    def discard(self) -> None:
        self._chunks.clear()
        self.size = 0

    def close(self) -> None:
        self.closed = True
        self.discard()

    def write_to(self, fd: int) -> int:
        """Write what the descriptor takes now (a non-blocking one returns at once; a blocking one
        blocks until all of one writev is taken). Returns the bytes written. Raises StreamClosed."""
        chunks = self._chunks
        written_total = 0
        while chunks:
            try:
                if len(chunks) == 1:
                    offered = len(chunks[0])
                    written = os.write(fd, chunks[0])
                else:
                    batch = list(chunks) if len(chunks) <= _IOV_MAX else [chunks[i] for i in range(_IOV_MAX)]
                    offered = sum(len(b) for b in batch)
                    written = _writev(fd, batch)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _GONE:
                    self.close()
                    raise StreamClosed from exc
                raise
            written_total += written
            self.size -= written
            left = written
            while left:
                first = chunks[0]
                if len(first) <= left:
                    left -= len(first)
                    chunks.popleft()
                else:
                    chunks[0] = memoryview(first)[left:]
                    left = 0
            if written < offered:
                break  # the descriptor took less than offered: it is full for now
        return written_total
