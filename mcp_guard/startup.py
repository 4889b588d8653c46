"""When `mcp-guard run` cannot start (a bad policy, no policy), tell the MCP client why, not only stderr.

Claude Desktop and similar clients show "server disconnected" and keep the reason in a log file nobody
reads. So before exiting, mcp-guard waits a few seconds for the client's first request and answers it
with a JSON-RPC error carrying the same one-line message. The server is never started.
"""

from __future__ import annotations

import os
import time

from . import oslayer, wire

# How long a client is given to send its first request. Clients send `initialize` (or, stateless,
# `server/discover`) at once; a person at a terminal is not waited for at all.
FIRST_REQUEST_WAIT = 5.0


def answer_first_request(message: str, wait: float = FIRST_REQUEST_WAIT, stdin_fd: int = 0,
                         stdout_fd: int = 1) -> bool:
    """Answer the first request read from `stdin_fd` within `wait` seconds with an error carrying
    `message`; True when one was answered. Notifications before it are skipped; EOF ends the wait."""
    try:
        if os.isatty(stdin_fd):
            return False
    except OSError:
        return False
    deadline = time.monotonic() + wait
    buffer = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if not oslayer.wait_readable(stdin_fd, left):
            return False
        try:
            chunk = os.read(stdin_fd, 65536)
        except BlockingIOError:
            continue
        except OSError:
            return False
        if not chunk:
            return False
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        if len(buffer) > 1024 * 1024:  # not a line a client sends first; nobody to answer
            return False
        for line in lines:
            parsed = wire.parse(line.rstrip(b"\r"), strict=False)
            if isinstance(parsed, wire.Message) and parsed.kind == "request":
                answer = wire.error_response(parsed.id, wire.GUARD_NOT_STARTED, message)
                try:
                    _write_all(stdout_fd, answer + b"\n")
                except OSError:
                    return False
                return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    deadline = time.monotonic() + 2.0
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise OSError("the client does not read") from None
            oslayer.wait_writable(fd, 0.1)
