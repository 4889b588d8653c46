"""Live policy reload through the real binary: the policy file changes (or SIGHUP), the new policy takes
effect between messages, the client is told its tools changed (notifications/tools/list_changed in the
handshake era; on its subscriptions/listen stream in the 2026-07-28 era) and sees the new listing when it
lists again; an invalid policy is rejected with one line on stderr and an audit record, and the old one
stays in force."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from wireclient import WireProcess, guard_run

warnings.filterwarnings("ignore", category=DeprecationWarning)

SERVERS = Path(__file__).resolve().parent / "servers"
TINY = [sys.executable, str(SERVERS / "policy_tiny_server.py")]
TIMEOUT = 30
STATELESS_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientInfo": {"name": "wire-test", "version": "1"},
                  "io.modelcontextprotocol/clientCapabilities": {}}

BEFORE = {"version": "1", "rules": {"read_note": {"action": "allow", "rate_limit": {"max": 1, "window": 60}}},
          "hide": ["delete_everything"]}
AFTER = {"version": "1", "rules": {"read_note": {"action": "allow", "rate_limit": {"max": 1, "window": 60}}},
         "hide": ["echo"]}


def write_policy(path: Path, policy: dict[str, Any] | str) -> None:
    """Replaced the way editors save: a new file renamed over the old one."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(policy if isinstance(policy, str) else json.dumps(policy))
    os.replace(temporary, path)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def wait_for_record(path: Path, event: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in records(path) if r["event"] == event]
        if found:
            return found[-1]
        time.sleep(0.05)
    raise TimeoutError(f"no {event} record in {path}")


async def rejected(audit: Path) -> None:
    """Until the reload_rejected record is written (the first reload imports the schema validator)."""
    while not [r for r in records(audit) if r["event"] == "reload_rejected"]:
        await anyio.sleep(0.05)


async def sdk_reload(command: list[str], mode: str, policy: Path, replacement: dict[str, Any] | str,
                     audit: Path) -> tuple[set[str], set[str], int, list[bool]]:
    """List, change the policy file, wait to be told the tools changed (each era its own way), list again,
    then call echo and delete_everything."""
    told = anyio.Event()
    notices = 0

    async def on_message(message: Any) -> None:
        nonlocal notices
        root = getattr(message, "root", message)
        if getattr(root, "method", None) == "notifications/tools/list_changed":
            notices += 1
            told.set()

    params = StdioServerParameters(command=command[0], args=command[1:])
    async with Client(params, mode=mode, read_timeout_seconds=TIMEOUT,  # type: ignore[arg-type]
                      message_handler=on_message) as client:
        before = {tool.name for tool in (await client.list_tools()).tools}
        if mode == "legacy":
            write_policy(policy, replacement)
            if isinstance(replacement, dict):
                await told.wait()
            else:
                await rejected(audit)
        else:
            async with client.listen(tools_list_changed=True) as subscription:
                write_policy(policy, replacement)
                if isinstance(replacement, dict):
                    async for _event in subscription:
                        notices += 100  # told on the stream (the message handler sees the line as well)
                        break
                else:
                    await rejected(audit)
        after = {tool.name for tool in (await client.list_tools()).tools}
        errors = []
        for name, arguments in (("echo", {"text": "hi"}), ("delete_everything", {})):
            try:
                errors.append((await client.call_tool(name, arguments)).is_error)
            except Exception:  # noqa: BLE001 - a hidden tool's answer is whatever the server says of an unknown one
                errors.append(True)
        return before, after, notices, errors


def run_sdk(tmp_path: Path, mode: str, replacement: dict[str, Any] | str) -> tuple[Any, Path, Path]:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(BEFORE))
    audit = tmp_path / "audit.jsonl"
    command = guard_run("--policy", str(policy), "--audit", str(audit), "--", *TINY)

    async def bounded() -> Any:
        with anyio.fail_after(TIMEOUT):
            return await sdk_reload(command, mode, policy, replacement, audit)

    return anyio.run(bounded), policy, audit


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_a_valid_policy_takes_effect_and_the_client_is_told(tmp_path: Path, mode: str) -> None:
    (before, after, notices, errors), _, audit = run_sdk(tmp_path, mode, AFTER)
    assert before == {"echo", "add", "read_note"}
    assert after == {"add", "read_note", "delete_everything"}  # one tool appeared, one disappeared
    assert notices == (1 if mode == "legacy" else 101)
    assert errors == [True, False]  # echo is hidden now; delete_everything answers
    reload = next(r for r in records(audit) if r["event"] == "reload")
    assert reload["why"] == "the file changed" and reload["tools_changed"] is True
    assert reload["told"] == (["notifications/tools/list_changed"] if mode == "legacy"
                              else [f"subscription {reload['told'][0].split(' ', 1)[1]}"])
    calls = {r["tool"]: r["decision"] for r in records(audit) if r["event"] == "call"}
    assert calls == {"echo": "hidden", "delete_everything": "allowed"}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_an_invalid_policy_is_rejected_and_the_old_one_stays(tmp_path: Path, mode: str) -> None:
    (before, after, notices, errors), _, audit = run_sdk(tmp_path, mode, '{"version": "1", "rules": {"echo": 5}}')
    assert before == after == {"echo", "add", "read_note"}
    assert notices == 0
    assert errors == [False, True]  # the old policy: echo answers, delete_everything is still hidden
    rejected = next(r for r in records(audit) if r["event"] == "reload_rejected")
    assert rejected["why"] == "the file changed" and "rules.echo" in rejected["problem"]
    assert not [r for r in records(audit) if r["event"] == "reload"]


