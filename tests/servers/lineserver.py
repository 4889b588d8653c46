"""The read loop the raw test servers share: one JSON-RPC line at a time from stdin, each recorded as read
(for tests that check what reached the upstream) and, when it is a JSON object, handed to the server."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, Any


def serve(handle: Callable[[dict[str, Any]], None], record: IO[bytes] | None = None) -> None:
    """Until stdin ends. readline, not iteration: a line is handled as soon as it arrives, never held back
    by read-ahead. Lines that are not JSON objects are recorded and otherwise ignored."""
    stdin = sys.stdin.buffer
    for line in iter(stdin.readline, b""):
        if record is not None:
            record.write(line if line.endswith(b"\n") else line + b"\n")
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict):
            handle(msg)
