"""Decision records: one JSON line per decision, chained so that a removed, edited or reordered line shows.

The relay's threads only put a record on a bounded queue (`AuditLog.record`, which never waits); one
writer thread turns it into a line, seals it into its session's hash chain and appends it with a single
`write` to a file opened with O_APPEND, so several mcp-guard processes can share one file. A record that
finds the queue full, or that the disk refuses, is dropped and counted, and the first record that gets
through after it says how many were (`dropped`): a full disk never turns calls into refusals, and
`mcp-guard audit verify` shows the gap. The chain itself and the reading side are in auditlog.py.

Arguments are written per `--audit-args`: their keys (the default), a SHA-256 of their canonical form, or
whole (they may hold secrets: only when asked for).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("mcp_guard")

ARGUMENT_MODES = ("keys", "hash", "full")
QUEUE_RECORDS = 4096  # records waiting for the writer, at most; more are dropped and counted
CLOSE_SECONDS = 3.0  # how long the session's end waits for the writer (a hung disk is not waited out)
# Every line ends with its own hash: `..., "hash": "<64 hex>"}` (auditlog.unseal reads it back).
HASH_SUFFIX = ', "hash": "'

# Decision names in records: an engine action (and its kind) in the words people search for.
MONITOR_NAMES = {"hidden": "monitor_would_hide", "denied": "monitor_would_deny",
                 "rate_limited": "monitor_would_rate_limit", "over_budget": "monitor_would_exceed_budget",
                 "invalid_arguments": "monitor_would_reject_arguments",
                 "approval_unavailable": "monitor_would_ask_approval"}


def decision_name(action: str | None, kind: str | None = None, reason: str | None = None) -> str:
    """allowed, hidden, denied, rate_limited, over_budget, invalid_arguments or approval_unavailable."""
    if action == "allow":
        return "allowed"
    if action == "hide":
        return "hidden"
    if action == "require_approval":
        return "approval_unavailable"
    if kind == "rate_limit":
        return "rate_limited"
    if kind == "budget":
        return "over_budget" if (reason or "").startswith(("budget exhausted", "cost ")) else "invalid_arguments"
    if kind == "arguments" or kind == "malformed":
        return "invalid_arguments"
    return "denied"


def canonical_arguments(arguments: Any) -> bytes:
    """The arguments as one byte string that two identical calls share (sorted keys, no spaces)."""
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode("utf-8", "surrogatepass")


def utc_time(seconds: float) -> str:
    """RFC 3339, UTC, to the millisecond."""
    millis = int(seconds * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)) + f".{millis % 1000:03d}Z"


def seal(body: bytes) -> tuple[bytes, str]:
    """The line for a record whose JSON (without its hash) is `body`, and that hash: the SHA-256 of the
    body's bytes, written as the record's last member."""
    digest = hashlib.sha256(body).hexdigest()
    return body[:-1] + HASH_SUFFIX.encode() + digest.encode() + b'"}\n', digest


@dataclass(slots=True)
class PendingCall:
    """A forwarded call's record, written when its answer passes (or is lost) with outcome and duration."""

    fields: dict[str, Any]
    started: float = field(default_factory=time.monotonic)


def outcome_fields(body: dict[str, Any] | None) -> dict[str, Any]:
    """What the upstream answered: ok, is_error (a result with isError), error (with its JSON-RPC code),
    or no_answer."""
    if body is None:
        return {"outcome": "no_answer"}
    error = body.get("error")
    if error is not None:
        code = error.get("code") if isinstance(error, dict) else None
        return {"outcome": "error", "error_code": code if isinstance(code, int) else None}
    result = body.get("result")
    if isinstance(result, dict) and result.get("isError") is True:
        return {"outcome": "is_error"}
    return {"outcome": "ok"}


