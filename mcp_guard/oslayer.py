"""Everything that differs between Linux, macOS and Windows, in one place (docs/platforms.md).

The rest of the package asks this module, and imports neither `fcntl`, `select`, `ctypes`, `msvcrt`
nor signal numbers itself, so that it imports on every OS (tests/test_platform_imports.py keeps it so).

- The child: started in a process group of its own (POSIX: a new session; Windows: a new process group
  and a Job Object that kills it when mcp-guard's last handle closes, Windows' PR_SET_PDEATHSIG); on
  Linux the kernel kills it if mcp-guard dies (PR_SET_PDEATHSIG); elsewhere on POSIX a watchdog does.
- Stopping it: terminate its group, then kill its group (POSIX: killpg; Windows: a console break, then
  the Job).
- Its exit: a pidfd on Linux (no thread); elsewhere a thread blocked in `wait()`.
- Descriptors: waiting for one, polling many (the poll pump, POSIX only: `can_poll`), blocking or not,
  gathered writes, wake-ups between threads, binary stdio, pipe sizes.
- Signals: which exist (`STOP_SIGNALS`, `SIGHUP`), and receiving them on the event loop
  (`signal_receiver`).

MCP_GUARD_FORCE_FALLBACK=1 (read here only, `force_fallback()`) makes Linux take the paths the other
systems take: no pidfd (the wait thread), no PR_SET_PDEATHSIG (the watchdog alone), terminate and kill
of the child process instead of its group, and the threaded pumps (the relay asks `force_fallback()`).
It exists so that the non-Linux paths are exercised on Linux, where the tests run.
"""

from __future__ import annotations

import functools
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

FORCE_FALLBACK_ENV = "MCP_GUARD_FORCE_FALLBACK"

WINDOWS = sys.platform == "win32"
LINUX = sys.platform.startswith("linux")
POSIX = not WINDOWS

SIGTERM: int = signal.SIGTERM
# Windows has no SIGKILL; 9 is what a killed child's return code says on POSIX (-9), and what
# `exit_status` turns into 137.
SIGKILL: int = getattr(signal, "SIGKILL", 9)

# The signals that end a session, those of them this OS has (Windows has no SIGHUP; SIGBREAK is its
# Ctrl-Break, delivered to a console process group).
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK") if hasattr(signal, name))
# The policy's reload signal where there is one (POSIX); None on Windows, which reloads on the file's
# change alone.
SIGHUP: signal.Signals | None = getattr(signal, "SIGHUP", None)

# poll(2)'s event bits for the poll pump; their usual numbers where `select` lacks them (Windows), so
# that the pump's module imports there too (it never runs there: `can_poll`).
POLLIN: int = getattr(select, "POLLIN", 0x001)
POLLOUT: int = getattr(select, "POLLOUT", 0x004)
POLLERR: int = getattr(select, "POLLERR", 0x008)
POLLHUP: int = getattr(select, "POLLHUP", 0x010)

PIPE_SIZE = 1024 * 1024  # asked of Linux for the child's pipes: fewer wake-ups for large messages
_PEEK_INTERVAL = 0.01  # Windows: how often a pipe is looked at while waiting for it to become readable
_WAIT_SLICE = 1.0  # the wait thread's slices, so that an abandoned waiter ends by itself
_RELEASED_POLL = 0.05  # how often a child still running after release() is looked at
_PR_SET_PDEATHSIG = 1
_F_SETPIPE_SZ = 1031  # Linux's fcntl number, for Pythons whose fcntl does not name it
_JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
_JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9
_CREATE_NEW_PROCESS_GROUP = 0x00000200


def force_fallback() -> bool:
    """Whether MCP_GUARD_FORCE_FALLBACK=1 asks Linux to take the paths of the other systems."""
    return os.environ.get(FORCE_FALLBACK_ENV, "") == "1"


def uses_pidfd() -> bool:
    return LINUX and hasattr(os, "pidfd_open") and not force_fallback()


def uses_pdeathsig() -> bool:
    return LINUX and not force_fallback()


def can_poll() -> bool:
    """Whether pipes can be polled (poll(2), POSIX). Windows' `select` takes sockets only."""
    return POSIX and hasattr(select, "poll")


def signals_process_groups() -> bool:
    """Whether the child's whole process group is signalled (POSIX), or the child alone."""
    return POSIX and not force_fallback()


def uses_watchdog() -> bool:
    """A POSIX system without PR_SET_PDEATHSIG covering the group: the watchdog ends the child's group
    when mcp-guard disappears, even SIGKILLed. On Linux it also covers what PR_SET_PDEATHSIG does not:
    the child's own children."""
    return POSIX