def test_the_initialize_answer_advertises_list_changed_and_counters_survive(spawn_guard, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(BEFORE))
    audit = tmp_path / "audit.jsonl"
    proc = spawn_guard(TINY, policy=str(policy), extra=("--audit", str(audit)))
    answer = proc.initialize()
    assert answer["result"]["capabilities"]["tools"]["listChanged"] is True
    proc.request("l1", "tools/list")
    assert not proc.request(1, "tools/call", {"name": "read_note", "arguments": {"name": "a"}})["result"]["isError"]
    write_policy(policy, AFTER)  # read_note's rule unchanged: its counter goes on
    assert proc.recv(TIMEOUT) == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    second = proc.request(2, "tools/call", {"name": "read_note", "arguments": {"name": "b"}})["result"]
    assert second["isError"] is True and "rate limit reached" in second["content"][0]["text"]
    changed = {**AFTER, "rules": {"read_note": {"action": "allow", "rate_limit": {"max": 2, "window": 60}}}}
    write_policy(policy, changed)  # its limit changed: counted afresh; what is listed did not change
    deadline = time.monotonic() + TIMEOUT
    while len([r for r in records(audit) if r["event"] == "reload"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    third = proc.request(3, "tools/call", {"name": "read_note", "arguments": {"name": "c"}})["result"]
    assert not third["isError"], third
    reloads = [r for r in records(audit) if r["event"] == "reload"]
    assert [r["tools_changed"] for r in reloads] == [True, False] and reloads[1]["told"] == []
    proc.close_stdin()
    assert proc.wait(TIMEOUT) == 0
    assert "policy reloaded (the file changed): policy" in proc.stderr


def test_sighup_reloads_and_does_not_stop(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(BEFORE))
    audit = tmp_path / "audit.jsonl"
    proc = WireProcess(guard_run("--policy", str(policy), "--audit", str(audit), "--", *TINY))
    try:
        proc.initialize()
        names = {t["name"] for t in proc.request("l1", "tools/list")["result"]["tools"]}
        assert "echo" in names
        # The same size and times, written in place: the file watcher sees nothing; only SIGHUP reloads.
        text = json.dumps(AFTER).ljust(len(json.dumps(BEFORE)))
        assert len(text) == len(json.dumps(BEFORE))
        stat = policy.stat()
        policy.write_text(text)
        os.utime(policy, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        time.sleep(1.5)
        assert not [r for r in records(audit) if r["event"] == "reload"]
        proc.proc.send_signal(signal.SIGHUP)
        assert proc.recv(TIMEOUT) == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
        names = {t["name"] for t in proc.request("l2", "tools/list")["result"]["tools"]}
        assert "echo" not in names and "delete_everything" in names
        assert wait_for_record(audit, "reload")["why"] == "SIGHUP"
        assert proc.proc.poll() is None
        proc.close_stdin()
        assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()


def test_with_no_reload_sighup_stops_and_the_file_is_not_watched(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(BEFORE))
    proc = WireProcess(guard_run("--policy", str(policy), "--no-reload", "--", *TINY))
    try:
        answer = proc.initialize()
        assert answer["result"]["capabilities"]["tools"].get("listChanged") is not True
        write_policy(policy, AFTER)
        time.sleep(1.5)
        names = {t["name"] for t in proc.request("l1", "tools/list")["result"]["tools"]}
        assert "echo" in names
        proc.proc.send_signal(signal.SIGHUP)
        assert proc.wait(TIMEOUT) == 128 + signal.SIGHUP
    finally:
        proc.kill()


def test_stateless_listings_stay_fresh_no_longer_than_a_second(spawn_guard, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(BEFORE))
    proc = spawn_guard([sys.executable, str(SERVERS / "recording_server.py")], policy=str(policy),
                       env={"RECORD_FILE": str(tmp_path / "record")})
    page = proc.request(1, "tools/list", {"_meta": STATELESS_META})["result"]
    assert page["ttlMs"] == 1000
