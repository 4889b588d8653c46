"""List a server's tools for `mcp-guard check -- COMMAND`: a small synchronous JSON-RPC client.

It speaks the handshake era (initialize), which every MCP server to date accepts, and follows
nextCursor through every page. `timeout` bounds the whole listing, not each wait: a server that keeps
writing notifications but never answers must not keep `check` alive (one deadline, then the server is
stopped without the usual grace).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from typing import Any

from . import oslayer, wire
from .framing import LineFramer
from .options import DEFAULT_MAX_MESSAGE_BYTES
from .streams import READ_CHUNK, read_chunk_blocking
from .upstream import StartError, Upstream
from .watches import read_ambiguous_listing


class ListingError(Exception):
    pass


# Seconds a server gets to exit once the listing is over (stdin closed, then SIGTERM), inside the deadline
# when there is time left, and at most this long after it when there is not.
STOP_GRACE = 2.0
STOP_GRACE_LATE = 0.5
# A line longer than `mcp-guard run` passes by default is not read as an answer here either.
LISTING_MAX_BYTES = DEFAULT_MAX_MESSAGE_BYTES
# Pages of tools/list followed (nextCursor) before the listing stops: a server that never ends its cursor
# must not keep `check` going until its deadline.
MAX_PAGES = 998


def list_tools(command: list[str], timeout: float) -> list[dict[str, Any]]:
    return list_server(command, timeout)[0]


def list_server(command: list[str], timeout: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The server's tools, and its serverInfo from the initialize answer ({} when it gives none)."""
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        return max(0.0, deadline - time.monotonic())

    try:
        upstream = Upstream.start(command)
    except StartError as exc:
        raise ListingError(str(exc)) from None
    lines: queue.Queue[bytes] = queue.Queue()

    def reader() -> None:
        framer = LineFramer(LISTING_MAX_BYTES)
        while True:
            try:
                chunk = read_chunk_blocking(upstream.stdout_fd, READ_CHUNK)
            except OSError:
                break
            for line in framer.feed(chunk) if chunk else framer.end():
                if isinstance(line, bytes) and line.strip():  # b"" means EOF; an oversized line, no answer
                    lines.put(line)
            if not chunk:
                break
        lines.put(b"")

    threading.Thread(target=reader, daemon=True).start()

    def send(message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        view = memoryview(data)
        while view:
            if not oslayer.wait_writable(upstream.stdin_fd, remaining()):
                raise ListingError(f"no tool list within {timeout:g} s (the server does not read its input)")
            try:
                view = view[os.write(upstream.stdin_fd, view):]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise ListingError("the server closed its input") from None

    def answer(request_id: int) -> dict[str, Any]:
        while True:
            try:
                line = lines.get(timeout=remaining())
            except queue.Empty:
                raise ListingError(f"no tool list within {timeout:g} s") from None
            if not line:
                raise ListingError("the server exited before answering")
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
                if not isinstance(wire.parse(line, strict=True), wire.Message):
                    # Read as `mcp-guard run` reads it: duplicate keys, the last kept, when writing it out
                    # again removes the ambiguity; refused when not.
                    read = read_ambiguous_listing(line)
                    if isinstance(read, str):
                        raise ListingError(f"the server's answer is ambiguous ({read}); "
                                           "mcp-guard run refuses it with -32603")
                    message = read
                if "error" in message:
                    raise ListingError(f"the server answered with an error: {message['error']}")
                result: dict[str, Any] = message.get("result") or {}
                return result

    try:
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "mcp-guard-check", "version": "1"}}})
        info = answer(1).get("serverInfo")
        server_info: dict[str, Any] = info if isinstance(info, dict) else {}
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        tools: list[dict[str, Any]] = []
        cursor = None
        for request_id in range(2, 2 + MAX_PAGES):
            params: dict[str, Any] = {"cursor": cursor} if cursor else {}
            send({"jsonrpc": "2.0", "id": request_id, "method": "tools/list", "params": params})
            result = answer(request_id)
            page = result.get("tools")
            if not isinstance(page, list):
                raise ListingError("the server's tools/list result has no tools array")
            tools += [tool for tool in page if isinstance(tool, dict) and isinstance(tool.get("name"), str)]
            cursor = result.get("nextCursor")
            if not cursor:
                break
        return tools, server_info
    finally:
        # The stdio shutdown order, then what the server started goes with it (its process group), and
        # the watchdog is told it has nothing left to do (docs/platforms.md).
        child = upstream.child
        upstream.close_stdin()
        if child.wait_blocking(min(STOP_GRACE, max(remaining(), STOP_GRACE_LATE / 2))) is None:
            upstream.terminate_group()
            child.wait_blocking(min(STOP_GRACE, max(remaining(), STOP_GRACE_LATE / 2)))
        upstream.kill_group()
        child.wait_blocking(None)
        child.release()
