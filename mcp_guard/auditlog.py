"""Reading an audit file: the hash chain checked (`verify`) and the records counted (`summarize`).

Each line is one record, sealed by audit.py: its last member is the SHA-256 of the line's other bytes
(`hash`), and it carries its session's sequence number (`seq`, from 0) and the hash of the record before
it in its session (`prev`). Sessions may interleave (several mcp-guard processes appending to one file).
A line whose bytes do not match its hash was edited; a sequence number that skips was removed, or
was reordered when it comes later; a record that mcp-guard could not write takes no number, and the next
one written says how many were lost (`dropped`: a full queue or disk), which verify reports as a gap;
a record whose `prev` is not the hash of the line before it follows something else.

What a chain without a secret cannot show: a whole session removed, or a session's last records removed
or rewritten with their hashes made again. Keep the file where mcp-guard can append but not rewrite, or
note a session's last hash elsewhere (`verify --json` gives it).
"""

from __future__ import annotations

import calendar
import hashlib
import json
import math
import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .audit import HASH_SUFFIX

_SUFFIX = HASH_SUFFIX.encode()
_HEX = re.compile(rb"[0-9a-f]{64}")


def unseal(line: bytes) -> tuple[bytes, str] | None:
    """(the bytes the hash was made of, the hash written) of a sealed line; None when it has no seal."""
    line = line.rstrip(b"\r\n")
    tail = len(_SUFFIX) + 64 + 2
    if len(line) < tail + 2 or not line.endswith(b'"}') or line[-tail:-66] != _SUFFIX:
        return None
    digest = line[-66:-2]
    if not _HEX.fullmatch(digest):
        return None
    return line[:-tail] + b"}", digest.decode()


@dataclass(slots=True)
class Line:
    number: int  # 1-based, in the file
    seq: int
    prev: str
    digest: str
    dropped: int
    event: str


@dataclass
class SessionCheck:
    session: str
    records: int = 0
    first_line: int = 0
    last_line: int = 0
    last_hash: str = ""
    ended: bool = False
    problem: str | None = None  # the first break found in this session's chain
    gaps: list[str] = field(default_factory=list)  # records mcp-guard says it could not write


@dataclass
class Verification:
    sessions: dict[str, SessionCheck] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # lines that are no record of any session

    @property
    def broken(self) -> bool:
        return bool(self.unreadable) or any(s.problem for s in self.sessions.values())

    @property
    def gaps(self) -> bool:
        return any(s.gaps for s in self.sessions.values())


def verify(lines: Iterable[bytes]) -> Verification:
    result = Verification()
    by_session: dict[str, list[Line]] = defaultdict(list)
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        sealed = unseal(raw)
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("session"), str):
            result.unreadable.append(f"line {number}: not an audit record (cut short, or edited)")
            continue
        session = record["session"]
        check = result.sessions.setdefault(session, SessionCheck(session, first_line=number))
        if sealed is None or hashlib.sha256(sealed[0]).hexdigest() != sealed[1]:
            if check.problem is None:
                check.problem = f"line {number}: edited (its content does not match its hash)"
            continue
        seq, prev, dropped = record.get("seq"), record.get("prev"), record.get("dropped", 0)
        if not isinstance(seq, int) or not isinstance(prev, str) or not isinstance(dropped, int):
            if check.problem is None:
                check.problem = f"line {number}: edited (no sequence number or previous hash)"
            continue
        by_session[session].append(Line(number, seq, prev, sealed[1], dropped, str(record.get("event"))))
    for session, entries in by_session.items():
        _check_chain(result.sessions[session], entries)
    return result


def _check_chain(check: SessionCheck, entries: list[Line]) -> None:
    expected, last_hash, last_line = 0, "", 0
    later = {entry.seq for entry in entries}
    for index, entry in enumerate(entries):
        check.records += 1
        check.last_line = entry.number
        if check.problem is not None:
            continue
        if entry.seq < expected:
            check.problem = (f"line {entry.number}: reordered (record {entry.seq} comes after record "
                             f"{expected - 1}, at line {last_line})")
        elif entry.seq > expected:
            missing = range(expected, entry.seq)
            if any(seq in later and seq not in (e.seq for e in entries[:index]) for seq in missing):
                check.problem = (f"line {entry.number}: reordered (record {entry.seq} comes before record "
                                 f"{missing[0]})")
            else:
                count = len(missing)
                check.problem = (f"line {entry.number}: {count} record(s) removed before it (records "
                                 f"{missing[0]}..{missing[-1]} are missing" +
                                 (f"; line {last_line} is the one before)" if last_line else ")"))
        elif entry.prev != last_hash:
            before = f"line {last_line}" if last_line else "the session's start"
            check.problem = (f"line {entry.number}: does not follow {before} (that line was edited, or "
                             "records were put in between)")
        if check.problem is not None:
            continue
        if entry.dropped:
            check.gaps.append(f"line {entry.number}: mcp-guard could not write {entry.dropped} record(s) "
                              "before this one (its queue was full or the disk refused them)")
        expected, last_hash, last_line = entry.seq + 1, entry.digest, entry.number
        check.last_hash = entry.digest
        if entry.event == "end":
            check.ended = True


