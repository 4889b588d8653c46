"""The platform layer (mcp_guard/oslayer.py) on real processes, in both modes: native Linux, and the forced
fallback (MCP_GUARD_FORCE_FALLBACK=1) that takes the paths of macOS and Windows: the child's exit seen by a
wait thread instead of a pidfd, no PR_SET_PDEATHSIG, the child alone terminated and killed instead of its
group, and the watchdog as the only thing that ends the child when mcp-guard is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from wireclient import WireProcess, guard_run, pid_alive

from mcp_guard import oslayer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="drives Linux processes")

# A child that ignores SIGTERM (unless told otherwise), starts a grandchild in its own process group,
# prints both pids, then waits for stdin to close.
CHILD = r"""
import os, signal, subprocess, sys
if sys.argv[1] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print(os.getpid(), grandchild.pid, flush=True)
sys.stdin.read()
"""

GRANDCHILD_SERVER = Path(__file__).parent / "servers" / "relay_raw_server.py"


@pytest.fixture(params=["native", "fallback"])
def mode(request, monkeypatch) -> str:
    if request.param == "fallback":
        monkeypatch.setenv(oslayer.FORCE_FALLBACK_ENV, "1")
    else:
        monkeypatch.delenv(oslayer.FORCE_FALLBACK_ENV, raising=False)
    return str(request.param)


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not pid_alive(pid)


def _spawn(behaviour: str) -> tuple[oslayer.Child, int]:
    child = oslayer.Child.spawn([sys.executable, "-c", CHILD, behaviour], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=None)
    assert child.process.stdout is not None
    pid, grandchild = map(int, child.process.stdout.readline().split())
    assert pid == child.pid
    return child, grandchild


def _cleanup(child: oslayer.Child, grandchild: int, monkeypatch) -> None:
    for pid in (child.pid, grandchild):
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    child.wait_blocking(5)
    monkeypatch.delenv(oslayer.FORCE_FALLBACK_ENV, raising=False)
    child.release()  # the watchdog leaves without acting


def test_force_fallback_reads_its_variable(monkeypatch):
    monkeypatch.setenv(oslayer.FORCE_FALLBACK_ENV, "1")
    assert oslayer.force_fallback() and not oslayer.uses_pidfd() and not oslayer.uses_pdeathsig()
    assert not oslayer.signals_process_groups()
    monkeypatch.setenv(oslayer.FORCE_FALLBACK_ENV, "0")
    assert not oslayer.force_fallback() and oslayer.uses_pdeathsig() and oslayer.signals_process_groups()


def test_exit_is_seen_by_a_pidfd_natively_and_by_a_wait_thread_in_fallback(mode, monkeypatch):
    before = {t.name for t in threading.enumerate()}
    child, grandchild = _spawn("obey")
    try:
        watchers = [t for t in threading.enumerate() if t.name == "mcp-guard child watch" and t.name not in before]
        assert bool(watchers) == (mode == "fallback")
        assert child.poll() is None
        assert anyio.run(child.wait, 0.3) is None  # still running: the bound is kept
        assert child.process.stdin is not None
        child.process.stdin.close()
        started = time.monotonic()
        assert anyio.run(child.wait, 10.0) == 0
        assert time.monotonic() - started < 5
        assert child.poll() == 0 and child.wait_blocking(0) == 0
    finally:
        _cleanup(child, grandchild, monkeypatch)


def test_the_exit_status_is_still_known_after_release(mode, monkeypatch):
    child, grandchild = _spawn("obey")
    try:
        assert child.process.stdin is not None
        child.process.stdin.close()
        assert child.wait_blocking(10) == 0
        child.release()
        assert child.poll() == 0 and child.wait_blocking(0) == 0 and anyio.run(child.wait, 1.0) == 0
    finally:
        _cleanup(child, grandchild, monkeypatch)


def test_two_tasks_may_wait_for_the_same_exit(mode, monkeypatch):
    child, grandchild = _spawn("obey")
    codes: list[int | None] = []

    async def both() -> None:
        async def one() -> None:
            codes.append(await child.wait(10.0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
            await anyio.sleep(0.2)
            assert child.process.stdin is not None
            child.process.stdin.close()

    try:
        anyio.run(both)
        assert codes == [0, 0]
    finally:
        _cleanup(child, grandchild, monkeypatch)


def test_terminate_then_kill_reach_the_group_natively_and_the_child_alone_in_fallback(mode, monkeypatch):
    child, grandchild = _spawn("obey")
    try:
        child.terminate_group()
        assert child.wait_blocking(5) == -signal.SIGTERM
        # Native: the grandchild is in the group and got SIGTERM too; fallback: only the child was signalled.
        assert _gone(grandchild, 3) == (mode == "native")
    finally:
        _cleanup(child, grandchild, monkeypatch)


def test_a_child_ignoring_sigterm_is_killed(mode, monkeypatch):
    child, grandchild = _spawn("ignore")
    try:
        child.terminate_group()
        assert child.wait_blocking(0.5) is None
        child.kill_group()
        assert child.wait_blocking(5) == -signal.SIGKILL
        assert _gone(grandchild, 3) == (mode == "native")
    finally:
        _cleanup(child, grandchild, monkeypatch)


def _watchdog_of(guard_pid: int) -> int:
    """The pid of the watchdog mcp-guard started (a shell whose $0 is mcp-guard-watchdog)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                state, ppid = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError, IndexError):
                continue
            if int(ppid) == guard_pid and state != "Z" and b"mcp-guard-watchdog" in cmdline:
                return int(entry)
        time.sleep(0.05)
    raise AssertionError("no watchdog found")


