"""The upstream MCP server as a child process: start it, watch it, stop it in the spec's order.

The child gets its own stdin/stdout pipes. Its stderr is our stderr, passed through untouched: inherited
as it is when writing to it cannot block (a terminal, a file), and otherwise (a pipe, a socket: someone
must read it) read by mcp-guard and passed on through the same bounded, non-blocking sink as mcp-guard's
own log (diagnostics.py), so that a stderr nobody reads stops neither the server nor mcp-guard.
It can never outlive mcp-guard: the kernel kills it when we die (Linux: PR_SET_PDEATHSIG; Windows: a Job
Object), a watchdog ends its group on POSIX, even if we are SIGKILLed, and every exit path of ours stops
it first. It runs in its own process group so that stopping it also stops what it started (npx -> node,
uvx -> python). How each of these is done on each OS: oslayer.py and docs/platforms.md.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from . import diagnostics, oslayer

# After SIGTERM, the seconds the child gets before SIGKILL; after SIGKILL, before we stop waiting.
TERM_GRACE = 2.0
KILL_WAIT = 5.0


class StartError(Exception):
    """The command could not be started. `status` is the conventional shell exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upstream:
    process: subprocess.Popen[bytes]
    stdin_fd: int
    stdout_fd: int
    command: Sequence[str]
    child: oslayer.Child

    @classmethod
    def start(cls, command: Sequence[str], env: dict[str, str] | None = None) -> Upstream:
        if not command:
            raise StartError("no command given after --", 2)
        program = command[0]
        argv = oslayer.resolve_program(command)
        if argv is None:
            raise StartError(f"command not found: {program}", 127)
        pipe_stderr = diagnostics.stderr_may_block()
        try:
            child = oslayer.Child.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE if pipe_stderr else None, env=env)
        except FileNotFoundError:
            raise StartError(f"command not found: {program}", 127) from None
        except PermissionError:
            raise StartError(f"command is not executable: {program}", 126) from None
        except OSError as exc:
            raise StartError(f"cannot start {program}: {exc.strerror or exc}", 126) from None
        process = child.process
        assert process.stdin is not None and process.stdout is not None
        stdin_fd, stdout_fd = process.stdin.fileno(), process.stdout.fileno()
        oslayer.binary_mode(stdin_fd, stdout_fd)
        oslayer.grow_pipe(stdout_fd)
        oslayer.grow_pipe(stdin_fd)
        if process.stderr is not None:
            # The forwarder owns (and closes at EOF) a descriptor of its own.
            stderr_fd = os.dup(process.stderr.fileno())
            process.stderr.close()
            diagnostics.sink().forward(stderr_fd)
        return cls(process, stdin_fd, stdout_fd, command, child)

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
        return self.child.poll()

    async def wait(self, timeout: float | None) -> int | None:
        """Wait up to `timeout` seconds for the child to exit; its return code, or None."""
        return await self.child.wait(timeout)

    def terminate_group(self) -> None:
        self.child.terminate_group()

    def kill_group(self) -> None:
        self.child.kill_group()

    async def stop(self, grace: float, term_grace: float = TERM_GRACE) -> int:
        """The MCP stdio shutdown order: close the child's stdin, wait; SIGTERM, wait; SIGKILL.
        What the child started in its process group goes with it."""
        self.close_stdin()
        code = await self.wait(grace)
        if code is None:
            self.terminate_group()
            code = await self.wait(term_grace)
        if code is None:
            self.kill_group()
            code = await self.wait(KILL_WAIT)
        else:
            # The child is gone; make sure nothing it started in its group stays behind.
            self.kill_group()
        self.child.release()
        if self.process.stdout is not None:
            try:
                self.process.stdout.close()
            except OSError:
                pass
        return code if code is not None else -oslayer.SIGKILL


def exit_status(code: int) -> int:
    """A shell-style exit status for a child return code (a signal N becomes 128 + N)."""
    return 128 - code if code < 0 else code
