#!/usr/bin/env python3
"""Break one line of the package at a time and check that the test written for it fails (issue 20).

    python scripts/break_lines.py [NAME-PREFIX ...]

Each case replaces one exact piece of source with a broken version, runs the test that guards it, says
whether it failed (caught) or passed (not caught), and restores the file with `git checkout`. Run it on
a clean working tree only. The pieces are the code as it was when the tests were written: when the code
moves on, a case whose piece is no longer found stops with an error and needs its text updating.
scripts/mutation.py does the same thing systematically, for every line of a module.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTICING = "tests/test_noticing.py"
POLICING = "tests/test_policing.py"
SIGKILL_SECOND = "            self.upstream.signal_group(signal.SIGKILL)\n            return"
NOT_DECIDED = "\"mcp-guard could not decide on this request; it was not sent\"))\n"
STATELESS_RETRY = f"{NOTICING}::test_a_stateless_retry_with_its_request_state_is_not_charged_again_and_only_once"
REF_TESTS = (f"{NOTICING} -k ref_outside "
             "tests/test_engine.py::test_unresolvable_ref_is_a_load_error_not_a_crash_per_call")
RETRY_TESTS = f"{NOTICING}::test_retry_after_is_rounded_up {POLICING}::test_rate_limit_refusal_has_retry_after"

# (name, file, exact text, broken text, tests)
CASES = [
    ("1 signal answers in flight", "mcp_guard/relay.py",
     "            self._fail_pending(wire.UPSTREAM_EXITED, reason)\n", "            pass\n",
     "tests/test_faults.py::test_signal_stops_child_and_exits_128_plus_signal"),
    ("2a second signal kills group", "mcp_guard/relay.py", SIGKILL_SECOND, "            return",
     f"{NOTICING}::test_a_second_signal_during_shutdown_kills_the_group_at_once"),
    ("2b exit status stays first", "mcp_guard/relay.py", SIGKILL_SECOND,
     SIGKILL_SECOND.replace("return", "self._exit_code = 128 + signum\n            return"),
     f"{NOTICING}::test_a_second_signal_during_shutdown_kills_the_group_at_once"),
    ("3a $ref to nothing", "mcp_guard/policy.py",
     "            raise PolicyError(file, f\"$ref {ref!r} points to nothing",
     "            return None; raise PolicyError(file, f\"$ref {ref!r} points to nothing", REF_TESTS),
    ("3b $ref outside", "mcp_guard/policy.py", "        if not ref.startswith(\"#\"):\n", "        if False:\n",
     REF_TESTS),
    ("4 big listing shortcut", "mcp_guard/relay.py",
     "if len(line) > LARGE_ANSWER_BYTES and not any(p.watch is not None for p in self.pending_requests.values()):",
     "if len(line) > LARGE_ANSWER_BYTES:", f"{NOTICING}::test_a_listing_over_one_mib_is_still_filtered"),
    ("5 unreadable listing", "mcp_guard/guard.py",
     "            log.warning(\"withheld a tools/list answer that mcp-guard could not read\")\n",
     "            return Forward()\n", f"{NOTICING} -k cannot_read"),
    ("6 fail closed", "mcp_guard/relay.py",
     NOT_DECIDED + "            return\n        if isinstance(action, Defer):",
     NOT_DECIDED + "            action = Forward()\n        if isinstance(action, Defer):",
     f"{NOTICING}::test_an_exception_in_the_decision_fails_closed"),
    ("7a retry rounds (round)", "mcp_guard/guard.py", "math.ceil(decision.retry_after)",
     "round(decision.retry_after)", RETRY_TESTS),
    ("7b retry rounds (int)", "mcp_guard/guard.py", "math.ceil(decision.retry_after)",
     "int(decision.retry_after)", RETRY_TESTS),
    ("8a discover then initialize", "mcp_guard/guard.py",
     "            self.era = \"handshake\"\n            return\n", "            return\n",
     f"{NOTICING}::test_server_discover_then_initialize_is_a_handshake_connection"),
    ("8b exit 126", "mcp_guard/upstream.py", "is not executable: {program}\", 126)",
     "is not executable: {program}\", 127)", f"{NOTICING}::test_a_command_that_is_not_executable_exits_126"),
    ("9a stateless retry not charged", "mcp_guard/guard.py", "            continuation = True\n",
     "            continuation = False\n", STATELESS_RETRY),
    ("9b stateless retry only once", "mcp_guard/guard.py",
     "            del self._continuations[(name, request_state)]\n", "            pass\n", STATELESS_RETRY),
    ("10 requests after a signal", "mcp_guard/relay.py",
     "            if self._upstream_gone or self._stopping is not None:", "            if self._upstream_gone:",
     f"{NOTICING}::test_a_request_read_after_a_signal_is_answered_and_never_forwarded"),
    ("L1 stray id in a debug line", "mcp_guard/wire.py", "    match = _HEAD_ID.match(head)",
     "    match = _HEAD_ID.search(head)",
     f"{POLICING}::test_stray_id_inside_a_malformed_upstream_line_fails_no_request"),
    ("L2 string id answer refund", "mcp_guard/wire.py",
     "    if isinstance(value, str):\n        if len(value) > 15",
     "    if isinstance(value, str):\n        return 's' + value\n        if len(value) > 15",
     f"{POLICING}::test_refund_matches_a_string_id_answer"),
    ("L3 unchanged page bytes", "mcp_guard/guard.py", "        if not hidden:\n            return Forward()\n", "",
     f"{POLICING}::test_unchanged_page_forwarded_as_received"),
]


def main() -> int:
    only = sys.argv[1:]
    missed = 0
    for name, path, old, new, tests in CASES:
        if only and not any(name.startswith(prefix) for prefix in only):
            continue
        full = ROOT / path
        text = full.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"{name}: the text to break is no longer found once in {path}; update the case")
        full.write_text(text.replace(old, new))
        try:
            started = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                   *tests.split()], cwd=ROOT, capture_output=True, text=True, timeout=900)
            lines = done.stdout.strip().splitlines()
            verdict = "FAILS (caught)" if done.returncode == 1 else f"rc={done.returncode} NOT CAUGHT"
            missed += done.returncode != 1
            print(f"{name:32s} {verdict:16s} {time.monotonic() - started:5.1f}s  {lines[-1] if lines else ''}",
                  flush=True)
        finally:
            subprocess.run(["git", "checkout", "--", path], cwd=ROOT, check=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