def test_killing_the_group_sends_the_watchdog_away(monkeypatch):
    """Once the whole group has been sent SIGKILL (or is found empty), the watchdog has nothing left to do
    and leaves at once, rather than at mcp-guard's exit (where the group's number may be someone else's)."""
    monkeypatch.delenv(oslayer.FORCE_FALLBACK_ENV, raising=False)
    child, grandchild = _spawn("obey")
    try:
        watchdog = _watchdog_of(os.getpid())
        child.kill_group()
        assert child.wait_blocking(5) == -signal.SIGKILL
        assert _gone(grandchild, 3) and _gone(watchdog, 3)
    finally:
        _cleanup(child, grandchild, monkeypatch)


def _guard_with_server(env: dict[str, str]) -> tuple[WireProcess, int]:
    proc = WireProcess(guard_run("--", sys.executable, str(GRANDCHILD_SERVER)), env={**os.environ, **env})
    proc.send({"jsonrpc": "2.0", "id": 1, "method": "raw/pids"})
    answer = proc.recv(10)
    return proc, int(answer["result"]["pid"])


@pytest.mark.parametrize("fallback", [False, True], ids=["native", "fallback"])
def test_sigkilled_guard_without_its_watchdog_leaves_the_child_only_in_fallback(fallback):
    """What ends the child when mcp-guard is SIGKILLed: natively PR_SET_PDEATHSIG (so the child dies even
    with the watchdog gone); in fallback mode nothing but the watchdog (no PR_SET_PDEATHSIG is set)."""
    proc, server = _guard_with_server({oslayer.FORCE_FALLBACK_ENV: "1" if fallback else "0",
                                      "RELAY_IGNORE_EOF": "1"})
    try:
        os.kill(_watchdog_of(proc.pid), signal.SIGKILL)
        proc.proc.kill()
        proc.proc.wait(5)
        assert _gone(server, 3) != fallback
    finally:
        proc.kill()
        if pid_alive(server):
            os.kill(server, signal.SIGKILL)


