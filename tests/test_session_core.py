"""The relay's session core (mcp_guard/session.py), sans-I/O: whole conversations played as bytes in,
bytes out, with no subprocess, no thread and no event loop. The framing is the relay's own (framing.py);
the interceptors are small real ones written against the actions.py contract."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_guard import wire
from mcp_guard.actions import Defer, Forward, PassThrough, Reply
from mcp_guard.exits import INTERNAL_ERROR_STATUS, Ending, ExitReason, exit_status
from mcp_guard.framing import LineFramer, Oversized
from mcp_guard.pending import CANCELLED_MEMORY
from mcp_guard.session import LARGE_ANSWER_BYTES, Effects, Session

LIMIT = 1 << 20


class Conversation:
    """Bytes from each side go through a framer into the core; what the core says to each side is kept
    as bytes, newline-terminated, as a pump would write them."""

    def __init__(self, interceptor: Any = None, limit: int = 64 << 20) -> None:
        self.core = Session(interceptor or PassThrough(), limit)
        self.client_framer = LineFramer(limit)
        self.upstream_framer = LineFramer(limit)
        self.to_client = b""
        self.to_upstream = b""
        self.effects: list[Effects] = []

    def _take(self, fx: Effects) -> Effects:
        self.effects.append(fx)
        self.to_client += b"".join(line + b"\n" for line in fx.to_client)
        self.to_upstream += b"".join(line + b"\n" for line in fx.to_upstream)
        return fx

    def client(self, data: bytes) -> Effects:
        return self._take(self.core.client_lines(self.client_framer.feed(data)))

    def upstream(self, data: bytes) -> Effects:
        return self._take(self.core.upstream_lines(self.upstream_framer.feed(data)))

    def call(self, name: str, *args: Any) -> Effects:
        return self._take(getattr(self.core, name)(*args))

    def client_said(self) -> list[Any]:
        out, self.to_client = self.to_client, b""
        return [json.loads(line) for line in out.splitlines()]

    def upstream_got(self) -> bytes:
        out, self.to_upstream = self.to_upstream, b""
        return out

    @property
    def ending(self) -> Ending | None:
        return self.core.ending


def req(request_id: Any, method: str = "ping", params: Any = None) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return json.dumps(body).encode() + b"\n"


def ans(request_id: Any, result: Any = None) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result or {}}).encode() + b"\n"


def cancel(request_id: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled",
                       "params": {"requestId": request_id}}).encode() + b"\n"


# --- lossless relay ----------------------------------------------------------------------------------


def test_a_request_and_its_answer_pass_byte_for_byte_even_cut_anywhere() -> None:
    c = Conversation()
    line = b'{"id" : "5", "jsonrpc":"2.0","method":"tools/call","params":{"b":1,"a":"\xc3\xa9"},"x":9007199254740993}\n'
    for i in range(0, len(line), 7):
        c.client(line[i:i + 7])
    assert c.upstream_got() == line
    answer = b'{"jsonrpc":"2.0","id":5,"result":{"z":1,"a":[]}}\n'  # 5 answers "5"
    c.upstream(answer[:10])
    c.upstream(answer[10:])
    assert c.to_client == answer


def test_cr_is_stripped_and_empty_lines_ignored() -> None:
    c = Conversation()
    c.client(b'\n  \n{"jsonrpc":"2.0",\r"id":1,"method":"ping"}\r\n')
    assert c.upstream_got() == b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n'
    assert c.to_client == b""


def test_batches_are_refused_each_request_answered() -> None:
    c = Conversation()
    c.client(b'[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","method":"notifications/x"}]\n')
    assert c.upstream_got() == b""
    (batch,) = c.client_said()
    assert [(item["id"], item["error"]["code"]) for item in batch] == [(1, wire.INVALID_REQUEST)]


def test_an_id_in_flight_is_refused_and_the_first_request_still_answered() -> None:
    c = Conversation()
    c.client(req(1) + req(1.0 if False else "1"))
    assert c.upstream_got() == req(1)
    (refusal,) = c.client_said()
    assert refusal["error"]["code"] == wire.INVALID_REQUEST and refusal["id"] == "1"
    c.upstream(ans(1))
    assert c.client_said() == [{"jsonrpc": "2.0", "id": 1, "result": {}}]


def test_bug4_an_empty_string_id_is_answered_under_that_id() -> None:
    """Latent bug 4: `"id": ""` was answered with `id: null` (a test of truth where `is not None` was
    meant), which leaves the client waiting for its answer."""
    c = Conversation()
    c.client(b'{"jsonrpc":"1.0","id":"","method":"ping"}\n')
    (answer,) = c.client_said()
    assert answer["id"] == "" and answer["error"]["code"] == wire.INVALID_REQUEST
    c.client(b'{"jsonrpc":"2.0","id":"","method":"ping"}\n')
    assert c.upstream_got() == b'{"jsonrpc":"2.0","id":"","method":"ping"}\n'


def test_oversized_lines_both_ways() -> None:
    c = Conversation(limit=100)
    c.client(b'{"jsonrpc":"2.0","id":7,"method":"x","params":"' + b"a" * 200 + b'"}\n')
    (refusal,) = c.client_said()
    assert refusal["id"] == 7 and refusal["error"]["code"] == wire.MESSAGE_TOO_LARGE
    c.client(req(8))
    c.upstream(b'{"jsonrpc":"2.0","id":8,"result":{"t":"' + b"b" * 300)
    c.upstream(b"b" * 300 + b'"}}\n')
    (lost,) = c.client_said()
    assert lost["id"] == 8 and lost["error"]["code"] == wire.MESSAGE_TOO_LARGE


def test_a_malformed_upstream_answer_fails_the_request_it_names() -> None:
    c = Conversation()
    c.client(req(3))
    c.upstream(b'{"jsonrpc":"2.0","id":3,"result":{oops}\n')
    (lost,) = c.client_said()
    assert lost["id"] == 3 and lost["error"]["code"] == wire.INTERNAL_ERROR


def test_an_answer_to_an_id_never_sent_is_dropped() -> None:
    c = Conversation()
    c.upstream(ans(99))
    assert c.to_client == b""


# --- bug 7: the large-answer fast path ---------------------------------------------------------------


def _large(request_id: int, tail: bytes = b"") -> bytes:
    return (b'{"jsonrpc":"2.0","id":' + str(request_id).encode() + b',"result":{"t":"'
            + b"x" * (LARGE_ANSWER_BYTES + 10) + b'"}' + tail + b"}\n")


def test_a_large_answer_passes_byte_for_byte() -> None:
    c = Conversation()
    c.client(req(1))
    line = _large(1)
    c.upstream(line)
    assert c.to_client == line


@pytest.mark.parametrize("size", ["small", "large"])
def test_bug7_a_second_top_level_id_is_read_as_a_small_line_is(size: str) -> None:
    """Latent bug 7: an answer over 1 MiB was matched by its head alone, so `{"id":1,...,"id":2}` went to
    request 1 while a reader keeping the last key (json, the SDKs) reads it as 2's. Now any second "id"
    sends it to the full parse: it is treated exactly as the same small line is."""
    c = Conversation()
    c.client(req(1))
    line = _large(1, b',"id":2') if size == "large" else b'{"jsonrpc":"2.0","id":1,"result":{},"id":2}\n'
    c.upstream(line)
    assert c.to_client == b""  # an answer to 2, which was never sent: dropped, and 1 still pending
    c.upstream(ans(1))
    assert c.client_said() == [{"jsonrpc": "2.0", "id": 1, "result": {}}]


# --- cancellation ------------------------------------------------------------------------------------


class Watching(PassThrough):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def client_request(self, msg: wire.Message) -> Any:
        return Forward(watch=msg.method)

    def upstream_answer(self, msg: wire.Message, watch: Any) -> Any:
        self.seen.append(("answer", watch))
        if watch == "tools/list":
            return Reply(wire.error_response(msg.id, wire.INTERNAL_ERROR, "filtered"))
        return Forward()

    def upstream_answer_lost(self, watch: Any) -> None:
        self.seen.append(("lost", watch))


def test_a_cancelled_request_is_not_waited_for_and_its_late_answer_dropped() -> None:
    watching = Watching()
    c = Conversation(watching)
    c.client(req(1, "tools/call") + cancel(1))
    assert c.upstream_got() == req(1, "tools/call") + cancel(1)
    assert watching.seen == [("lost", "tools/call")]
    c.call("client_closed")
    assert c.ending == Ending(ExitReason.CLIENT_CLOSED)  # nothing owed: the drain ends at once
    c.upstream(ans(1))
    assert c.to_client == b""


def test_a_reused_id_shows_the_first_answer_to_the_cancelled_requests_watch_too() -> None:
    watching = Watching()
    c = Conversation(watching)
    c.client(req(1, "tools/list") + cancel(1) + req(1, "ping"))
    c.upstream(ans(1, {"tools": []}))
    (answer,) = c.client_said()
    assert answer["error"]["message"] == "filtered"  # the late listing is filtered as the listing it may be


def test_the_cancelled_memory_is_bounded() -> None:
    c = Conversation()
    for i in range(CANCELLED_MEMORY + 10):
        c.client(req(i) + cancel(i))
    assert len(c.core.pending._cancelled) == CANCELLED_MEMORY


def test_a_long_lived_stream_is_not_owed() -> None:
    c = Conversation()
    c.client(req("s", "subscriptions/listen") + req(2))
    c.call("client_closed")
    assert c.ending is None
    c.upstream(ans(2))
    assert c.ending == Ending(ExitReason.CLIENT_CLOSED)


# --- deferred decisions ------------------------------------------------------------------------------


class Deferring(PassThrough):
    def __init__(self) -> None:
        self.settled: list[Any] = []

    def client_request(self, msg: wire.Message) -> Any:
        if msg.method != "tools/call":
            return Forward()

        async def decision(channel: Any) -> Any:
            return "ok"

        def settle(result: Any) -> Any:
            self.settled.append(result)
            return Forward() if result == "ok" else Reply(wire.error_response(msg.id, wire.GUARD_REFUSED, "no"))

        return Defer(decision, settle)


def test_a_deferred_request_holds_its_id_and_is_forwarded_when_settled() -> None:
    deferring = Deferring()
    c = Conversation(deferring)
    fx = c.client(req(1, "tools/call"))
    (deferred,) = fx.start
    assert c.upstream_got() == b""
    c.client(req(1))
    assert c.client_said()[0]["error"]["code"] == wire.INVALID_REQUEST
    c.upstream(ans(1))  # an answer to a request the upstream never received
    assert c.to_client == b""
    c.call("decision_settled", deferred, "ok", False)
    assert deferring.settled == ["ok"] and c.upstream_got() == req(1, "tools/call")
    c.upstream(ans(1))
    assert c.client_said()[0]["result"] == {}


def test_a_cancelled_deferred_request_is_never_settled_nor_forwarded() -> None:
    deferring = Deferring()
    c = Conversation(deferring)
    (deferred,) = c.client(req(1, "tools/call")).start
    fx = c.client(cancel(1))
    assert fx.cancel == [deferred]
    c.call("decision_settled", deferred, "ok", False)
    assert deferring.settled == [] and c.upstream_got() == cancel(1)
    assert c.to_client == b""


def test_a_failed_decision_refuses_and_a_settle_may_defer_again() -> None:
    class Twice(Deferring):
        def client_request(self, msg: wire.Message) -> Any:
            async def decision(channel: Any) -> Any:
                return None

            return Defer(decision, lambda result: Defer(decision, lambda again: Forward()))

    c = Conversation(Twice())
    (first,) = c.client(req(1, "tools/call")).start
    (second,) = c.call("decision_settled", first, None, False).start
    c.call("decision_settled", second, None, False)
    assert c.upstream_got() == req(1, "tools/call")
    (third,) = c.client(req(2, "tools/call")).start
    c.call("decision_settled", third, None, True)
    assert c.client_said()[0]["error"]["code"] == wire.INTERNAL_ERROR


def test_own_requests_are_consumed_and_late_answers_never_forwarded() -> None:
    c = Conversation()
    token = object()
    c.call("own_request", token, "elicitation/create", {"message": "Allow?"})
    (question,) = c.client_said()
    assert question["id"].startswith(c.core.own_prefix)
    fx = c.client(ans(question["id"], {"action": "accept"}))
    assert fx.own_answers[0][0] is token and fx.own_answers[0][1].body["result"] == {"action": "accept"}
    c.call("own_request_done", token, False)
    c.client(ans(question["id"]))  # late: dropped
    assert c.upstream_got() == b""
    c.client(req(question["id"]))  # the client cannot use our ids
    assert c.client_said()[0]["error"]["code"] == wire.INVALID_REQUEST
    other = object()
    c.call("own_request", other, "elicitation/create", None)
    c.client_said()
    c.call("own_request_done", other, True)  # given up: the client is told
    (cancelled,) = c.client_said()
    assert cancelled["method"] == "notifications/cancelled"


def test_own_ids_never_reach_the_upstream_nor_come_from_it() -> None:
    """Review: the client's answer to a request with one of mcp-guard's ids is mcp-guard's, so an upstream
    that sent a request under such an id could have its elicitation's "accept" taken as the approval of
    another call. Our ids carry a nonce the upstream cannot guess; a client's notifications/cancelled
    naming one must not hand it to the upstream, and an upstream request under one is refused."""
    c = Conversation()
    token = object()
    c.call("own_request", token, "elicitation/create", {"message": "Allow delete_file?"})
    (question,) = c.client_said()
    c.client(b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"'
             + question["id"].encode() + b'"}}\n')
    assert c.upstream_got() == b""
    c.upstream(req(question["id"], "elicitation/create", {"message": "Show the weather?"}))
    assert c.client_said() == []
    (refused,) = [json.loads(line) for line in c.upstream_got().splitlines()]
    assert refused["id"] == question["id"] and refused["error"]["code"] == wire.INVALID_REQUEST
    fx = c.client(ans(question["id"], {"action": "accept"}))
    assert fx.own_answers[0][0] is token


# --- endings and the exit status ---------------------------------------------------------------------


def test_drain_waits_for_owed_answers_then_ends_with_0() -> None:
    c = Conversation()
    c.client(req(1))
    assert c.call("client_closed").draining
    assert c.ending is None
    fx = c.upstream(ans(1))
    assert fx.finish == Ending(ExitReason.CLIENT_CLOSED) and exit_status(fx.finish) == 0


def test_a_drain_that_times_out_with_requests_owed_does_not_exit_0() -> None:
    c = Conversation()
    c.client(req(1))
    c.call("client_closed")
    fx = c.call("drain_timed_out", 1.0)
    assert fx.finish is not None and fx.finish.reason is ExitReason.DRAIN_TIMED_OUT
    assert exit_status(fx.finish) == 1
    assert "stopped waiting" in c.client_said()[0]["error"]["message"]


@pytest.mark.parametrize("child, owed, status", [(0, False, 0), (0, True, 1), (3, False, 3), (137, True, 137)])
def test_the_child_exiting_first(child: int, owed: bool, status: int) -> None:
    c = Conversation()
    if owed:
        c.client(req(1))
    fx = c.call("upstream_ended", child)
    assert fx.finish is not None and exit_status(fx.finish) == status
    assert [a["error"]["code"] for a in c.client_said()] == ([wire.UPSTREAM_EXITED] if owed else [])
    c.client(req(2))  # after the child is gone: answered, never forwarded
    assert c.client_said()[0]["error"]["code"] == wire.UPSTREAM_EXITED and c.upstream_got() == req(1) * owed


def test_exit_table() -> None:
    assert exit_status(Ending(ExitReason.UPSTREAM_CLOSED_OUTPUT)) == 1
    assert exit_status(Ending(ExitReason.CLIENT_OUTPUT_CLOSED)) == 0
    assert exit_status(Ending(ExitReason.SIGNAL, signum=15)) == 143
    assert exit_status(Ending(ExitReason.INTERNAL_ERROR)) == INTERNAL_ERROR_STATUS


@pytest.mark.parametrize("answer_first", [True, False])
def test_bug5_a_signal_and_an_answer_in_either_order_answer_each_request_once(answer_first: bool) -> None:
    """Latent bug 5: the signal and child-exit paths checked the pending table outside the lock and
    acted on it inside. The core has one thread and no lock: whichever comes first, each request gets
    exactly one answer, and the signal's status stands."""
    c = Conversation()
    c.client(req(1) + req(2))
    if answer_first:
        c.upstream(ans(1))
    fx = c.call("signalled", 15)
    if not answer_first:
        c.upstream(ans(1))  # late: its request was answered with -32001 already
    c.call("upstream_ended", 0)
    answers = c.client_said()
    assert sorted(a["id"] for a in answers) == [1, 2]
    assert fx.finish is not None and exit_status(c.ending) == 143  # type: ignore[arg-type]
    c.client(req(3))  # during the shutdown: answered, never forwarded
    assert c.client_said()[0]["error"]["code"] == wire.UPSTREAM_EXITED
    assert c.upstream_got() == req(1) + req(2)


