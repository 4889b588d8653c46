"""Wires a relay to our own stdin/stdout and a child process. The CLI calls this; tests may too."""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from .relay import Interceptor, Options, Relay
from .upstream import Upstream


def run_relay(command: Sequence[str], interceptor: Interceptor | None, options: Options,
              stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Start `command` and relay between (stdin_fd, stdout_fd) and it; the exit status. Raises StartError.

    The pump threads may still be blocked reading a peer that is gone when this returns: end the
    process with os._exit rather than waiting for them."""
    upstream = Upstream.start(command)
    relay = Relay(stdin_fd, stdout_fd, upstream, interceptor, options)
    return anyio.run(relay.run)
