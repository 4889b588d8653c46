"""The pure parts of asking a human to approve a call: what the person reads, the form's schema, how
an answer is read, the signed state of the stateless era, and what an approval is remembered for.

No I/O here. The flow that asks (elicitation through the client in either protocol era, or the
approval command) is approver.py; the command itself is run by approvalcmd.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from .policy import Remember

# The key of mcp-guard's own request in a 2026-07-28 `inputRequests` (keys are the server's to choose;
# this one names who asks, so it cannot meet the upstream's, which never reach the client together).
INPUT_KEY = "mcp-guard/approval"
# What mcp-guard's own requestState starts with: the retry that carries one is mcp-guard's to verify.
STATE_PREFIX = "mcp-guard-approval.1."
CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"

Channel = Literal["elicitation", "elicitation-mrtr", "command"]
Status = Literal["granted", "declined", "cancelled", "timeout", "error", "unavailable", "invalid"]

# How much of the arguments the person is shown: values cut, lines counted, so the question is read
# at a glance and a huge argument cannot push the tool's name off the screen.
MAX_VALUE_CHARS = 160
MAX_ARGUMENT_LINES = 12
MAX_NAME_CHARS = 120

REMEMBER_TITLES = {
    "none": "Approve this call only",
    "arguments": "Approve, and also later calls with these same arguments (this session)",
    "session": "Approve, and every later call to this tool (this session)",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What came of asking: `status`, through which `channel`, how long it took, what the approval is to
    be remembered for, and a detail in words (the command's reason, the client's error)."""

    status: Status
    channel: Channel | None
    waited: float = 0.0
    remember: Remember = "none"
    detail: str | None = None

    @property
    def granted(self) -> bool:
        return self.status == "granted"

    @property
    def audit_decision(self) -> str:
        return {"granted": "approval_granted", "declined": "approval_declined", "cancelled": "approval_cancelled",
                "timeout": "approval_timeout", "error": "approval_declined", "unavailable": "approval_unavailable",
                "invalid": "approval_declined"}[self.status]


def shown(name: str) -> str:
    """A name from the agent or the server as a person should see it: control characters (a newline could
    forge a line of the message) and overlong names written so that they cannot pass for something else."""
    text = name if name.isprintable() else json.dumps(name)
    return text if len(text) <= MAX_NAME_CHARS else text[:MAX_NAME_CHARS] + f"... ({len(text)} characters)"


