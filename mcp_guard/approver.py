"""Asking a human to approve a call, through whichever channel this session has.

- Handshake era, a client that declared `elicitation` in initialize: mcp-guard holds the call (Defer)
  and sends the client `elicitation/create` of its own; the answer decides.
- Stateless era (2026-07-28), a client that declares elicitation in the request's `_meta`: servers may
  not send requests, so the call is answered `input_required` with mcp-guard's elicitation under a key
  of its own and a signed `requestState`; the client's retry carries the answer and the state back.
- Otherwise, the approval command (approvalcmd.py), run while the call is held.
- Otherwise the call is refused, saying how approval can be enabled.

The guard calls `consider` when the policy's decision is `require_approval`, with two continuations:
`approved(replacement)` decides the call again as approved (limits are charged then, and only then) and
`refused(outcome)` answers it. What changes state is done in the Defer's settle step, under the relay's
lock like every interceptor call; waiting happens in the decision coroutine, off the pumps.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from . import approvalcmd, wire
from .actions import ClientAction, ClientChannel, Defer, Reply
from .approval import (
    CAPABILITIES_META,
    EXPIRED,
    INPUT_KEY,
    SERVER_INFO_META,
    STATE_PREFIX,
    Channel,
    Memory,
    Outcome,
    Sealed,
    StateSigner,
    arguments_digest,
    client_supports_form,
    elicitation_params,
    message,
    read_answer,
    read_result,
    without_own_parts,
)
from .audit import AuditLog
from .engine import Decision
from .policy import Approval

log = logging.getLogger("mcp_guard")

# Upstream requestStates handed out to approved calls, remembered so the retry is not asked again.
MAX_UPSTREAM_STATES = 1024


def _meta(params: Any) -> dict[str, Any]:
    meta = params.get("_meta") if isinstance(params, dict) else None
    return meta if isinstance(meta, dict) else {}


def own_state(params: Any) -> bool:
    """Whether a call carries a requestState of mcp-guard's own (which the upstream must never see)."""
    state = params.get("requestState") if isinstance(params, dict) else None
    return isinstance(state, str) and state.startswith(STATE_PREFIX)


