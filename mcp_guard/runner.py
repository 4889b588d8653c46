"""Wires a relay to our own stdin/stdout and a child process. The CLI calls this; tests may too."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio

from .relay import Interceptor, Options, Relay
from .streams import open_nonblocking
from .upstream import Upstream

log = logging.getLogger("mcp_guard")


def run_relay(command: Sequence[str], interceptor: Interceptor | None, options: Options,
              stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Start `command` and relay between (stdin_fd, stdout_fd) and it. Raises StartError."""
    upstream = Upstream.start(command)
    client_in, restore_in = open_nonblocking(stdin_fd)
    client_out, restore_out = open_nonblocking(stdout_fd)
    try:
        relay = Relay(client_in, client_out, upstream, interceptor, options)
        return anyio.run(relay.run)
    finally:
        restore_in()
        restore_out()
