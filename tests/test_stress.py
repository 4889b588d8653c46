"""Concurrency and shutdown under load, through the real `mcp-guard run` binary.

The first test runs many sessions in parallel, each pipelining thousands of requests and ending at a random
moment in a random way (stdin closed, the child crashing or SIGKILLed, SIGTERM, the client closing its
stdout), and checks what docs/relay.md promises: one answer per request, whole lines, bounded exit, the
documented exit status, no child left, no traceback.

The shutdown tests after it were written as known bugs (a pump blocked in a write was neither bounded nor
waited for at shutdown; signals outside the relay's task group hit Python's default handlers); those bugs
are fixed and the tests are regression tests now. The two xfail(strict=True) tests are documented
limitations (docs/reliability.md, docs/relay.md): each passes, and so fails, the day the limit goes.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from wireclient import guard_run, pid_alive

SERVERS = Path(__file__).resolve().parent / "servers"
FAULTY = str(SERVERS / "faulty_server.py")
RAW = str(SERVERS / "relay_raw_server.py")
PY = sys.executable
DRAIN, GRACE = 2.0, 0.5
# drain-timeout + shutdown-grace + SIGTERM's 2 s + slack for a loaded machine
BOUND = DRAIN + GRACE + 2 + 4

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics")


def req(request_id, method="ping", params=None) -> bytes:
    body = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return json.dumps(body).encode() + b"\n"


def guard(*args: str, env=None, stdin=subprocess.PIPE, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(guard_run(*args), stdin=stdin, stdout=subprocess.PIPE,
                            stderr=stderr, env={**os.environ, **(env or {})})


def finish(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


def read_pid(path: Path) -> int | None:
    for _ in range(300):
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            time.sleep(0.01)
    return None


# --- parallel sessions under load ------------------------------------------------------------------


def _session(seed: int, workdir: Path) -> list[str]:
    rnd = random.Random(seed)
    scenario = ["eof", "eof_slowread", "crash", "killchild", "sigterm", "close_stdout"][seed % 6]
    n = rnd.choice([300, 2000, 5000])
    record, pid_file = workdir / f"rec-{seed}", workdir / f"pid-{seed}"
    exit_code = rnd.choice([0, 3])
    env = {"RECORD_FILE": str(record), "PID_FILE": str(pid_file),
           "FAULT": "exit_mid_call" if scenario == "crash" else "none", "EXIT_CODE": str(exit_code)}
    proc = guard("--drain-timeout", str(DRAIN), "--shutdown-grace", str(GRACE), "--", PY, FAULTY, env=env)
    out, err = bytearray(), bytearray()
    slow = scenario == "eof_slowread"
    stop_reading = threading.Event()

    def read_out() -> None:
        assert proc.stdout is not None
        while True:
            if stop_reading.is_set():
                proc.stdout.close()
                return
            if not select.select([proc.stdout], [], [], 0.05)[0]:
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                return
            out.extend(chunk)
            if slow:
                time.sleep(0.01)

    def read_err() -> None:
        assert proc.stderr is not None
        for chunk in iter(lambda: proc.stderr.read1(65536), b""):  # type: ignore[union-attr]
            err.extend(chunk)

    crash_at = rnd.randrange(n) if scenario == "crash" else -1
    lines = [req(i, "tools/call", {"name": "echo", "arguments": {}}) if i == crash_at else req(i)
             for i in range(n)]

    def write() -> None:
        assert proc.stdin is not None
        try:
            for k in range(0, n, 100):
                proc.stdin.write(b"".join(lines[k:k + 100]))
                proc.stdin.flush()
            if scenario in ("eof", "eof_slowread", "crash"):
                proc.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass

    reader = threading.Thread(target=read_out, daemon=True)
    reader.start()
    threading.Thread(target=read_err, daemon=True).start()
    threading.Thread(target=write, daemon=True).start()
    child = read_pid(pid_file)
    time.sleep(rnd.uniform(0.05, 0.5))  # the child is up, so mcp-guard's signal handling is too
    started = time.monotonic()
    if scenario == "killchild" and child:
        os.kill(child, signal.SIGKILL)
    elif scenario == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif scenario == "close_stdout":
        stop_reading.set()
        reader.join(5)
        try:  # something for mcp-guard to answer: that write fails, which ends the session
            proc.stdin.write(req(n))  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError, OSError):
            pass
    problems: list[str] = []
    try:
        rc: int | None = proc.wait(BOUND + 10)
    except subprocess.TimeoutExpired:
        rc = None
        problems.append(f"no exit within {BOUND + 10} s")
        finish(proc)
    took = time.monotonic() - started
    if rc is not None and took > BOUND:
        problems.append(f"exit took {took:.1f} s")
    try:
        proc.stdin.close()  # type: ignore[union-attr]
    except (BrokenPipeError, OSError, ValueError):
        pass
    reader.join(5)
    raw = bytes(out)
    whole, _, tail = raw.rpartition(b"\n")
    if tail and scenario in ("eof", "eof_slowread"):
        # A child crash / kill / SIGTERM may cut the last line of an answer being written as the process
        # ends (bounded by _settle_output, not excluded): tolerated there, never after a clean EOF.
        problems.append(f"stdout ends in a cut line {tail[:60]!r}")
    answers: dict[object, int] = {}
    for line in whole.split(b"\n") if whole else []:
        try:
            message = json.loads(line)
        except ValueError:
            problems.append(f"a line that is not JSON (interleaved?) {line[:80]!r}")
            continue
        answers[message.get("id")] = answers.get(message.get("id"), 0) + 1
    duplicated = [k for k, v in answers.items() if v > 1]
    if duplicated:
        problems.append(f"answered more than once: {duplicated[:5]}")
    stray = [k for k in answers if not (isinstance(k, int) and 0 <= k <= n)]
    if stray:
        problems.append(f"answers to ids never sent: {stray[:5]}")
    if scenario != "close_stdout":
        received = set()
        if record.exists():
            for line in record.read_bytes().splitlines():
                try:
                    received.add(json.loads(line)["id"])
                except (ValueError, KeyError, TypeError):
                    pass
        # Whatever reached the upstream was owed an answer, whichever way the session ended. (A line cut
        # at exit by a crash/kill/SIGTERM may hide one answer.) This is what found the SIGTERM race: what
        # the client sent after the signal was still forwarded, and its answers lost at the exit.
        lost = sorted(received - set(answers))
        if len(lost) > (1 if tail else 0):
            problems.append(f"{len(lost)} request(s) the server received got no answer, e.g. {lost[:5]}")
    if scenario in ("eof", "eof_slowread") and len(answers) != n:
        problems.append(f"{len(answers)} of {n} requests answered after a clean EOF")
    text = err.decode("utf-8", "replace")
    if "Traceback" in text:
        problems.append("traceback: " + text[text.index("Traceback"):][:300])
    if child and pid_alive(child):
        problems.append(f"child {child} still alive")
        os.kill(child, signal.SIGKILL)
    expected = {"eof": {0}, "eof_slowread": {0}, "sigterm": {143}, "killchild": {137, 0},
                "close_stdout": {0}, "crash": {exit_code or 1, 0}}[scenario]
    # killchild / crash: 0 only when every request was already answered as the child went
    if rc is not None and rc not in expected:
        problems.append(f"exit status {rc}, expected one of {sorted(expected)}")
    return [f"seed {seed} ({scenario}, {n} requests, exit {rc}): {p}" for p in problems]


def test_parallel_sessions_end_cleanly_under_load(tmp_path):
    seeds = range(24)
    with ThreadPoolExecutor(4) as pool:
        problems = [p for found in pool.map(lambda s: _session(s, tmp_path), seeds) for p in found]
    assert not problems, "\n".join(problems)


@pytest.mark.platform_matrix  # also in the forced fallback (tests/conftest.py)
def test_thousands_pipelined_with_answers_out_of_order_each_answered_once(tmp_path):
    """5000 calls in flight together, answered all at once in reverse order, then EOF: one answer each."""
    n = 5000
    proc = guard("--", PY, FAULTY, env={"FAULT": "gather", "GATHER": str(n)}, stderr=subprocess.DEVNULL)
    try:
        body = b"".join(req(i, "tools/call", {"name": "echo", "arguments": {"i": i}}) for i in range(n))
        out, _ = proc.communicate(body, timeout=30)
        ids = [json.loads(line)["id"] for line in out.splitlines()]
        assert sorted(ids) == list(range(n))
        assert proc.returncode == 0
    finally:
        finish(proc)


# --- shutdown: regression tests of bugs now fixed, and two documented limitations (strict xfail) -----------


@pytest.mark.platform_matrix  # also in the forced fallback (tests/conftest.py)
def test_sigterm_ends_the_session_even_when_the_client_does_not_read():
    proc = guard("--shutdown-grace", "0.5", "--", PY, RAW, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdin is not None
        proc.stdin.write(req("slow", "raw/sleep", {"seconds": 1000}))
        proc.stdin.write(b"".join(req(i) for i in range(5000)))
        proc.stdin.flush()
        time.sleep(1.5)  # its stdout pipe is full: nobody reads it
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 143
    finally:
        finish(proc)


def test_drain_timeout_bounds_a_session_whose_child_never_reads(tmp_path):
    """Was a known limitation (a strict xfail): the client pump waited in its write to the child and
    never saw the client's EOF. The poll pump stops reading the client instead, and still sees it hang
    up: the drain's clock starts, and the session ends with status 1 (nothing it sent after is answered)."""
    never_reads = tmp_path / "never_reads.py"
    never_reads.write_text("import time\ntime.sleep(1000)\n")
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(b"".join(req(i) for i in range(60000)))  # more than the child's 1 MiB pipe
    with open(requests, "rb") as stdin:
        proc = guard("--drain-timeout", "1", "--shutdown-grace", "0.5", "--", PY, str(never_reads),
                     stdin=stdin, stderr=subprocess.DEVNULL)
    out: list[bytes] = []
    threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True).start()  # type: ignore[union-attr]
    try:
        assert proc.wait(1 + 0.5 + 2 + 3) == 1
    finally:
        finish(proc)