@contextmanager
def signals_noted(signums: Sequence[int]) -> Iterator[list[int]]:
    """While inside, the given signals are only noted (in the list yielded), not acted on; the previous
    handlers come back afterwards. Must be used from the main thread."""
    noted: list[int] = []

    def note(signum: int, frame: Any) -> None:
        noted.append(signum)

    previous = {signum: signal.signal(signum, note) for signum in signums}
    try:
        yield noted
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# --- descriptors ---------------------------------------------------------------------------------------

def grow_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Ask Linux for a bigger pipe buffer: fewer wake-ups for multi-megabyte messages. Elsewhere nothing."""
    if not LINUX:
        return
    import fcntl

    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", _F_SETPIPE_SZ), size)
    except OSError:
        pass


def binary_mode(*fds: int) -> None:
    """Bytes in, bytes out: on Windows a descriptor may translate newlines (text mode); not these."""
    if sys.platform == "win32":
        import msvcrt

        for fd in fds:
            try:
                msvcrt.setmode(fd, os.O_BINARY)
            except OSError:
                pass


def set_blocking(fd: int, blocking: bool) -> bool:
    """Set O_NONBLOCK off or on; whether the descriptor was blocking before. Windows pipes are always
    blocking (and Python before 3.12 cannot ask): there nothing is changed."""
    if WINDOWS:
        return True
    try:
        was = os.get_blocking(fd)
        if was != blocking:
            os.set_blocking(fd, blocking)
        return was
    except OSError:
        return True


def poller() -> select.poll:
    """A new poll object, for the poll pump (only where `can_poll()`)."""
    return select.poll()


_JOINED_WRITE = 64 * 1024  # Windows: the small buffers of one gathered write are joined up to this


def _write_joined(fd: int, buffers: Sequence[bytes | memoryview]) -> int:
    """os.writev where there is none (Windows): the first buffer alone when it is big (never copied),
    else the small ones that fit in one joined write. Returns what `os.write` took, as writev would."""
    first = buffers[0]
    if len(first) >= _JOINED_WRITE:
        return os.write(fd, first)
    batch: list[bytes | memoryview] = []
    size = 0
    for buffer in buffers:
        if batch and size + len(buffer) > _JOINED_WRITE:
            break
        batch.append(buffer)
        size += len(buffer)
    return os.write(fd, b"".join(batch))


# A gathered write: one system call for many buffers (POSIX), or its stand-in. Bound once: callers on
# the hot path take it at import.
writev: Callable[[int, Sequence[bytes | memoryview]], int] = getattr(os, "writev", _write_joined)


class Wakeup:
    """Wakes a thread or the event loop that waits on a descriptor (poll, or `anyio.wait_readable`) when
    work is queued for it from another thread or from a signal handler. One byte per batch of work, not
    per item. A pipe on POSIX; on Windows (and in forced fallback) a socket pair, the only descriptors
    Windows' event loop can wait on.

    `wake`: read after the work was queued: if the flag is still set, the waiter has not yet cleared
    it, so it will see the work; if not, this byte wakes it. No wake-up is ever lost."""

    __slots__ = ("read_fd", "_signalled", "_send", "_receive", "_close")

    def __init__(self, sockets: bool | None = None) -> None:
        if sockets is None:
            sockets = WINDOWS or force_fallback()
        self._signalled = False
        if sockets:
            reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            self.read_fd = reader.fileno()
            self._send: Callable[[bytes], int] = writer.send
            self._receive: Callable[[int], bytes] = reader.recv
            self._close: list[Callable[[], None]] = [reader.close, writer.close]
        else:
            read_fd, write_fd = os.pipe()
            os.set_blocking(read_fd, False)
            os.set_blocking(write_fd, False)
            self.read_fd = read_fd
            # partial over the builtins: no Python frame of ours per wake-up
            self._send = functools.partial(os.write, write_fd)
            self._receive = functools.partial(os.read, read_fd)
            self._close = [functools.partial(os.close, read_fd), functools.partial(os.close, write_fd)]

    def wake(self) -> None:
        if not self._signalled:
            self._signalled = True
            try:
                self._send(b"\0")
            except OSError:
                pass  # full (it is awake anyway) or closed (nobody waits any more)

    def clear(self) -> None:
        """Called by the waiter before it takes the queued work. The descriptor is emptied before the
        flag is lowered: the other way round, a byte written in between would be read here with the flag
        left raised, and the next `wake` would write nothing (a lost wake-up)."""
        try:
            while self._receive(4096):
                pass
        except OSError:
            pass
        self._signalled = False

    def close(self) -> None:
        for close in self._close:
            try:
                close()
            except OSError:
                pass
        self._close = []


def uses_loop_signals() -> bool:
    """Whether the event loop receives signals itself (asyncio's add_signal_handler, POSIX), or
    `signal.signal` handlers hand them over (Windows, where asyncio has no signal handling, and forced
    fallback)."""
    return POSIX and not force_fallback()


@contextmanager
def signal_receiver(*signums: signal.Signals) -> Iterator[AsyncIterator[int]]:
    """The given signals as they arrive, on the event loop (an async iterator), while inside.
    POSIX: anyio's receiver. Windows (and forced fallback, so that this path runs where the tests run):
    `signal.signal` handlers, which Python runs in the main thread between two bytecodes, queue the
    signal and wake the loop through a socket pair (asyncio's loop wakes for a signal on Windows, and
    Ctrl-C / Ctrl-Break arrive as SIGINT / SIGBREAK); the previous handlers come back afterwards.
    Must be entered in the main thread, which runs the event loop."""
    if uses_loop_signals():
        import anyio  # imported where used: `--version`, `check` and `explain` never need it

        with anyio.open_signal_receiver(*signums) as received:
            yield received
        return
    handed = _HandedSignals()
    previous = {signum: signal.signal(signum, handed.note) for signum in signums}
    try:
        yield handed
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        handed.close()


class _HandedSignals:
    """Signals noted by a handler, taken on the loop. The handler may run between any two bytecodes of
    `__anext__` (same thread): it queues before it wakes, and the queue is looked at after each clear,
    so a signal is never left waiting for the next one."""

    def __init__(self) -> None:
        self._queued: deque[int] = deque()
        self._wakeup = Wakeup(sockets=True)

    def note(self, signum: int, frame: Any) -> None:
        self._queued.append(signum)
        self._wakeup.wake()

    def __aiter__(self) -> _HandedSignals:
        return self

    async def __anext__(self) -> int:
        import anyio

        while not self._queued:
            await anyio.wait_readable(self._wakeup.read_fd)
            self._wakeup.clear()
        return self._queued.popleft()

    def close(self) -> None:
        self._wakeup.close()


def wait_readable(fd: int, timeout: float | None) -> bool:
    """Wait until `fd` can be read without blocking (data, EOF or an error), at most `timeout` seconds
    (None: no limit); whether it can."""
    if WINDOWS:
        return _windows_wait_readable(fd, timeout)
    return _poll(fd, writable=False, timeout=timeout)


def wait_writable(fd: int, timeout: float | None) -> bool:
    """Wait until a write to `fd` can make progress, at most `timeout` seconds; whether it can. (Windows
    pipes are never non-blocking: a write there simply blocks, so this says yes at once.)"""
    if WINDOWS:
        return True
    return _poll(fd, writable=True, timeout=timeout)


def _poll(fd: int, writable: bool, timeout: float | None) -> bool:
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLOUT if writable else select.POLLIN)
        try:
            return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000))))
        except OSError:
            return True  # let the read or write itself report the problem
    try:
        ready = select.select([] if writable else [fd], [fd] if writable else [], [], timeout)
    except (OSError, ValueError):
        return True
    return bool(ready[0] or ready[1])


def _windows_wait_readable(fd: int, timeout: float | None) -> bool:
    if sys.platform == "win32":  # (for the type checker: the Windows-only modules below)
        import ctypes
        import msvcrt
        import time
        from ctypes import wintypes

        if timeout is None:
            return True  # the read that follows blocks until there is something
        try:
            handle = msvcrt.get_osfhandle(fd)
        except OSError:
            return True
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        available = wintypes.DWORD()
        deadline = time.monotonic() + timeout
        while True:
            if not kernel32.PeekNamedPipe(wintypes.HANDLE(handle), None, 0, None, ctypes.byref(available), None):
                return True  # not a pipe (a file, a console), or a broken one: the read tells
            if available.value:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_PEEK_INTERVAL)
    return True


# --- the child -----------------------------------------------------------------------------------------

def resolve_program(command: Sequence[str]) -> list[str] | None:
    """The command with its program found on PATH (Windows: with PATHEXT, so `npx` is npx.cmd, which
    CreateProcess would not find by itself); None when it is nowhere. A program given with a directory
    is taken as it is."""
    import shutil

    program = command[0]
    if os.path.dirname(program) or (WINDOWS and "/" in program):
        return list(command)
    found = shutil.which(program)
    if found is None:
        return None
    return [found, *command[1:]] if WINDOWS else list(command)


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """PR_SET_PDEATHSIG: the kernel SIGKILLs the child when mcp-guard dies, however it dies."""
    if not uses_pdeathsig():
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would ever send the signal.
        if os.getppid() != parent_pid:
            os._exit(1)

    return in_child


def kill_session(pid: int, exited: bool) -> None:
    """End at once a process started with `start_new_session` and what it started (the approval command):
    POSIX: SIGKILL to its process group (what it left behind, even after it `exited`). Windows has no such
    group: the process alone, and only while it has not `exited` (its pid may be someone else's by then)."""
    if POSIX:
        try:
            os.killpg(pid, SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    elif not exited:
        try:
            os.kill(pid, SIGKILL)  # Windows: TerminateProcess
        except OSError:
            pass


class Child:
    """A child process in a group of its own, with what this OS offers to watch it and stop it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._job: Any = None  # Windows: the Job Object's handle
        self._watchdog_fd = -1  # POSIX: the pipe whose closing tells the watchdog that mcp-guard is gone
        self._pidfd = -1
        self._exited = threading.Event()
        if uses_pidfd():
            try:
                self._pidfd = os.pidfd_open(process.pid)
            except OSError:
                self._pidfd = -1
        self._threaded = self._pidfd < 0  # the exit is seen by a thread blocked in wait(), which reaps it
        if self._threaded:
            threading.Thread(target=self._wait_thread, name="mcp-guard child watch", daemon=True).start()

    @classmethod
    def spawn(cls, argv: Sequence[str], stdin: int, stdout: int, stderr: int | None,
              env: dict[str, str] | None = None) -> Child:
        """Start `argv` in its own process group. Raises OSError as Popen does."""
        options: dict[str, Any] = {}
        if WINDOWS:
            options["creationflags"] = _CREATE_NEW_PROCESS_GROUP
        else:
            options["start_new_session"] = True
            options["preexec_fn"] = _die_with_parent(os.getpid())
        process = subprocess.Popen(list(argv), stdin=stdin, stdout=stdout, stderr=stderr, env=env, bufsize=0,
                                   **options)
        child = cls(process)
        if WINDOWS:
            child._job = _windows_job(process)
        elif uses_watchdog():
            child._watchdog_fd = _start_watchdog(process.pid)
        return child

    @property
    def pid(self) -> int:
        return self.process.pid

    # --- its exit ---

    def _wait_thread(self) -> None:
        self.process.wait()
        self._exited.set()

    def poll(self) -> int | None:
        """Its return code, or None while it runs (never blocks)."""
        if self._threaded:
            return self.process.returncode if self._exited.is_set() else None
        return self.process.poll()

    def wait_blocking(self, timeout: float | None) -> int | None:
        """Wait up to `timeout` seconds (None: for ever) in this thread; its return code, or None."""
        if self._threaded:
            self._exited.wait(timeout)
            return self.poll()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    async def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to `timeout` seconds (None: until it exits) on the event loop; its return code, or None.
        Linux: a pidfd the loop watches; elsewhere the wait thread's event, waited for in a worker thread."""
        import anyio
        import anyio.to_thread

        with anyio.move_on_after(timeout):
            while self.poll() is None:
                if self._threaded:
                    await anyio.to_thread.run_sync(self._exited.wait, _WAIT_SLICE, abandon_on_cancel=True)
                elif self._pidfd >= 0:
                    # A descriptor of this call's own: two tasks may wait at once.
                    fd = os.dup(self._pidfd)
                    try:
                        await anyio.wait_readable(fd)
                    finally:
                        os.close(fd)
                else:  # released (its pidfd closed) while it still runs: only after a failed kill
                    await anyio.sleep(_RELEASED_POLL)
        return self.poll()

    # --- stopping it ---

    def terminate_group(self) -> None:
        """Ask the child and its group to end (POSIX: SIGTERM to the group; Windows: Ctrl-Break to its
        process group, else TerminateProcess). Forced fallback: SIGTERM to the child alone."""
        if WINDOWS:
            try:
                os.kill(self.process.pid, getattr(signal, "CTRL_BREAK_EVENT", 1))
                return
            except OSError:
                pass  # no console shared with the child: the only way left is TerminateProcess
        self._signal(SIGTERM)

    def kill_group(self) -> None:
        """End the child and everything in its group now (POSIX: SIGKILL to the group; Windows: the Job).
        Forced fallback: SIGKILL to the child alone."""
        if WINDOWS and self._job is not None and _windows_terminate_job(self._job):
            return
        self._signal(SIGKILL)

    def _signal(self, sig: int) -> None:
        if signals_process_groups():
            try:
                os.killpg(self.process.pid, sig)
                if sig == SIGKILL:
                    self._disarm_watchdog()  # the whole group is ending: nothing left for it to do
                return
            except ProcessLookupError:
                self._disarm_watchdog()  # the group is empty
            except PermissionError:
                pass
        if self.poll() is not None:
            return  # reaped: its pid may belong to someone else by now
        try:
            if WINDOWS and sig == SIGKILL:
                self.process.kill()
            elif WINDOWS:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
        except (ProcessLookupError, OSError):
            pass

    def release(self) -> None:
        """mcp-guard has stopped the child itself: the watchdog can go without acting, descriptors close.
        Forced fallback keeps the watchdog armed until mcp-guard exits: there it stands in for the Job
        Object, whose closing at exit ends what the child started (the child alone was signalled)."""
        if not force_fallback():
            self._disarm_watchdog()
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


    def _disarm_watchdog(self) -> None:
        if self._watchdog_fd >= 0:
            try:
                os.write(self._watchdog_fd, b"stop\n")
            except OSError:
                pass
            os.close(self._watchdog_fd)
            self._watchdog_fd = -1


# The watchdog: a shell blocked reading a pipe only mcp-guard holds the other end of. When mcp-guard goes,
# however it goes (SIGKILL included), the read sees end-of-file and the child's group is killed; a normal
# stop writes a line first, and the shell leaves without acting (the group may be gone, its number reused).
_WATCHDOG_SCRIPT = 'read line || kill -9 -"$1" 2>/dev/null'


def _start_watchdog(pgid: int) -> int:
    read_end, write_end = os.pipe()  # not inherited by anything else mcp-guard starts
    try:
        subprocess.Popen(["/bin/sh", "-c", _WATCHDOG_SCRIPT, "mcp-guard-watchdog", str(pgid)], stdin=read_end,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        os.close(write_end)
        return -1
    finally:
        os.close(read_end)
    return write_end


def _windows_job(process: subprocess.Popen[bytes]) -> Any:
    """A Job Object with kill-on-close holding the child: when mcp-guard's handle to it closes (mcp-guard
    exits, however), Windows ends every process in it. What the child starts joins the job (unless it
    breaks away). The child runs for a moment before it is assigned: what it starts in that moment is
    outside the job."""
    if sys.platform == "win32":
        import ctypes
        from ctypes import wintypes

        class BasicLimits(ctypes.Structure):
            _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64), ("PerJobUserTimeLimit", ctypes.c_int64),
                        ("LimitFlags", wintypes.DWORD), ("MinimumWorkingSetSize", ctypes.c_size_t),
                        ("MaximumWorkingSetSize", ctypes.c_size_t), ("ActiveProcessLimit", wintypes.DWORD),
                        ("Affinity", ctypes.c_size_t), ("PriorityClass", wintypes.DWORD),
                        ("SchedulingClass", wintypes.DWORD)]

        class IoCounters(ctypes.Structure):
            _fields_ = [(name, ctypes.c_uint64) for name in (
                "ReadOperationCount", "WriteOperationCount", "OtherOperationCount", "ReadTransferCount",
                "WriteTransferCount", "OtherTransferCount")]

        class ExtendedLimits(ctypes.Structure):
            _fields_ = [("BasicLimitInformation", BasicLimits), ("IoInfo", IoCounters),
                        ("ProcessMemoryLimit", ctypes.c_size_t), ("JobMemoryLimit", ctypes.c_size_t),
                        ("PeakProcessMemoryUsed", ctypes.c_size_t), ("PeakJobMemoryUsed", ctypes.c_size_t)]

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.CreateJobObjectW.restype = wintypes.HANDLE
        job = kernel32.CreateJobObjectW(None, None)
        if not job:
            return None
        limits = ExtendedLimits()
        limits.BasicLimitInformation.LimitFlags = _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not kernel32.SetInformationJobObject(wintypes.HANDLE(job), _JOB_OBJECT_EXTENDED_LIMIT_INFORMATION,
                                                ctypes.byref(limits), ctypes.sizeof(limits)):
            kernel32.CloseHandle(wintypes.HANDLE(job))
            return None
        if not kernel32.AssignProcessToJobObject(wintypes.HANDLE(job), wintypes.HANDLE(int(process._handle))):
            kernel32.CloseHandle(wintypes.HANDLE(job))
            return None
        return job  # never closed by hand: its closing at mcp-guard's exit is what kills the child
    return None


def _windows_terminate_job(job: Any) -> bool:
    if sys.platform == "win32":
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        return bool(kernel32.TerminateJobObject(wintypes.HANDLE(job), 1))
    return False

