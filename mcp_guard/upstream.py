"""The upstream MCP server as a child process: start it, watch it, stop it in the spec's order.

The child gets its own stdin/stdout pipes. Its stderr is our stderr, passed through untouched: inherited
as it is when writing to it cannot block (a terminal, a file), and otherwise (a pipe, a socket: someone
must read it) read by mcp-guard and passed on through the same bounded, non-blocking sink as mcp-guard's
own log (diagnostics.py), so that a stderr nobody reads stops neither the server nor mcp-guard.
It can never outlive mcp-guard: on Linux the kernel kills it when we die (PR_SET_PDEATHSIG), even if
we are SIGKILLed, and every exit path of ours stops it first. It runs in its own process group so that
stopping it also stops what it started (npx -> node, uvx -> python).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from . import diagnostics
from .streams import grow_pipe


class StartError(Exception):
    """The command could not be started. `status` is the conventional shell exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def in_child() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would ever send the signal.
        if os.getppid() != parent_pid:
            os._exit(1)

    return in_child


@dataclass
class Upstream:
    process: subprocess.Popen[bytes]
    stdin_fd: int
    stdout_fd: int
    command: Sequence[str]

    @classmethod
    def start(cls, command: Sequence[str], env: dict[str, str] | None = None) -> Upstream:
        if not command:
            raise StartError("no command given after --", 2)
        program = command[0]
        if os.sep not in program and shutil.which(program) is None:
            raise StartError(f"command not found: {program}", 127)
        pipe_stderr = diagnostics.stderr_may_block()
        try:
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if pipe_stderr else None,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
                bufsize=0,
            )
        except FileNotFoundError:
            raise StartError(f"command not found: {program}", 127) from None
        except PermissionError:
            raise StartError(f"command is not executable: {program}", 126) from None
        except OSError as exc:
            raise StartError(f"cannot start {program}: {exc.strerror or exc}", 126) from None
        assert process.stdin is not None and process.stdout is not None
        stdin_fd, stdout_fd = process.stdin.fileno(), process.stdout.fileno()
        grow_pipe(stdout_fd)
        grow_pipe(stdin_fd)
        if process.stderr is not None:
            # The forwarder owns (and closes at EOF) a descriptor of its own.
            stderr_fd = os.dup(process.stderr.fileno())
            process.stderr.close()
            diagnostics.sink().forward(stderr_fd)
        return cls(process, stdin_fd, stdout_fd, command)

    @property
    def pid(self) -> int:
        return self.process.pid

    def close_stdin(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass

    def poll(self) -> int | None:
        return self.process.poll()

    async def wait(self, timeout: float) -> int | None:
        """Wait up to `timeout` seconds for the child to exit; its return code, or None."""
        with anyio.move_on_after(timeout):
            while True:
                code = self.process.poll()
                if code is not None:
                    return code
                await anyio.sleep(0.01)
        return self.process.poll()

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                pass

    async def stop(self, grace: float, term_grace: float = 2.0) -> int:
        """The MCP stdio shutdown order: close the child's stdin, wait; SIGTERM, wait; SIGKILL.
        What the child started in its process group goes with it."""
        self.close_stdin()
        code = await self.wait(grace)
        if code is None:
            self.signal_group(signal.SIGTERM)
            code = await self.wait(term_grace)
        if code is None:
            self.signal_group(signal.SIGKILL)
            code = await self.wait(5.0)
        else:
            # The child is gone; make sure nothing it started in its group stays behind.
            self.signal_group(signal.SIGKILL)
        if self.process.stdout is not None:
            try:
                self.process.stdout.close()
            except OSError:
                pass
        return code if code is not None else -signal.SIGKILL


def exit_status(code: int) -> int:
    """A shell-style exit status for a child return code (a signal N becomes 128 + N)."""
    return 128 - code if code < 0 else code
