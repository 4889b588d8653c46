"""What the guard watches for while a message is in flight, and the small readers its answers need.

A watch is handed to the relay with a forwarded request (`Forward(watch=...)`) and comes back with the
upstream's answer (`Interceptor.upstream_answer`). Kept apart from guard.py so that `check -- CMD`
(listing.py) can read a listing the strict reader refused without loading the whole interceptor.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from . import wire
from .audit import PendingCall
from .engine import Charge

log = logging.getLogger("mcp_guard")


@dataclass(slots=True)
class ListWatch:
    """A tools/list in flight: its answer must be filtered before the client sees it."""

    request_id: Any


@dataclass(slots=True)
class CallWatch:
    """An allowed tools/call that took from a limit: a JSON-RPC error answer gives the quota back,
    unless the client cancelled the call (a server answers a cancelled call with an error, after it
    may have done the work)."""

    tool: str
    charges: tuple[Charge, ...]
    id_key: str = ""
    cancelled: bool = False
    started: bool = False  # the server asked the client something while the call was in flight
    # The call's line as received (kept, not copied, until its answer): an input_required answer hands
    # out a requestState, and only a retry with these very arguments is this call's continuation.
    request_line: bytes = b""
    rule: str | None = None
    since: float | None = None  # when it was decided, for the --log-level info line; None: not logged
    refund: str = "protocol_error"  # the rule's "refund": which failed answers give the quota back
    shared_tokens: tuple[Any, ...] = ()  # what a limit store took (sharedlimits.Admission.tokens)
    audit: PendingCall | None = None  # its audit record, written when the answer passes
    approved: bool = False  # a human approved it: an input_required answer's retry is not asked again


@dataclass(slots=True)
class ProbeWatch:
    """A call to a hidden tool, sent upstream as a call to a name that cannot exist (`probe_name`): the
    upstream's answer, with that name turned into the hidden one, is what the client gets."""

    hidden_name: str
    probe_name: str
    request_id: Any


# The tools/call params a probe keeps: what shapes the upstream's answer (the era's _meta, a task
# request), never what the hidden tool would have been given (arguments, inputResponses, requestState).
PROBE_PARAMS = ("_meta", "task")
PROBE_RANDOM_BYTES = 12  # 96 random bits in a probe name: no server has that tool
# The probe name's first characters: still there after a rewrite, they mean the upstream wrote the name in
# another form (escaped, cut short, in other case) and the answer could not be made the upstream's own.
PROBE_PREFIX_CHARS = 12
MAX_CONTINUATIONS = 1024  # stateless continuations remembered for their charge (the oldest forgotten first)


def new_probe_name() -> str:
    # A plain name every server accepts as one (letters and digits, under 64 characters), that no
    # encoder escapes, and that no server has: 96 random bits, and checked against every listing.
    return "t" + secrets.token_hex(PROBE_RANDOM_BYTES)


@dataclass(slots=True)
class TimedCall:
    """An allowed call that takes nothing from a limit, watched only for its log line (info level) and
    its audit record (outcome and duration)."""

    tool: str
    rule: str | None
    since: float | None
    audit: PendingCall | None = None


@dataclass(slots=True)
class ListenWatch:
    """A 2026-07-28 subscriptions/listen stream that asked for tool list changes, while it is open."""

    id_key: str


@dataclass(slots=True)
class InitWatch:
    """initialize (handshake era) or server/discover (2026-07-28): the answer names the server."""

    request_id: Any


def wants_tool_changes(msg: wire.Message) -> bool:
    params = msg.params
    wanted = params.get("notifications") if isinstance(params, dict) else None
    return isinstance(wanted, dict) and wanted.get("toolsListChanged") is True


def read_ambiguous_listing(raw: bytes) -> dict[str, Any] | str:
    """A tools/list answer the strict reader refused: the answer as read with the last of duplicate keys
    kept, when writing it out again leaves no other reading of which tools it lists; otherwise why not.
    Where the tools are decided (the message, its result, each tool) keys that differ only in case or
    hold control characters cannot be written away; deeper down (a tool's inputSchema) they do not
    change which tools the client sees, and are written out as they came."""
    try:
        body = wire.parse_resolving(raw)
    except (ValueError, RecursionError):
        return "not valid JSON"
    if not isinstance(body, dict) or not isinstance(wire.classify(body, raw, strict=True), wire.Message):
        return "its JSON-RPC members can be read two ways"
    result = body.get("result")
    tools = result.get("tools") if isinstance(result, dict) else None
    levels = [("the message", body), ("its result", result)]
    levels += [("a tool", tool) for tool in (tools if isinstance(tools, list) else ())]
    for where, level in levels:
        if isinstance(level, wire.AmbiguousObject) and not level.resolved:
            return f"keys in {where} differ only in case or hold control characters"
    return body


def log_call(level: int, tool: str, action: str, rule: str | None, seconds: float, outcome: str) -> None:
    """`call TOOL: DECISION [rule: KEY] N ms: OUTCOME`, one line per call. Names are the agent's: one
    holding a control character (a newline would forge a log line) is shown quoted."""
    shown = tool if tool.isprintable() else repr(tool)
    key = "default" if rule is None else (rule if rule.isprintable() else repr(rule))
    outcome = outcome if outcome.isprintable() else repr(outcome)
    log.log(level, "call %s: %s [rule: %s] %d ms: %s", shown, action, key, round(seconds * 1000), outcome)


def outcome_text(msg: wire.Message) -> str:
    error = msg.body.get("error")
    if isinstance(error, dict):
        return f"error {error.get('code')}"
    result = msg.body.get("result")
    return "tool error (isError)" if isinstance(result, dict) and result.get("isError") is True else "ok"
