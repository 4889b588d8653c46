"""Unit tests of the interceptor's quota bookkeeping, with an injected clock (no processes)."""

from __future__ import annotations

import json

from mcp_guard import wire
from mcp_guard.guard import Guard
from mcp_guard.policy import loads
from mcp_guard.relay import Forward

POLICY = loads(json.dumps({"version": "1", "rules": {"work": {"rate_limit": {"max": 1, "window": 3600}}}}))


def message(body: dict) -> wire.Message:
    parsed = wire.parse(json.dumps(body).encode())
    assert isinstance(parsed, wire.Message)
    return parsed


def call(guard: Guard, request_id: int) -> object:
    return guard.client_request(message({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                                         "params": {"name": "work", "arguments": {}}}))


def test_the_retry_of_an_input_required_call_is_not_charged_again() -> None:
    # 2026-07-28: a tool that needs input answers resultType input_required with a requestState; the
    # client retries with the input and that state under a new id. One logical call costs one unit.
    guard = Guard(POLICY, clock=lambda: 100.0)
    first = call(guard, 1)
    assert isinstance(first, Forward) and first.watch is not None
    guard.upstream_answer(message({"jsonrpc": "2.0", "id": 1, "result": {
        "resultType": "input_required", "inputRequests": {}, "requestState": "s1"}}), first.watch)
    retry = guard.client_request(message({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "work", "arguments": {}, "inputResponses": {}, "requestState": "s1"}}))
    assert isinstance(retry, Forward), "the retry that carries the input must be allowed"
    guard.upstream_answer(message({"jsonrpc": "2.0", "id": 2, "result": {
        "resultType": "complete", "content": []}}), retry.watch)
    assert not isinstance(call(guard, 3), Forward), "the completed call keeps its unit"


def test_a_made_up_or_reused_request_state_is_charged() -> None:
    guard = Guard(POLICY, clock=lambda: 100.0)
    first = call(guard, 1)
    assert isinstance(first, Forward)
    guard.upstream_answer(message({"jsonrpc": "2.0", "id": 1, "result": {
        "resultType": "input_required", "requestState": "s1"}}), first.watch)
    forged = guard.client_request(message({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "work", "requestState": "made-up"}}))
    assert not isinstance(forged, Forward)
    retry = guard.client_request(message({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "work", "requestState": "s1"}}))
    assert isinstance(retry, Forward)
    again = guard.client_request(message({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
        "name": "work", "requestState": "s1"}}))
    assert not isinstance(again, Forward), "a requestState is good for one retry"


def test_no_refund_once_the_server_asked_the_client_something() -> None:
    # The tool may have done its work before asking (elicitation, sampling); an error after that, which
    # the client can provoke by answering with an error, must not give the call back.
    guard = Guard(POLICY, clock=lambda: 100.0)
    first = call(guard, 1)
    assert isinstance(first, Forward)
    guard.upstream_request(message({"jsonrpc": "2.0", "id": "s-1", "method": "elicitation/create",
                                    "params": {"message": "sure?"}}))
    guard.upstream_answer(message({"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "x"}}),
                          first.watch)
    assert not isinstance(call(guard, 2), Forward)


def test_a_cancelled_call_keeps_its_charge_even_if_answered_with_an_error() -> None:
    guard = Guard(POLICY, clock=lambda: 100.0)
    first = call(guard, 1)
    assert isinstance(first, Forward)
    guard.client_notification(message({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                       "params": {"requestId": 1}}))
    guard.upstream_answer(message({"jsonrpc": "2.0", "id": 1, "error": {"code": 0, "message": "cancelled"}}),
                          first.watch)
    assert not isinstance(call(guard, 2), Forward)


def test_a_jsonrpc_error_gives_the_charge_back() -> None:
    guard = Guard(POLICY, clock=lambda: 100.0)
    first = call(guard, 1)
    assert isinstance(first, Forward)
    guard.upstream_answer(message({"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "bad"}}),
                          first.watch)
    assert isinstance(call(guard, 2), Forward)


def test_an_argument_check_made_under_a_replaced_policy_is_not_the_verdict() -> None:
    # Review: a reload lands while a call's arguments are checked off the pump; the old schema's verdict
    # must not decide under the new policy, whose schema is stricter: the call is checked again.
    from mcp_guard.actions import Defer
    from mcp_guard.argcheck import ArgumentChecks
    from mcp_guard.reload import Prepared

    def policy(pattern: str) -> object:
        return loads(json.dumps({"version": "1", "rules": {"work": {"arguments": {
            "type": "object", "properties": {"path": {"type": "string", "pattern": pattern}}}}}}))

    old, new = policy("^/srv/"), policy("^/tmp/")
    guard = Guard(old, clock=lambda: 100.0)  # type: ignore[arg-type]
    deferred = guard.client_request(message({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                             "params": {"name": "work", "arguments": {"path": "/srv/a"}}}))
    assert isinstance(deferred, Defer) and deferred.settle is not None
    guard.replace_policy(Prepared(new, ArgumentChecks(new), None))  # type: ignore[arg-type]
    settled = deferred.settle(None)  # what the check under the old schema found: nothing
    assert not isinstance(settled, Forward), "decided with the old schema's verdict"