@pytest.mark.parametrize("fallback", [False, True], ids=["native", "fallback"])
def test_sigkilled_guard_with_its_watchdog_leaves_nothing(fallback):
    proc, server = _guard_with_server({oslayer.FORCE_FALLBACK_ENV: "1" if fallback else "0",
                                      "RELAY_IGNORE_EOF": "1"})
    try:
        proc.proc.kill()
        proc.proc.wait(5)
        assert _gone(server, 5)
    finally:
        proc.kill()
        if pid_alive(server):
            os.kill(server, signal.SIGKILL)


def test_a_normal_end_sends_the_watchdog_away():
    proc, server = _guard_with_server({})
    watchdog = _watchdog_of(proc.pid)
    assert proc.proc.stdin is not None
    proc.proc.stdin.close()
    assert proc.proc.wait(10) == 0
    assert _gone(watchdog, 5) and _gone(server, 5)


def test_signals_noted_notes_and_restores():
    before = signal.getsignal(signal.SIGTERM)
    with oslayer.signals_noted(oslayer.STOP_SIGNALS) as noted:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    assert noted == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) == before


def test_signals_reach_the_loop_natively_and_through_handlers_in_fallback(mode):
    """oslayer.signal_receiver: anyio's receiver natively; in fallback the Windows path, signal.signal
    handlers that wake the loop through a socket pair. The signal is sent to the main thread from another
    thread while the loop waits, so it is the wake-up that gets it to the loop; the previous handler
    comes back afterwards."""
    assert oslayer.uses_loop_signals() == (mode == "native")
    before = signal.getsignal(signal.SIGUSR1)
    main = threading.main_thread().ident
    assert main is not None

    async def receive() -> list[int]:
        received: list[int] = []
        with oslayer.signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:
            if mode == "fallback":
                assert signal.getsignal(signal.SIGUSR1) not in (before, signal.SIG_DFL)
            for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1):
                threading.Timer(0.1, signal.pthread_kill, (main, signum)).start()
                with anyio.fail_after(10):
                    received.append(await signals.__anext__())
        return received

    assert anyio.run(receive) == [signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1]
    assert signal.getsignal(signal.SIGUSR1) == before


def test_the_joined_write_stands_in_for_writev():
    """Windows has no os.writev: oslayer._write_joined writes the small buffers of a gathered write
    joined (up to 64 KiB), a big one alone (never copied), and returns what was written, as writev would."""
    read_end, write_end = os.pipe()
    oslayer.grow_pipe(write_end)
    try:
        big = b"y" * (200 * 1024)
        assert oslayer._write_joined(write_end, [b"ab", memoryview(b"cd"), big]) == 4
        assert os.read(read_end, 100) == b"abcd"
        assert oslayer._write_joined(write_end, [memoryview(big)[:70000], b"z"]) == 70000
        assert os.read(read_end, 1 << 20) == big[:70000]
        assert oslayer._write_joined(write_end, [b"q" * 40000, b"\n", b"r" * 40000]) == 40001
        assert os.read(read_end, 1 << 20) == b"q" * 40000 + b"\n"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_resolve_program():
    assert oslayer.resolve_program(["definitely-not-a-command-xyz"]) is None
    assert oslayer.resolve_program(["sh", "-c", "true"]) == ["sh", "-c", "true"]  # POSIX: execvp searches
    assert oslayer.resolve_program(["./relative/prog", "x"]) == ["./relative/prog", "x"]


def test_wait_readable_and_writable_on_a_pipe():
    read_end, write_end = os.pipe()
    try:
        assert not oslayer.wait_readable(read_end, 0.05)
        assert oslayer.wait_writable(write_end, 0.05)
        os.write(write_end, b"x")
        assert oslayer.wait_readable(read_end, 0.05)
    finally:
        os.close(read_end)
        os.close(write_end)


@pytest.mark.platform_matrix
def test_the_matrix_hands_the_mode_to_every_guard_started(platform_mode):
    """tests/conftest.py: the mcp-guard processes a `platform_matrix` test starts inherit the mode."""
    assert os.environ.get(oslayer.FORCE_FALLBACK_ENV) == ("1" if platform_mode == "fallback" else None)