@pytest.mark.platform_matrix  # also in the forced fallback (tests/conftest.py)
def test_child_exit_does_not_cut_an_answer_being_written(tmp_path):
    server = tmp_path / "big_then_exit.py"
    server.write_text(
        "import json, os, sys\n"
        "rid = json.loads(sys.stdin.buffer.readline())['id']\n"
        "data = b'{\"jsonrpc\":\"2.0\",\"id\":' + json.dumps(rid).encode() + b',\"result\":{\"data\":\"'"
        " + b'x' * (8 << 20) + b'\"}}\\n'\n"
        "view = memoryview(data)\n"
        "while view: view = view[os.write(1, view):]\n"
        "os._exit(0)\n")
    proc = guard("--", PY, str(server), stderr=subprocess.DEVNULL)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(req(1, "tools/call", {"name": "x"}))
        proc.stdin.flush()
        got = bytearray()
        while chunk := os.read(proc.stdout.fileno(), 65536):
            got += chunk
            time.sleep(0.03)  # a client reading about 2 MB/s
        assert proc.wait(10) == 0
        assert json.loads(got)["id"] == 1
    finally:
        finish(proc)


@contextmanager
def guard_with_grandchild(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, int]]:
    """mcp-guard in front of the raw server, which has started a grandchild; yields (mcp-guard, its pid).
    Everything is killed afterwards, the grandchild included."""
    proc = guard(*args, "--", PY, RAW, env=env, stderr=subprocess.DEVNULL)
    grandchild = None
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(req(1, "raw/pids"))
        proc.stdin.flush()
        grandchild = json.loads(proc.stdout.readline())["result"]["grandchild"]
        yield proc, grandchild
    finally:
        finish(proc)
        if grandchild and pid_alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


@pytest.mark.platform_matrix  # also in the forced fallback (tests/conftest.py)
def test_sigterm_during_shutdown_grace_leaves_no_orphan():
    with guard_with_grandchild("--shutdown-grace", "3", env={"RELAY_IGNORE_EOF": "1"}) as (proc, grandchild):
        assert proc.stdin is not None
        proc.stdin.close()
        time.sleep(1.0)  # drained; now in upstream.stop, waiting out the grace
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        time.sleep(0.3)
        assert not pid_alive(grandchild)


@pytest.mark.platform_matrix  # also in the forced fallback (tests/conftest.py)
def test_sigkilled_guard_leaves_no_grandchild():
    """PR_SET_PDEATHSIG covers the direct child only; the watchdog (oslayer.py) ends the rest of its group."""
    with guard_with_grandchild() as (proc, grandchild):
        proc.kill()
        proc.wait(5)
        deadline = time.monotonic() + 5
        while pid_alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(grandchild)