class Approver:
    def __init__(self, audit: AuditLog, clock: Callable[[], float], command: str | None = None,
                 server_command: Sequence[str] = ()) -> None:
        self.audit = audit
        self.clock = clock
        self.command = command or None
        self.signer = StateSigner()
        self.memory = Memory()
        self.client_elicits = False  # handshake era: the client declared form elicitation in initialize
        self.handshake = False  # an initialize was seen: its capabilities say how to ask, whatever later requests claim
        self.server_name: str | None = None  # the upstream's serverInfo name, once seen
        self._fallback_name = " ".join(os.path.basename(part) if i == 0 else part
                                       for i, part in enumerate(server_command)) or "the MCP server"
        # (tool, the upstream's requestState) -> the approved call's arguments digest: the upstream asked
        # for input of its own after the human approved; its retry is the same approved call.
        self._upstream_states: dict[tuple[str, str], str | None] = {}

    @property
    def server(self) -> str:
        return self.server_name or self._fallback_name

    # --- what the session says about itself ------------------------------------------------------

    def note_initialize(self, params: Any) -> None:
        capabilities = params.get("capabilities") if isinstance(params, dict) else None
        # A later initialize can only take elicitation away: an agent that sends another one declaring it
        # must not become the one asked (and answer itself) in place of the approval command.
        self.client_elicits = client_supports_form(capabilities) and (self.client_elicits or not self.handshake)
        self.handshake = True
        log.info("the client %s form elicitation: require_approval calls are asked %s",
                 "declared" if self.client_elicits else "did not declare",
                 "through it" if self.client_elicits else
                 ("through the approval command" if self.command else "of nobody (refused)"))

    def note_server_answer(self, body: dict[str, Any]) -> None:
        """The upstream's answer to initialize (serverInfo) or server/discover (in the result's _meta)."""
        result = body.get("result")
        if not isinstance(result, dict):
            return
        info = result.get("serverInfo")
        if not isinstance(info, dict):
            info = _meta(result).get(SERVER_INFO_META)
        name = info.get("name") if isinstance(info, dict) else None
        if isinstance(name, str) and name:
            self.server_name = name

    def note_upstream_state(self, tool: str, state: str, request_line: bytes) -> None:
        """An approved call the upstream answered input_required: its retry with this state and the same
        arguments is that call, already approved."""
        if len(self._upstream_states) >= MAX_UPSTREAM_STATES:
            self._upstream_states.pop(next(iter(self._upstream_states)))
        self._upstream_states[(tool, state)] = arguments_digest(wire.call_arguments_fingerprint(request_line))

    def continues_approved(self, tool: str, params: Any, request_line: bytes) -> bool:
        state = params.get("requestState") if isinstance(params, dict) else None
        if not isinstance(state, str) or not self._upstream_states:
            return False
        key = (tool, state)
        if key not in self._upstream_states:
            return False
        digest = self._upstream_states.pop(key)  # one retry each
        return digest is not None and digest == arguments_digest(wire.call_arguments_fingerprint(request_line))

    # --- asking ----------------------------------------------------------------------------------

    def consider(self, msg: wire.Message, params: dict[str, Any], name: str, arguments: Any, decision: Decision,
                 settings: Approval, stateless: bool, approved: Callable[[bytes | None], ClientAction],
                 refused: Callable[[Outcome], ClientAction]) -> ClientAction:
        digest = arguments_digest(wire.call_arguments_fingerprint(msg.raw))
        remembered = self.memory.recall(name, digest, settings.remember)
        if remembered is not None:
            self._record("approval_granted", msg, name, remembered, 0.0, remembered=True)
            return self._approve(msg, approved, refused, remembered)
        if stateless:
            state = params.get("requestState")
            if isinstance(state, str) and state.startswith(STATE_PREFIX):
                return self._retry(msg, params, name, digest, state, approved, refused)
            if client_supports_form(_meta(params).get(CAPABILITIES_META)):
                return self._input_required(msg, name, arguments, decision, settings, digest)
        elif self.client_elicits:
            return self._hold(msg, params, name, arguments, decision, settings, digest, "elicitation",
                              approved, refused)
        if self.command is not None:
            return self._hold(msg, params, name, arguments, decision, settings, digest, "command",
                              approved, refused)
        outcome = Outcome("unavailable", None)
        self._record(outcome.audit_decision, msg, name, None, 0.0)
        return refused(outcome)

    def _approve(self, msg: wire.Message, approved: Callable[[bytes | None], ClientAction],
                 refused: Callable[[Outcome], ClientAction], channel: Channel | None) -> ClientAction:
        """The approved call, without mcp-guard's own state and answer when it carries them."""
        if not own_state(msg.params):
            return approved(None)
        replacement = without_own_parts(msg.raw)
        if replacement is None:
            return refused(Outcome("error", channel, detail="the retry could not be rewritten for the server"))
        return approved(replacement)

    def _input_required(self, msg: wire.Message, name: str, arguments: Any, decision: Decision,
                        settings: Approval, digest: str | None) -> ClientAction:
        """Stateless era: the answer is mcp-guard's question; the client asks its human and retries."""
        state = self.signer.seal(name, digest or "", self.clock(), settings.timeout, settings.remember)
        text = message(self.server, name, arguments, decision.reason or "", decision.rule)
        result = {"resultType": "input_required",
                  "inputRequests": {INPUT_KEY: {"method": "elicitation/create",
                                                "params": elicitation_params(text, settings.remember)}},
                  "requestState": state}
        self._record("approval_asked", msg, name, "elicitation-mrtr", None)
        return Reply(wire.result_response(msg.id, result))

    def _retry(self, msg: wire.Message, params: dict[str, Any], name: str, digest: str | None, state: str,
               approved: Callable[[bytes | None], ClientAction],
               refused: Callable[[Outcome], ClientAction]) -> ClientAction:
        now = self.clock()
        opened = self.signer.open(state, name, digest, now)
        outcome: Outcome
        if isinstance(opened, Sealed):
            responses = params.get("inputResponses")
            answer = responses.get(INPUT_KEY) if isinstance(responses, dict) else None
            if answer is None:
                outcome = Outcome("error", "elicitation-mrtr", detail="the retry carried no answer to it")
            else:
                outcome = read_result(answer, opened.remember, "elicitation-mrtr")
            outcome = dataclasses.replace(outcome, waited=now - opened.issued)
        elif opened == EXPIRED:
            outcome = Outcome("timeout", "elicitation-mrtr")
        else:
            outcome = Outcome("invalid", "elicitation-mrtr", detail=opened)
            log.warning("refused a call to %s: its approval state %s", name if name.isprintable() else repr(name),
                        opened)
        self._record(outcome.audit_decision, msg, name, "elicitation-mrtr", outcome.waited, outcome=outcome.status,
                     **({"problem": outcome.detail} if outcome.status == "invalid" else {}))
        if not outcome.granted:
            return refused(outcome)
        self.memory.keep(name, digest, outcome.remember, "elicitation-mrtr")
        return self._approve(msg, approved, refused, "elicitation-mrtr")

    def _hold(self, msg: wire.Message, params: dict[str, Any], name: str, arguments: Any, decision: Decision,
              settings: Approval, digest: str | None, via: Channel, approved: Callable[[bytes | None], ClientAction],
              refused: Callable[[Outcome], ClientAction]) -> Defer:
        """Hold the call while the human is asked (elicitation of mcp-guard's own, or the command)."""
        reason = decision.reason or ""
        token = _meta(params).get("progressToken")
        command = self.command
        self._record("approval_asked", msg, name, via, None)
        clock = self.clock

        async def decision_(channel: ClientChannel) -> Outcome:
            started = clock()
            try:
                if token is not None and not isinstance(token, bool) and isinstance(token, (str, int)):
                    await channel.notify("notifications/progress", {
                        "progressToken": token, "progress": 0,
                        "message": f"mcp-guard is waiting for a human to approve {name}"})
                if via == "elicitation":
                    answer = await channel.request("elicitation/create", elicitation_params(
                        message(self.server, name, arguments, reason, decision.rule), settings.remember),
                        settings.timeout)
                    outcome = read_answer(answer.body if answer is not None else None, settings.remember)
                else:
                    assert command is not None
                    payload = approvalcmd.description(self.server, name, arguments, decision.rule, reason)
                    outcome = await approvalcmd.ask(command, payload, settings.timeout, settings.remember)
            except anyio.get_cancelled_exc_class():
                self._record("approval_cancelled", msg, name, via, clock() - started, by="client")
                raise
            return dataclasses.replace(outcome, waited=clock() - started)

        def settle(outcome: Outcome) -> ClientAction:
            self._record(outcome.audit_decision, msg, name, via, outcome.waited, outcome=outcome.status,
                         **({"detail": outcome.detail} if outcome.detail and via == "command" else {}))
            if not outcome.granted:
                return refused(outcome)
            self.memory.keep(name, digest, outcome.remember, via)
            return approved(None)

        return Defer(decision_, settle)

    def _record(self, decision: str, msg: wire.Message, tool: str, channel: Channel | None, waited: float | None,
                **fields: Any) -> None:
        if not self.audit.enabled:
            return
        extra: dict[str, Any] = {"waited_ms": round(waited * 1000)} if waited is not None else {}
        self.audit.record("approval", decision=decision, request_id=msg.id, tool=tool, channel=channel,
                          **extra, **fields)
