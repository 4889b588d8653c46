"""The pure parts of the audit trail: decision names, outcomes, the seal, durations, the chain checker."""

from __future__ import annotations

import json
import re

import pytest

from mcp_guard.audit import decision_name, outcome_fields, seal
from mcp_guard.auditlog import parse_since, summarize, unseal, verify


@pytest.mark.parametrize(("action", "kind", "reason", "name"), [
    ("allow", "policy", None, "allowed"),
    ("hide", "default", "Unknown tool", "hidden"),
    ("deny", "policy", "no", "denied"),
    ("deny", "default", "x is not on this policy's list", "denied"),
    ("deny", "rate_limit", "rate limit reached", "rate_limited"),
    ("deny", "budget", "budget exhausted: 3 of 5", "over_budget"),
    ("deny", "budget", "cost 9 is more than the whole budget", "over_budget"),
    ("deny", "budget", "the call has no cost at /a in its arguments", "invalid_arguments"),
    ("deny", "arguments", "argument a: bad", "invalid_arguments"),
    ("deny", "malformed", "arguments is not an object", "invalid_arguments"),
    ("require_approval", "policy", "needs a human", "approval_unavailable"),
])
def test_decision_names(action: str, kind: str, reason: str | None, name: str) -> None:
    assert decision_name(action, kind, reason) == name


def test_outcomes() -> None:
    assert outcome_fields({"result": {}}) == {"outcome": "ok"}
    assert outcome_fields({"result": {"isError": True}}) == {"outcome": "is_error"}
    assert outcome_fields({"error": {"code": -32602, "message": "x"}}) == {"outcome": "error", "error_code": -32602}
    assert outcome_fields(None) == {"outcome": "no_answer"}


def test_a_sealed_line_unseals_to_what_was_hashed() -> None:
    line, digest = seal(b'{"a": 1}')
    assert line == b'{"a": 1, "hash": "' + digest.encode() + b'"}\n'
    assert unseal(line) == (b'{"a": 1}', digest)
    assert unseal(b'{"a": 1}') is None
    assert json.loads(line)["hash"] == digest


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("2d", 172800), ("90", 90)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


def test_a_bad_duration_says_what_is_expected() -> None:
    with pytest.raises(ValueError, match="not a duration such as 30s"):
        parse_since("1 week")


def test_a_line_that_is_no_record_breaks_the_file() -> None:
    line, _ = seal(json.dumps({"session": "s", "seq": 0, "prev": "", "event": "start"}).encode())
    result = verify([line, b'{"session": "s", "se'])
    assert result.broken and result.unreadable == ["line 2: not an audit record (cut short, or edited)"]


def test_summary_counts_approvals_apart() -> None:
    found = summarize([
        {"event": "approval_asked", "tool": "rm", "session": "s", "channel": "elicitation"},
        {"event": "approval_granted", "tool": "rm", "session": "s", "waited_ms": 1200},
        {"event": "call", "tool": "rm", "session": "s", "decision": "allowed", "outcome": "ok", "duration_ms": 3},
        {"event": "approval_declined", "tool": "rm", "session": "s", "waited_ms": 800, "reason": "declined"},
    ])
    assert found["approvals"] == {"approval_asked": 1, "approval_granted": 1, "approval_declined": 1,
                                  "median_wait_ms": 1000.0}
    assert found["by_tool"] == {"rm": {"allowed": 1, "approval_declined": 1}}


def test_a_stalled_disk_never_blocks_and_the_gap_shows(tmp_path) -> None:
    """The audit file is a FIFO nobody reads (a disk that does not take writes): recording stays instant,
    what does not fit in the queue is dropped and counted, and once the writes go through again the next
    record says how many were lost, which verify reports as a gap, with the chain intact."""
    import os
    import threading
    import time

    from mcp_guard.audit import QUEUE_RECORDS, AuditLog

    fifo = tmp_path / "stalled"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    audit = AuditLog(str(fifo))
    started = time.monotonic()
    total = QUEUE_RECORDS + 3000  # the pipe (64 KiB) and the queue fill up
    for index in range(total):
        audit.record("call", tool="echo", index=index, action="allow")
    assert time.monotonic() - started < 2.0  # never waited for the writer
    chunks: list[bytes] = []

    def drain() -> None:
        os.set_blocking(reader, True)
        while chunk := os.read(reader, 1 << 16):
            chunks.append(chunk)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    time.sleep(0.5)
    audit.record("end", how="test")
    audit.close()
    thread.join(10)
    lines = b"".join(chunks).splitlines()
    result = verify(lines)
    assert not result.broken
    check = result.sessions[audit.session]
    lost = total + 1 - check.records
    # What did not fit was dropped; the first record queued after each run of drops says how many, so the
    # gaps add up to what is missing, and each is where it happened (its record's index jumps by as many).
    assert lost > 0 and check.gaps
    counted = 0
    for gap in check.gaps:
        line_number, dropped = re.fullmatch(r"line (\d+): mcp-guard could not write (\d+) record\(s\) before this "
                                            r"one \(its queue was full or the disk refused them\)", gap).groups()
        counted += int(dropped)
        record, before = json.loads(lines[int(line_number) - 1]), json.loads(lines[int(line_number) - 2])
        if record["event"] == "call":
            assert record["index"] - before["index"] == int(dropped) + 1
    assert counted == lost
    assert json.loads(lines[-1])["event"] == "end"


def test_an_approval_record_is_named_by_its_event(tmp_path) -> None:
    """The approval flow calls record(kind, **fields): its event names the decision, whatever else it says."""
    from mcp_guard.audit import AuditLog

    path = tmp_path / "a.jsonl"
    audit = AuditLog(str(path))
    audit.record("approval_declined", request_id=3, tool="rm", action="deny", channel="elicitation", waited_ms=800)
    audit.close()
    record = json.loads(path.read_text())
    assert record["decision"] == "approval_declined" and record["channel"] == "elicitation"
    assert not verify(path.read_bytes().splitlines()).broken
