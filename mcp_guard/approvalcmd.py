"""The approval command: asked when the client cannot ask its human (no elicitation), or headless.

The command line (--approval-command, $MCP_GUARD_APPROVAL_COMMAND or the policy's "approval_command") is
run by the shell, in a session of its own, with a JSON description of the call on stdin: server, tool,
arguments, rule, reason. Exit status 0 approves; anything else declines; the first line of its stdout is
the reason shown with the decision. It is killed (POSIX: its whole process group) when the rule's approval
timeout passes, or when the call it decides on is cancelled. It runs in the deferred decision's task,
so the relay moves every other message meanwhile.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream

from . import oslayer
from .approval import Outcome
from .policy import Remember

COMMAND_ENV = "MCP_GUARD_APPROVAL_COMMAND"
# What is read of the command's stdout (its first line is all that is used).
MAX_OUTPUT_BYTES = 64 * 1024
# After the command exits, how long something it started may keep its stdout open before it is not
# waited for.
OUTPUT_GRACE = 0.5
# The shell's exit statuses for a command it could not run (POSIX).
SHELL_FAILURES = {126: "not executable", 127: "not found"}


def description(server: str, tool: str, arguments: Any, rule: str | None, reason: str) -> bytes:
    return json.dumps({"server": server, "tool": tool, "arguments": arguments if arguments is not None else {},
                       "rule": rule, "reason": reason}, ensure_ascii=False).encode("utf-8", "backslashreplace")




async def _read(stream: ByteReceiveStream | None, into: bytearray) -> None:
    if stream is None:
        return
    try:
        async for chunk in stream:
            into += chunk[:MAX_OUTPUT_BYTES - len(into)]
            if len(into) >= MAX_OUTPUT_BYTES or b"\n" in into:
                return  # the first line is all that is used; the rest is not waited for
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        return


async def ask(command: str, payload: bytes, timeout: float, remember: Remember) -> Outcome:
    """Run the command on `payload` and read its verdict (Outcome with channel "command")."""
    try:
        process = await anyio.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=None, start_new_session=True)
    except OSError as exc:
        return Outcome("error", "command", detail=f"the approval command could not be started: {exc.strerror or exc}")
    output = bytearray()
    read_done = anyio.Event()

    async def read() -> None:
        try:
            await _read(process.stdout, output)
        finally:
            read_done.set()

    async def write() -> None:
        if process.stdin is None:
            return
        try:
            await process.stdin.send(payload)
            await process.stdin.aclose()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # it did not read its input: its exit status still decides

    status: int | None = None
    try:
        with anyio.move_on_after(timeout) as deadline:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                tg.start_soon(write)  # in a task: a command that never reads must not hold this one
                status = await process.wait()
                with anyio.move_on_after(OUTPUT_GRACE):
                    await read_done.wait()
                tg.cancel_scope.cancel()
        if deadline.cancelled_caught:
            return Outcome("timeout", "command")
    finally:
        if process.returncode is None:
            oslayer.kill_session(process.pid, exited=False)
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                await process.wait()
        else:
            oslayer.kill_session(process.pid, exited=True)  # whatever it left behind in its session
        with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
            await process.aclose()
    first = output.split(b"\n", 1)[0].decode("utf-8", "replace").strip()[:300]
    reason = "".join(ch if ch.isprintable() else " " for ch in first) or None
    if status == 0:
        return Outcome("granted", "command", remember=remember, detail=reason)
    if status in SHELL_FAILURES and reason is None:
        # The shell's own "cannot execute" / "not found": nobody was asked, which is not a "no".
        return Outcome("error", "command", detail=f"the approval command could not be run (the shell's exit "
                                                  f"status {status}: {SHELL_FAILURES[status]}; see mcp-guard's stderr)")
    return Outcome("declined", "command", detail=reason or f"the approval command exited with status {status}")