def _cut(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        return value[:MAX_VALUE_CHARS] + f"... ({len(value) - MAX_VALUE_CHARS} more characters)"
    if depth > 20:
        return "..."
    if isinstance(value, dict):
        return {_cut(key, depth + 1) if isinstance(key, str) else key: _cut(item, depth + 1)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_cut(item, depth + 1) for item in value]
    return value


def argument_lines(arguments: Any) -> list[str]:
    """The arguments pretty-printed, long values cut, at most MAX_ARGUMENT_LINES lines. JSON's escaping
    keeps every value inside its quotes, whatever the agent put in it."""
    if not arguments:
        return ["(none)"]
    try:
        text = json.dumps(_cut(arguments), indent=2, ensure_ascii=True)
    except (ValueError, RecursionError):
        return ["(too deeply nested to show)"]
    lines = text.splitlines()
    if len(lines) > MAX_ARGUMENT_LINES:
        lines = lines[:MAX_ARGUMENT_LINES - 1] + [f"... ({len(lines) - MAX_ARGUMENT_LINES + 1} more lines)"]
    return lines


def message(server: str, tool: str, arguments: Any, reason: str, rule: str | None) -> str:
    """What the person reads: which server, which tool, with what, and why they are asked."""
    lines = ["mcp-guard: an agent wants to call a tool that needs your approval.", "",
             f"Server:    {shown(server)}", f"Tool:      {shown(tool)}", "Arguments:"]
    lines += ["  " + line for line in argument_lines(arguments)]
    lines.append(f"Why asked: {reason}" + (f" (policy rule {shown(rule)})" if rule is not None else
                                            " (the policy's default)"))
    lines += ["", "Accept to let this call run; decline to refuse it."]
    return "\n".join(lines)


def requested_schema(remember: Remember) -> dict[str, Any]:
    """The form: nothing to fill in when the policy remembers nothing; otherwise one choice between
    approving once and what the rule's `remember` allows, that choice preselected."""
    if remember == "none":
        return {"type": "object", "properties": {}}
    return {"type": "object", "properties": {"remember": {
        "type": "string", "title": "Approve for",
        "oneOf": [{"const": choice, "title": REMEMBER_TITLES[choice]} for choice in ("none", remember)],
        "default": remember}}}


def elicitation_params(text: str, remember: Remember) -> dict[str, Any]:
    return {"mode": "form", "message": text, "requestedSchema": requested_schema(remember)}


def read_result(result: Any, allowed: Remember, channel: Channel) -> Outcome:
    """An elicitation's result (ElicitResult) read as an approval; anything else is an error answer."""
    if not isinstance(result, dict) or result.get("action") not in ("accept", "decline", "cancel"):
        return Outcome("error", channel, detail="the client's answer was not an elicitation result")
    action = result["action"]
    if action == "decline":
        return Outcome("declined", channel)
    if action == "cancel":
        return Outcome("cancelled", channel)
    content = result.get("content")
    chosen = content.get("remember") if isinstance(content, dict) else None
    # Only what the policy allows, and no more: a missing or unknown choice is the rule's own.
    remember: Remember = "none" if allowed == "none" or chosen == "none" else allowed
    return Outcome("granted", channel, remember=remember)


def read_answer(answer: dict[str, Any] | None, allowed: Remember) -> Outcome:
    """The client's answer to mcp-guard's elicitation/create (a JSON-RPC response), or None: no answer."""
    if answer is None:
        return Outcome("timeout", "elicitation")
    error = answer.get("error")
    if error is not None:
        detail = error.get("message") if isinstance(error, dict) else None
        return Outcome("error", "elicitation", detail=str(detail)[:200] if detail else "an error")
    return read_result(answer.get("result"), allowed, "elicitation")


def refusal(outcome: Outcome, timeout: float, command_set: bool) -> str:
    """Why the call was refused, worded so that an agent can tell "the human said no" from "nobody
    answered" (and from "nobody could be asked")."""
    via = {"elicitation": "through the client", "elicitation-mrtr": "through the client",
           "command": "through the approval command", None: ""}[outcome.channel]
    detail = f": {outcome.detail}" if outcome.detail else ""
    if outcome.status == "declined":
        return f"the human declined the call (approval asked {via}){detail}"
    if outcome.status == "cancelled":
        return f"the human dismissed the approval request without approving (asked {via})"
    if outcome.status == "timeout":
        return f"no answer to the approval request within {timeout:g} s (asked {via})"
    if outcome.status == "error":
        return f"the approval request failed (asked {via}){detail}"
    if outcome.status == "invalid":
        return f"the retry's approval state was refused{detail}; the call was not sent"
    if command_set:  # pragma: no cover - with a command there is always a channel
        return "approval is required, and no approval channel answered"
    return ("approval is required, and nobody can be asked: this client does not support elicitation, and no "
            "approval command is set. Use a client that supports MCP elicitation, or start mcp-guard with "
            "--approval-command CMD (also $MCP_GUARD_APPROVAL_COMMAND, or the policy's \"approval_command\")")


def client_supports_form(capabilities: Any) -> bool:
    """Whether declared client capabilities include form-mode elicitation. An empty `elicitation` object
    means form mode (2025-11-25: for compatibility with clients written before the modes)."""
    if not isinstance(capabilities, dict):
        return False
    elicitation = capabilities.get("elicitation")
    if not isinstance(elicitation, dict):
        return False
    return "form" in elicitation or "url" not in elicitation


def arguments_digest(fingerprint: str | None) -> str | None:
    """A digest of wire.call_arguments_fingerprint's canonical arguments (None: unreadable)."""
    return hashlib.sha256(fingerprint.encode()).hexdigest() if fingerprint is not None else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Sealed:
    """What a verified state of mcp-guard's own said."""

    issued: float
    remember: Remember


EXPIRED = "it has expired"


class StateSigner:
    """mcp-guard's requestState for the stateless era: HMAC-SHA256 with a key made at start (so a state
    is good only for this process), binding the tool, the digest of the canonical arguments, when it was
    issued and until when it holds, and a nonce: each state is accepted once."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)
        self._used: dict[str, float] = {}  # nonce -> expiry; a nonce leaves once its state has expired

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, (STATE_PREFIX + payload).encode(), hashlib.sha256).digest())

    def seal(self, tool: str, digest: str, now: float, ttl: float, remember: Remember) -> str:
        body = {"t": tool, "a": digest, "i": now, "e": now + ttl, "n": secrets.token_hex(12), "r": remember}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{STATE_PREFIX}{payload}.{self._mac(payload)}"

    def open(self, state: str, tool: str, digest: str | None, now: float) -> Sealed | str:
        """The state's content when it is valid for this call now; otherwise why not (in words). A valid
        state is used up by this."""
        if not state.startswith(STATE_PREFIX):
            return "it is not mcp-guard's"
        payload, _, mac = state[len(STATE_PREFIX):].partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return "its signature does not verify (forged, altered, or from another mcp-guard process)"
        body = json.loads(_unb64(payload))
        if body["t"] != tool:
            return "it was issued for another tool"
        if digest is None or not hmac.compare_digest(body["a"], digest):
            return "it was issued for other arguments"
        for nonce, until in list(self._used.items()):
            if until < now:
                del self._used[nonce]
        if body["n"] in self._used:
            return "it was used already (a replay)"
        if now > body["e"]:
            return EXPIRED
        self._used[body["n"]] = body["e"]
        return Sealed(float(body["i"]), body["r"])


class Memory:
    """What approvals were given for besides their own call (the rule's `remember`), for this session:
    every call to a tool, or calls to a tool with identical arguments. Returns the channel that asked."""

    def __init__(self) -> None:
        self._tools: dict[str, Channel] = {}
        self._calls: dict[tuple[str, str], Channel] = {}

    def keep(self, tool: str, digest: str | None, remember: Remember, channel: Channel) -> None:
        if remember == "session":
            self._tools[tool] = channel
        elif remember == "arguments" and digest is not None and len(self._calls) < 4096:
            self._calls[(tool, digest)] = channel

    def recall(self, tool: str, digest: str | None, remember: Remember) -> Channel | None:
        """The channel of an approval that covers this call, under the rule's `remember` as it is now."""
        if remember == "session" and tool in self._tools:
            return self._tools[tool]
        if remember in ("session", "arguments") and digest is not None:
            return self._calls.get((tool, digest))
        return None


# --- the retry's params without mcp-guard's own parts, numbers exactly as written ----------------------


class _Number(str):
    """A JSON number as the client wrote it (re-encoding must not turn 1e0 into 1.0 for the upstream)."""


_decoder = json.JSONDecoder(parse_float=_Number, parse_int=_Number)


def _write(value: Any) -> str:
    if isinstance(value, _Number):
        return str.__str__(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(key, ensure_ascii=False) + ":" + _write(item)
                              for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_write(item) for item in value) + "]"
    return json.dumps(value)


def without_own_parts(line: bytes) -> bytes | None:
    """The tools/call in `line` without mcp-guard's requestState and its answer in inputResponses (what
    the upstream never asked for), everything else as the client wrote it, key order and numbers kept.
    None when the line cannot be rewritten (the caller refuses the call)."""
    try:
        body = _decoder.decode(line.decode("utf-8"))
        params = body["params"]
        state = params.get("requestState")
        if isinstance(state, str) and state.startswith(STATE_PREFIX):
            del params["requestState"]
        responses = params.get("inputResponses")
        if isinstance(responses, dict):
            responses.pop(INPUT_KEY, None)
            if not responses:
                del params["inputResponses"]
        return _write(body).encode("utf-8")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, UnicodeError):
        return None