def test_bug9_a_signal_during_a_normal_shutdown_is_not_received_again(caplog: Any) -> None:
    """Latent bug 9: a signal during the shutdown that followed the client's EOF was logged as
    "received SIGTERM again"."""
    c = Conversation()
    c.call("client_closed")
    with caplog.at_level(logging.WARNING, logger="mcp_guard"):
        fx = c.call("signalled", 15)
    assert fx.kill_upstream and "again" not in caplog.text and "while shutting down" in caplog.text
    assert c.ending == Ending(ExitReason.CLIENT_CLOSED)
    caplog.clear()
    c2 = Conversation()
    c2.call("signalled", 2)
    with caplog.at_level(logging.WARNING, logger="mcp_guard"):
        assert c2.call("signalled", 15).kill_upstream
    assert "received SIGTERM again" in caplog.text


def test_an_interceptor_that_raises_fails_closed() -> None:
    class Raising(PassThrough):
        def client_request(self, msg: wire.Message) -> Any:
            raise RuntimeError("bug")

    c = Conversation(Raising())
    c.client(req(1))
    assert c.client_said()[0]["error"]["code"] == wire.INTERNAL_ERROR and c.upstream_got() == b""


def test_the_framer_keeps_oversized_heads_and_final_lines() -> None:
    framer = LineFramer(10)
    assert framer.feed(b'{"id":1,') == []
    assert framer.feed(b'"x":"long"}\nok\nfin') == [Oversized(19, b'{"id":1,"x":"long"}'), b"ok"]
    assert framer.end() == [b"fin"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12),
       st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=20), st.integers(8, 60))
def test_the_framer_is_the_same_however_the_bytes_are_cut(lines: list[bytes], cuts: list[int], limit: int) -> None:
    data = b"".join(line + b"\n" for line in lines)
    framer = LineFramer(limit)
    out: list[bytes | Oversized] = []
    position, index = 0, 0
    while position < len(data):
        size = cuts[index % len(cuts)]
        out += framer.feed(data[position:position + size])
        position, index = position + size, index + 1
    out += framer.end()
    # An oversized line keeps the head it had when it went over the limit (at most 512 bytes).
    seen = [item if isinstance(item, bytes) else (item.size, line.startswith(item.head))
            for item, line in zip(out, lines, strict=False)]
    assert len(out) == len(lines)
    assert seen == [line if len(line) <= limit else (len(line), True) for line in lines]
