"""Newline-delimited framing, sans-I/O: bytes in, whole lines out.

`LineFramer.feed(chunk)` returns the complete lines the chunk finished; whoever reads the descriptor (the
relay's pumps, `check -- COMMAND`) owns the I/O. No limit on a line's length below `max_line`; a longer
line comes out as `Oversized` and is skipped as it streams in, never held in memory whole. The cost is
linear in the bytes fed, however a line is cut into chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

# Bytes kept from the start of an oversized line: enough to find its id (wire.head_id).
HEAD_BYTES = 512


@dataclass(slots=True)
class Oversized:
    """A line longer than the limit. Only its first bytes were kept (to find its id); the rest was
    skipped without ever being held in memory whole."""

    size: int
    head: bytes


class LineFramer:
    __slots__ = ("max_line", "_parts", "_parts_len", "_skipping", "_skipped", "_head")

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._parts: list[bytes] = []  # the start of an unfinished line, as it came
        self._parts_len = 0
        self._skipping = False  # inside an oversized line
        self._skipped = 0
        self._head = b""

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held (a reader may read bigger chunks while it grows)."""
        return self._parts_len

    def feed(self, data: bytes) -> list[bytes | Oversized]:
        """The lines `data` completes, without their newline (a CR before it is kept: the relay decides)."""
        if self._parts or self._skipping or len(data) > self.max_line:
            return self._feed_slow(data)
        # The common case, at C speed: whole lines, perhaps the start of one more, none too long.
        lines: list[bytes | Oversized] = data.split(b"\n")  # type: ignore[assignment]
        rest = lines.pop()
        if rest:
            self._parts.append(rest)  # type: ignore[arg-type]
            self._parts_len = len(rest)  # type: ignore[arg-type]
        return lines

    def _feed_slow(self, data: bytes) -> list[bytes | Oversized]:
        out: list[bytes | Oversized] = []
        start = 0
        find = data.find
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            piece = data[start:nl] if start or nl != len(data) - 1 else data[:-1]
            start = nl + 1
            if self._skipping:
                out.append(Oversized(self._skipped + len(piece), self._head))
                self._skipping, self._skipped, self._head = False, 0, b""
                continue
            if self._parts:
                self._parts.append(piece)
                line = b"".join(self._parts)
                self._parts, self._parts_len = [], 0
            else:
                line = piece
            if len(line) > self.max_line:
                out.append(Oversized(len(line), line[:HEAD_BYTES]))
            else:
                out.append(line)
        if start < len(data):
            rest = data[start:] if start else data
            if self._skipping:
                self._skipped += len(rest)
            else:
                self._parts.append(rest)
                self._parts_len += len(rest)
                if self._parts_len > self.max_line:
                    self._head = _head_of(self._parts)
                    self._skipping, self._skipped = True, self._parts_len
                    self._parts, self._parts_len = [], 0
        return out

    def end(self) -> list[bytes | Oversized]:
        """At EOF: a final line without a newline counts too."""
        if self._skipping:
            self._skipping = False
            return [Oversized(self._skipped, self._head)]
        if self._parts:
            line = b"".join(self._parts)
            self._parts, self._parts_len = [], 0
            return [line]
        return []


def _head_of(parts: list[bytes]) -> bytes:
    head = b""
    for part in parts:
        head += part[: HEAD_BYTES - len(head)]
        if len(head) >= HEAD_BYTES:
            break
    return head