class AuditLog:
    """The audit file of one session. `record(event, **fields)` may be called from any thread."""

    def __init__(self, path: str | None, arguments: str = "keys", command: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock  # read once per record: seconds and milliseconds from one instant
        self.enabled = bool(path)
        self.arguments_mode = arguments
        self.session = f"{os.getpid()}-{int(time.time())}-{secrets.token_hex(3)}"
        # Set by the guard as it learns them: the upstream's serverInfo name and the protocol era.
        self.server: str | None = None
        self.era: str | None = None
        self.command = " ".join(command)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_RECORDS)
        self._dropped_lock = threading.Lock()
        self._dropped = 0  # records not queued (the queue was full), told by the next record queued
        self._fd = -1
        self._thread: threading.Thread | None = None
        if path:
            # Owner-only: records name tools and argument keys, perhaps more (--audit-args full).
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._thread = threading.Thread(target=self._write_loop, name="mcp-guard-audit", daemon=True)
            self._thread.start()

    # --- producers (the relay's threads): never wait ------------------------------------------------

    def record(self, event: str, **fields: Any) -> None:
        if self._thread is None:
            return
        entry = {"time": self._clock(), "event": event, "server": self.server, "era": self.era, **fields}
        with self._dropped_lock:  # held for a counter and a put that never waits
            if self._dropped:
                entry["_dropped"] = self._dropped  # the first record queued after the drops says so
            try:
                self._queue.put_nowait(entry)
            except queue.Full:
                self._dropped += 1
            else:
                self._dropped = 0

    def arguments(self, arguments: Any) -> dict[str, Any]:
        """The fields that stand for a call's arguments (the hash is made by the writer, off the relay)."""
        keys = sorted(arguments) if isinstance(arguments, dict) else []
        if self.arguments_mode == "keys" or arguments is None:
            return {"argument_keys": keys}
        return {"argument_keys": keys, "_arguments": arguments}

    def pending(self, event: str, **fields: Any) -> PendingCall | None:
        """A record to write when the call's answer passes; None when nothing is recorded."""
        return PendingCall({"event": event, **fields}) if self._thread is not None else None

    def finish(self, pending: PendingCall, body: dict[str, Any] | None) -> None:
        fields = pending.fields
        event = fields.pop("event")
        self.record(event, **fields, **outcome_fields(body),
                    duration_ms=round((time.monotonic() - pending.started) * 1000, 1))

    # --- the writer thread --------------------------------------------------------------------------

    def _write_loop(self) -> None:
        sequence = 0
        previous = ""
        unwritten = 0  # records the disk refused, told with the queue's drops in the next record
        failed = False
        while True:
            entry = self._queue.get()
            if entry is None:
                return
            dropped = entry.pop("_dropped", 0) + unwritten
            try:
                body = self._body(entry, sequence, previous, dropped)
                line, digest = seal(body)
                written = os.write(self._fd, line)
                while written < len(line):  # a short write (rare on files): the rest, as one record
                    written += os.write(self._fd, line[written:])
            except (OSError, ValueError, TypeError) as exc:
                # The decision stands either way. The chain does not advance: the next record written
                # carries on from the last one on disk and counts this one as dropped.
                unwritten = dropped + 1
                if not failed:
                    failed = True
                    log.error("cannot write the audit file %s: %s", self.path,
                              getattr(exc, "strerror", None) or exc)
                continue
            if failed:
                failed = False
                log.warning("the audit file %s is written again; %d record(s) were lost", self.path, unwritten)
            unwritten = 0
            sequence += 1
            previous = digest

    def _body(self, entry: dict[str, Any], sequence: int, previous: str, dropped: int) -> bytes:
        arguments = entry.pop("_arguments", None) if "_arguments" in entry else ...
        head: dict[str, Any] = {"time": utc_time(entry.pop("time")), "session": self.session, "seq": sequence,
                                "prev": previous}
        if dropped:
            head["dropped"] = dropped
        event = entry.pop("event")
        head["event"] = event
        if entry.get("server") is None:
            entry["server"] = self.command or None
        if "decision" not in entry and event.startswith("approval_"):
            entry["decision"] = event  # approval_asked, approval_granted, ...: the event is the decision
        elif "decision" not in entry and "action" in entry:
            entry["decision"] = decision_name(entry["action"], entry.get("kind"), entry.get("reason"))
        if arguments is not ...:
            canonical = canonical_arguments(arguments)
            if self.arguments_mode == "hash":
                entry["arguments_sha256"] = hashlib.sha256(canonical).hexdigest()
            else:
                entry["arguments"] = arguments
        record = {**head, **entry}
        text = json.dumps(record, ensure_ascii=False, default=str)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in a name: escaped, never lose the record
            return json.dumps(record, ensure_ascii=True, default=str).encode("ascii")

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Write what is queued (within `timeout`: a hung disk is not waited out), then close the file."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        thread.join(timeout)
        if not thread.is_alive():
            os.close(self._fd)
