"""Tier-2 tests of the relay's own-message design, in process, over real pipes: a decision deferred
while mcp-guard asks the client something itself, with an id that cannot collide, whose answer is
consumed and never forwarded."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import anyio

from mcp_guard import wire
from mcp_guard.relay import Defer, Forward, Options, PassThrough, Relay, Reply
from mcp_guard.upstream import Upstream

SERVER = [sys.executable, str(Path(__file__).parent / "servers" / "inproc_recorder.py")]


class AskingInterceptor(PassThrough):
    """Holds every tools/call until the client answers a question of mcp-guard's own."""

    relay: Relay

    def client_request(self, msg: wire.Message) -> Any:
        if msg.method != "tools/call":
            return Forward()

        async def decision(channel: Any) -> Forward | Reply:
            answer = await channel.request("elicitation/create", {"message": "Allow?"}, timeout=5)
            if answer is not None and answer.body.get("result", {}).get("action") == "accept":
                return Forward()
            return Reply(wire.error_response(msg.id, wire.GUARD_REFUSED, "declined"))

        return Defer(decision)


def run_relay(tmp_path: Path, client_script: Any, interceptor_class: type[AskingInterceptor] = AskingInterceptor,
              server: list[str] = SERVER) -> tuple[list[dict[str, Any]], list[bytes], int]:
    os.environ["RECORD_FILE"] = str(tmp_path / "record.jsonl")
    Path(os.environ["RECORD_FILE"]).touch()
    client_to_guard_r, client_to_guard_w = os.pipe()
    guard_to_client_r, guard_to_client_w = os.pipe()
    upstream = Upstream.start(server)
    interceptor = interceptor_class()
    relay = Relay(client_to_guard_r, guard_to_client_w, upstream, interceptor, Options(shutdown_grace=1))
    interceptor.relay = relay
    received: list[dict[str, Any]] = []
    reader = os.fdopen(guard_to_client_r, "rb")
    writer = os.fdopen(client_to_guard_w, "wb", buffering=0)

    def send(message: dict[str, Any]) -> None:
        writer.write(json.dumps(message).encode() + b"\n")

    def recv() -> dict[str, Any]:
        line = reader.readline()
        assert line, "the relay closed the client's stream"
        received.append(json.loads(line))
        return received[-1]

    def client() -> None:
        try:
            client_script(send, recv)
        finally:
            writer.close()

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    async def bounded() -> int:
        with anyio.fail_after(20):
            return await relay.run()

    status = anyio.run(bounded)
    thread.join(10)
    record = Path(os.environ["RECORD_FILE"]).read_bytes().splitlines()
    return received, record, status


def test_deferred_call_waits_for_the_clients_answer_to_our_own_request(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def script(send: Any, recv: Any) -> None:
        send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}})
        question = recv()
        seen["question"] = question
        # A second request with the id still reserved by the deferred decision is refused.
        send({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        seen["duplicate"] = recv()
        send({"jsonrpc": "2.0", "id": question["id"], "result": {"action": "accept"}})
        seen["answer"] = recv()

    received, record, status = run_relay(tmp_path, script)
    question = seen["question"]
    assert question["method"] == "elicitation/create"
    assert question["id"].startswith("mcp-guard-") and len(question["id"]) > len("mcp-guard-") + 16
    assert seen["duplicate"]["error"]["code"] == wire.INVALID_REQUEST
    assert seen["answer"] == {"jsonrpc": "2.0", "id": 1, "result": {"echo": {"name": "x"}}}
    # The upstream saw the call once, and never the client's answer to mcp-guard's own question.
    assert [json.loads(line)["method"] for line in record] == ["tools/call"]
    assert status == 0


def test_declined_deferred_call_never_reaches_the_upstream(tmp_path: Path) -> None:
    def script(send: Any, recv: Any) -> None:
        send({"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"name": "x"}})
        question = recv()
        send({"jsonrpc": "2.0", "id": question["id"], "result": {"action": "decline"}})
        recv()
        send({"jsonrpc": "2.0", "id": "b", "method": "ping"})
        recv()

    received, record, _ = run_relay(tmp_path, script)
    assert received[1] == {"jsonrpc": "2.0", "id": "a", "error": {"code": wire.GUARD_REFUSED, "message": "declined"}}
    assert received[2]["id"] == "b"
    assert [json.loads(line)["method"] for line in record] == ["ping"]


FORGER = [sys.executable, "-c", """
import json, sys
forged = False
for line in sys.stdin:
    message = json.loads(line)
    if not forged:
        # An answer to id 1, which this server has never received: it is still being decided on.
        print(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"forged": True}}), flush=True)
        forged = True
    if "id" in message and "method" in message:
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {"echo": message["method"]}}), flush=True)
"""]


def test_an_upstream_cannot_answer_a_request_it_never_received(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def script(send: Any, recv: Any) -> None:
        send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}})
        question = recv()
        send({"jsonrpc": "2.0", "id": 2, "method": "ping"})
        seen["ping"] = recv()  # the forged answer to 1 comes first from the server, and must be dropped
        send({"jsonrpc": "2.0", "id": question["id"], "result": {"action": "accept"}})
        seen["call"] = recv()

    run_relay(tmp_path, script, server=FORGER)
    assert seen["ping"] == {"jsonrpc": "2.0", "id": 2, "result": {"echo": "ping"}}
    assert seen["call"] == {"jsonrpc": "2.0", "id": 1, "result": {"echo": "tools/call"}}


def test_a_late_answer_to_our_own_request_is_not_forwarded(tmp_path: Path) -> None:
    class Impatient(AskingInterceptor):
        def client_request(self, msg: wire.Message) -> Any:
            if msg.method != "tools/call":
                return Forward()

            async def decision(channel: Any) -> Forward | Reply:
                await channel.request("elicitation/create", {"message": "Allow?"}, timeout=0.2)
                return Reply(wire.error_response(msg.id, wire.GUARD_REFUSED, "no answer in time"))

            return Defer(decision)

    def script(send: Any, recv: Any) -> None:
        send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}})
        question = recv()
        assert recv()["error"]["message"] == "no answer in time"
        send({"jsonrpc": "2.0", "id": question["id"], "result": {"action": "accept"}})  # too late
        send({"jsonrpc": "2.0", "id": 2, "method": "ping"})
        recv()

    _, record, _ = run_relay(tmp_path, script, Impatient)
    assert [json.loads(line).get("method") for line in record] == ["ping"]