# --- reading records -----------------------------------------------------------------------------


def records(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Every line that is a JSON object, in file order (the others are verify's business)."""
    for raw in lines:
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def parse_since(text: str) -> float:
    """Seconds in `30s`, `15m`, `1h`, `2d` (a plain number is seconds); ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 30s, 15m, 1h or 2d")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def record_time(record: dict[str, Any]) -> float | None:
    """A record's `time` as seconds since the epoch."""
    value = record.get("time")
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", value)
    if not match:
        return None
    seconds = float(calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")))
    return seconds + (float("0." + match.group(2)) if match.group(2) else 0.0)


REFUSED = ("denied", "rate_limited", "over_budget", "invalid_arguments", "approval_declined",
           "approval_timeout", "approval_cancelled", "approval_unavailable")


def is_decision(record: dict[str, Any]) -> bool:
    return record.get("event") == "call" or str(record.get("event", "")).startswith("approval_")


def summarize(found: Iterable[dict[str, Any]], since: float | None = None, session: str | None = None,
              now: float | None = None, top: int = 5) -> dict[str, Any]:
    """Counts by tool and decision, the commonest refusal reasons, the slowest tools and the approvals,
    of the call records (after `since` seconds ago, of sessions starting with `session`)."""
    now = time.time() if now is None else now
    by_tool: dict[str, Counter[str]] = defaultdict(Counter)
    decisions: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    durations: dict[str, list[float]] = defaultdict(list)
    outcomes: Counter[str] = Counter()
    approvals: Counter[str] = Counter()
    waited: list[float] = []
    sessions: set[str] = set()
    reloads: Counter[str] = Counter()
    first = last = None
    count = 0
    for record in found:
        if session is not None and not str(record.get("session", "")).startswith(session):
            continue
        at = record_time(record)
        if since is not None and (at is None or at < now - since):
            continue
        event = str(record.get("event", ""))
        if event.startswith("reload"):
            reloads[event] += 1
        if not is_decision(record):
            continue
        count += 1
        sessions.add(str(record.get("session")))
        if at is not None:
            first = at if first is None else min(first, at)
            last = at if last is None else max(last, at)
        tool = str(record.get("tool")) if record.get("tool") is not None else "(no name)"
        decision = str(record.get("decision") or event)
        if decision.startswith("approval_"):
            approvals[decision] += 1
            if isinstance(record.get("waited_ms"), (int, float)):
                waited.append(float(record["waited_ms"]))
            if decision in ("approval_asked", "approval_granted"):
                continue  # the call's own record counts it
        by_tool[tool][decision] += 1
        decisions[decision] += 1
        if decision in REFUSED or decision.startswith("monitor_would_"):
            reasons[str(record.get("reason") or decision)] += 1
        if isinstance(record.get("outcome"), str):
            outcomes[record["outcome"]] += 1
        if isinstance(record.get("duration_ms"), (int, float)):
            durations[tool].append(float(record["duration_ms"]))
    slowest: list[dict[str, Any]] = sorted(
        ({"tool": tool, "calls": len(ms), "median_ms": round(statistics.median(ms), 1),
          "p95_ms": round(_percentile(ms, 95), 1), "max_ms": round(max(ms), 1)} for tool, ms in durations.items()),
        key=lambda row: (-row["median_ms"], row["tool"]))
    return {
        "records": count,
        "sessions": len(sessions),
        "first": first,
        "last": last,
        "decisions": dict(decisions.most_common()),
        "by_tool": {tool: dict(counts.most_common()) for tool, counts in
                    sorted(by_tool.items(), key=lambda item: (-sum(item[1].values()), item[0]))},
        "top_reasons": [{"reason": reason, "count": n} for reason, n in reasons.most_common(top)],
        "slowest": slowest[:top],
        "outcomes": dict(outcomes.most_common()),
        "approvals": {**dict(approvals.most_common()),
                      **({"median_wait_ms": round(statistics.median(waited), 1)} if waited else {})},
        "reloads": dict(reloads),
    }


def _percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    rank = max(0, math.ceil(percent / 100 * len(ordered)) - 1)
    return ordered[rank]
