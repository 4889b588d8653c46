"""The real llm-cli-gateway 3.1.0-rc.8 (built from its source by tests/compat/install.sh), each run with
a scratch HOME of its own, driven with raw JSON-RPC lines, directly and through the real `mcp-guard`:

- an allow-all policy changes nothing: the same listing byte for byte (and it is the recorded fixture),
  the same answers to the tools that really answer here;
- examples/policies/llm-cli-gateway.json on the live server: hidden tools gone, approval tools refused
  with their reasons, argument rules on the real argument names, a shared rate limit biting;
  `mcp-guard check` is clean against it;
- the seed policy {"default": "deny", "hide": ["llm_job_cancel"]}: every call refused with a reason,
  llm_job_cancel invisible, and nothing but the handshake and the listing reaches the gateway (a tee
  recorder in front of it, and its own state under the scratch HOME).

No provider CLI is installed here; no call in these tests would start one even where one is installed
(provider tools are only ever called without a prompt, which the gateway refuses before launching).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from wireclient import WireProcess

from .compat import ALLOW_ALL, PYTHON, ROOT, LlmCliGateway, guard_bin, guarded, run_scenario, write_policy

FIXTURE = ROOT.parent / "shared" / "fixtures" / "llm-cli-gateway-3.1.0-rc.8-tools-list.json"
EXAMPLE = ROOT / "examples" / "policies" / "llm-cli-gateway.json"
TEE = ROOT / "tests" / "servers" / "tee_recorder.py"
SEED = {"version": "1", "default": "deny", "hide": ["llm_job_cancel"]}
UNKNOWN_JOB = "no-such-job-00000000"
# How the gateway refuses a provider call without a prompt, before it would start any provider CLI
# ("one of `prompt` or `promptParts` is required"; devin: "prompt is required and cannot be empty";
# cursor: its input schema's "Required" at path ["prompt"]).
PROMPT_REQUIRED = re.compile(r"prompt\b.*\brequired", re.IGNORECASE | re.DOTALL)
TIMEOUT = 30.0  # per answer: the gateway starts in about 1 s, answers in milliseconds

Start = Callable[[list[str], dict[str, str]], WireProcess]


@pytest.fixture
def start() -> Iterator[Start]:
    started: list[WireProcess] = []

    def spawn(argv: list[str], env: dict[str, str]) -> WireProcess:
        proc = WireProcess(argv, env=env)
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        proc.kill()


@pytest.fixture(scope="module")
def fixture() -> dict[str, Any]:
    assert FIXTURE.exists(), f"{FIXTURE} is missing"
    result: dict[str, Any] = json.loads(FIXTURE.read_text())
    return result


def scratch_home(base: Path, name: str) -> Path:
    home = base / name
    home.mkdir()
    return home


def call(proc: WireProcess, request_id: int, name: str, arguments: dict[str, Any]) -> Any:
    return proc.request(request_id, "tools/call", {"name": name, "arguments": arguments}, timeout=TIMEOUT)


def text_of(answer: Any) -> str:
    return str(answer["result"]["content"][0]["text"])


def refusal(answer: Any) -> dict[str, Any]:
    """mcp-guard's decision record on a refused call (a result with isError, not a JSON-RPC error)."""
    result = answer["result"]
    assert result["isError"] is True, answer
    decision: dict[str, Any] = result["_meta"]["mcp-guard/decision"]
    assert decision["reason"] and decision["reason"] in result["content"][0]["text"], answer
    return decision


def finish(proc: WireProcess) -> None:
    """Close the client's side; the gateway exits on stdin EOF, and so does mcp-guard after it."""
    proc.close_stdin()
    assert proc.wait(TIMEOUT) == 0, proc.stderr[-2000:]


# ---- what is volatile between two runs ------------------------------------------------------------

_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# llm_process_health reports the gateway process's own memory use.
_MEMORY = re.compile(r'"(rss|heapUsed|heapTotal|external|arrayBuffers)": \d+')


def normalise(value: Any, home: Path) -> Any:
    """Only what legitimately differs between two runs of the gateway: wall-clock timestamps, the random
    UUIDs (session ids, correlation ids; numbered in order of appearance, so the same id in two places
    stays the same), the memory figures of llm_process_health, and the scratch HOME's path."""
    uuids: dict[str, str] = {}

    def number(match: re.Match[str]) -> str:
        return uuids.setdefault(match.group(0), f"<UUID-{len(uuids) + 1}>")

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            item = item.replace(str(home), "<HOME>")
            item = _TIMESTAMP.sub("<TIMESTAMP>", item)
            item = _MEMORY.sub(lambda m: f'"{m.group(1)}": <BYTES>', item)
            return _UUID.sub(number, item)
        if isinstance(item, dict):
            return {walk(k): walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        return item

    return walk(value)


# ---- parity: directly and through an allow-all mcp-guard ------------------------------------------


def conversation(proc: WireProcess) -> dict[str, Any]:
    """The same conversation whatever is in front of the gateway: the handshake, the listing (raw line
    kept), and calls to the tools that really answer here, in an order that exercises the session store."""
    out: dict[str, Any] = {"initialize": proc.initialize()}
    proc.send({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
    while True:
        raw = proc.recv_raw(TIMEOUT)
        assert raw is not None, proc.stderr[-2000:]
        message = json.loads(raw)
        if message.get("id") == 1 and "method" not in message:
            out["tools/list"] = raw
            break
        proc.other.append(message)
    ids = itertools.count(2)
    calls: list[dict[str, Any]] = []

    def do(name: str, arguments: dict[str, Any]) -> Any:
        answer = call(proc, next(ids), name, arguments)
        calls.append({"call": name, "arguments": arguments, "answer": answer})
        return answer

    do("llm_process_health", {})
    do("session_list", {})
    created = do("session_create", {"cli": "claude", "description": "mcp-guard compat"})
    session_id = json.loads(text_of(created))["session"]["id"]
    do("session_list", {})
    do("session_get", {"sessionId": session_id})
    do("session_delete", {"sessionId": session_id})
    do("session_get", {"sessionId": session_id})
    do("session_list", {})
    do("session_create", {})  # missing `cli`: the gateway's own validation error
    do("list_models", {})
    do("llm_job_status", {"jobId": UNKNOWN_JOB})
    do("llm_job_cancel", {"jobId": UNKNOWN_JOB})
    do("no_such_tool", {})
    out["calls"] = calls
    out["unprompted"] = list(proc.other)
    finish(proc)
    return out


@pytest.fixture(scope="module")
def parity(llm_cli_gateway: LlmCliGateway, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One direct run and one through `mcp-guard run --policy <allow-all>`, each with a fresh HOME."""
    base = tmp_path_factory.mktemp("gateway-parity")
    policy = write_policy(base, ALLOW_ALL, "allow-all.json")
    runs: dict[str, Any] = {}
    for name, argv in (("direct", llm_cli_gateway.argv), ("guarded", guarded(llm_cli_gateway.argv, policy))):
        home = scratch_home(base, f"home-{name}")
        proc = WireProcess(argv, env=llm_cli_gateway.env(home))
        try:
            runs[name] = {"home": home, **conversation(proc)}
        finally:
            proc.kill()
    return runs


def test_listing_is_the_recorded_one_and_passes_byte_for_byte(parity: dict[str, Any],
                                                              fixture: dict[str, Any]) -> None:
    direct, guarded_run = parity["direct"], parity["guarded"]
    assert guarded_run["tools/list"] == direct["tools/list"]
    listing = json.loads(direct["tools/list"])["result"]
    assert listing == fixture  # the live 3.1.0-rc.8 offers exactly what was recorded: 64 tools
    assert len(listing["tools"]) == 64
    assert direct["initialize"]["result"]["serverInfo"] == {"name": "llm-cli-gateway", "version": "3.1.0-rc.8"}
    assert guarded_run["initialize"] == direct["initialize"]


def test_calls_answer_the_same_directly_and_through_allow_all(parity: dict[str, Any]) -> None:
    direct, guarded_run = parity["direct"], parity["guarded"]
    answers = {i: c["answer"] for i, c in enumerate(direct["calls"])}
    texts = {i: text_of(a) if "result" in a else None for i, a in answers.items()}
    # The tools really answered (so the comparison below compares something).
    health = json.loads(texts[0])
    assert health["success"] is True and health["persistence"]["dbPath"].startswith(str(direct["home"]))
    assert json.loads(texts[1])["total"] == 0
    session = json.loads(texts[2])["session"]
    assert session["cli"] == "claude" and session["description"] == "mcp-guard compat"
    assert [s["id"] for s in json.loads(texts[3])["sessions"]] == [session["id"]]
    assert json.loads(texts[4])["session"]["id"] == session["id"]
    assert json.loads(texts[5])["success"] is True
    assert json.loads(texts[6]) == {"success": False, "error": "Session not found"}
    assert json.loads(texts[7])["total"] == 0
    assert answers[8]["result"]["isError"] is True and "cli" in texts[8]
    assert "claude" in json.loads(texts[9])
    assert json.loads(texts[10])["error"] == "Job not found" and answers[10]["result"]["isError"] is True
    assert json.loads(texts[11])["reason"] == "Job not found" and answers[11]["result"]["isError"] is True
    assert "no_such_tool" in texts[12] and answers[12]["result"]["isError"] is True  # the gateway's own
    # Through the guard: the same answers, up to timestamps, random ids, memory figures and HOME.
    assert (normalise(guarded_run["calls"], guarded_run["home"]) == normalise(direct["calls"], direct["home"]))
    assert guarded_run["unprompted"] == direct["unprompted"]


SDK_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("llm_process_health", {}),
    ("session_list", {}),
    ("list_models", {}),
    ("llm_job_status", {"jobId": UNKNOWN_JOB}),
    ("llm_job_cancel", {"jobId": UNKNOWN_JOB}),
    ("no_such_tool", {}),
]


def test_sdk_client_in_auto_mode_sees_the_same_gateway_through_allow_all(
        llm_cli_gateway: LlmCliGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's Client in `auto` mode, as newer clients connect: it first probes the 2026-07-28 era
    (server/discover), which the gateway does not speak, and falls back to 2025-11-25; through mcp-guard
    exactly as directly. (The legacy handshake is the raw conversation above.)"""
    policy = write_policy(tmp_path, ALLOW_ALL, "allow-all.json")
    runs = {}
    for name, argv in (("direct", llm_cli_gateway.argv), ("guarded", guarded(llm_cli_gateway.argv, policy))):
        home = scratch_home(tmp_path, f"home-{name}")
        env = llm_cli_gateway.env(home)  # run_scenario starts the server with this process's environment
        for key in set(os.environ) - set(env):
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        runs[name] = normalise(run_scenario(argv, "auto", SDK_CALLS, [], settle=0.2), home)
    direct = runs["direct"]
    assert direct["protocol_version"] == "2025-11-25"
    assert direct["server_info"]["name"] == "llm-cli-gateway" and len(direct["tools"]) == 64
    assert [c["call"] for c in direct["calls"] if "result" in c] == [name for name, _ in SDK_CALLS]
    assert runs["guarded"] == direct


def as_missing(answer: dict[str, Any], name: str) -> str:
    """An answer to a call of `name`, without its id and with the name replaced by a placeholder: a hidden
    tool must get exactly the answer the gateway gives a name it does not have."""
    body = {key: value for key, value in answer.items() if key != "id"}
    text = json.dumps(body, sort_keys=True)
    assert name in text, text  # the answer names the tool (so the comparison is not vacuous)
    return text.replace(name, "<NAME>")


# ---- examples/policies/llm-cli-gateway.json on the live server ------------------------------------


def test_example_policy_on_the_live_gateway(llm_cli_gateway: LlmCliGateway, start: Start, tmp_path: Path,
                                            fixture: dict[str, Any]) -> None:
    policy = json.loads(EXAMPLE.read_text())
    rules = policy["rules"]
    proc = start(guarded(llm_cli_gateway.argv, str(EXAMPLE)), llm_cli_gateway.env(scratch_home(tmp_path, "home")))
    proc.initialize()
    ids = itertools.count(1)

    # Hidden: gone from the listing, every other tool exactly as the gateway describes it.
    hidden = set(policy["hide"])
    assert hidden == {"session_clear_all", "provider_admin_mutate", "config_recover_kit_attempt", "cli_upgrade"}
    listing = proc.request(next(ids), "tools/list", {}, timeout=TIMEOUT)["result"]
    assert listing["tools"] == [t for t in fixture["tools"] if t["name"] not in hidden]
    for name in sorted(hidden):  # the gateway's own answer for a name it does not have, up to the name
        assert as_missing(call(proc, next(ids), name, {}), name) == as_missing(
            call(proc, next(ids), "no_such_tool_here", {}), "no_such_tool_here")

    # Approval tools: refused with the rule's reason (this raw client declared no elicitation, and no
    # approval command is set: nobody can be asked); a session made through the guard survives the
    # refused session_delete.
    created = json.loads(text_of(call(proc, next(ids), "session_create", {"cli": "codex"})))
    session_id = created["session"]["id"]
    for name, arguments, key in [("llm_job_cancel", {"jobId": UNKNOWN_JOB}, "llm_job_cancel"),
                                 ("session_delete", {"sessionId": session_id}, "session_delete"),
                                 ("config_init", {}, "config_*"),
                                 ("workspace_create", {}, "workspace_create")]:
        decision = refusal(call(proc, next(ids), name, arguments))
        assert (decision["action"], decision["rule"]) == ("require_approval", key), decision
        if "reason" in rules[key]:
            assert decision["reason"].startswith(rules[key]["reason"] + ": approval is required"), decision
    still = json.loads(text_of(call(proc, next(ids), "session_get", {"sessionId": session_id})))
    assert still["session"]["id"] == session_id
    status = json.loads(text_of(call(proc, next(ids), "config_status", {})))  # exact allow beats config_*
    assert "kitProviders" in status

    # Argument rules, on the real argument names of the provider tools. No prompt is sent, so a call
    # that got through would only meet the gateway's own "prompt required", never a provider CLI.
    for name, arguments, key, argument in [
            ("claude_request", {"dangerouslySkipPermissions": True}, "claude_request", "dangerouslySkipPermissions"),
            ("claude_request", {"permissionMode": "bypassPermissions"}, "claude_request", "permissionMode"),
            ("claude_request_async", {"permissionMode": "bypassPermissions"}, "*_request_async", "permissionMode"),
            ("codex_request", {"dangerouslyBypassApprovalsAndSandbox": True}, "*_request",
             "dangerouslyBypassApprovalsAndSandbox"),
            ("gemini_request", {"yolo": True}, "*_request", "yolo"),
            ("devin_request", {"permissionMode": "dangerous"}, "*_request", "permissionMode")]:
        decision = refusal(call(proc, next(ids), name, arguments))
        assert (decision["action"], decision["rule"]) == ("deny", key), decision
        assert decision["reason"].startswith(rules[key]["reason"]) and argument in decision["reason"], decision
    through = call(proc, next(ids), "claude_request", {"permissionMode": "plan"})
    assert "mcp-guard/decision" not in through["result"].get("_meta", {})
    assert "one of `prompt` or `promptParts` is required" in text_of(through)  # the gateway's words

    # The rate limit of "*_request_async" (5 a minute) is shared by every provider's async tool; the
    # gateway's error results still count (the tool ran), the argument refusal above took nothing.
    limit = rules["*_request_async"]["rate_limit"]
    providers = ["codex", "gemini", "grok", "devin", "cursor"]
    assert limit == {"max": len(providers), "window": 60}
    for provider in providers:
        answer = call(proc, next(ids), f"{provider}_request_async", {})
        assert answer["result"]["isError"] is True and PROMPT_REQUIRED.search(text_of(answer)), answer
    decision = refusal(call(proc, next(ids), "mistral_request_async", {}))
    assert (decision["action"], decision["rule"]) == ("deny", "*_request_async"), decision
    assert decision["reason"] == "rate limit reached: at most 5 call(s) per 60 s"
    assert 0 < decision["retry_after"] <= 60
    finish(proc)


def test_check_is_clean_against_the_live_gateway(llm_cli_gateway: LlmCliGateway, tmp_path: Path) -> None:
    policy = json.loads(EXAMPLE.read_text())
    proc = subprocess.run([guard_bin(), "check", str(EXAMPLE), "--", *llm_cli_gateway.argv], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=llm_cli_gateway.env(scratch_home(tmp_path, "home")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" not in proc.stdout.lower(), proc.stdout
    assert f"The server offers 64 tool(s); the agent will see {64 - len(policy['hide'])}:" in proc.stdout
    assert proc.stdout.rstrip().endswith(f"{EXAMPLE.name}: OK"), proc.stdout
    # The table groups tools by what the policy does: a "hidden (4):" header, then one tool per line.
    shown: dict[str, str] = {}
    group = ""
    for line in proc.stdout.splitlines():
        if line.startswith("  ") and not line.startswith("  |"):  # "  | ": the server's own stderr
            shown[line.split()[0]] = group
        elif line.endswith("):") and " (" in line:
            group = line.rsplit(" (", 1)[0]
    assert len(shown) == 64 and {n for n, g in shown.items() if g == "hidden"} == set(policy["hide"])


# ---- the seed policy: deny everything, hide llm_job_cancel ----------------------------------------


def gateway_state(home: Path) -> dict[str, Any]:
    """What the gateway keeps under HOME that a call could change: the session store, and the rows of
    its flight recorder's requests and jobs."""
    state_dir = home / ".llm-cli-gateway"
    with sqlite3.connect(state_dir / "logs.db") as db:
        rows = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("requests", "jobs")}
    return {"sessions.json": (state_dir / "sessions.json").read_bytes(), **rows}


def test_seed_policy_refuses_everything_and_nothing_reaches_the_gateway(
        llm_cli_gateway: LlmCliGateway, start: Start, tmp_path: Path, fixture: dict[str, Any]) -> None:
    home = scratch_home(tmp_path, "home")
    env = llm_cli_gateway.env(home)

    # Before: a session made directly, so there is state a call could change.
    before = start(llm_cli_gateway.argv, env)
    before.initialize()
    session = json.loads(text_of(call(before, 1, "session_create", {"cli": "codex", "description": "seed"})))["session"]
    finish(before)
    state = gateway_state(home)

    # Through mcp-guard with the seed policy, a tee recorder between mcp-guard and the gateway.
    seen = tmp_path / "seen-by-gateway.jsonl"
    tee_argv = [PYTHON, str(TEE), *llm_cli_gateway.argv]
    proc = start(guarded(tee_argv, write_policy(tmp_path, SEED)), {**env, "RECORD_FILE": str(seen)})
    proc.initialize()
    names = [t["name"] for t in proc.request(1, "tools/list", {}, timeout=TIMEOUT)["result"]["tools"]]
    assert names == [t["name"] for t in fixture["tools"] if t["name"] != "llm_job_cancel"]
    assert len(names) == 63
    for i, name in enumerate(names, start=2):
        arguments = {"sessionId": session["id"]} if name.startswith("session_") else {}
        decision = refusal(call(proc, i, name, arguments))
        assert (decision["action"], decision["rule"]) == ("deny", None), decision
        assert name in decision["reason"]
    cancel = call(proc, 100, "llm_job_cancel", {"jobId": UNKNOWN_JOB})
    finish(proc)

    # Nothing but the handshake and the listing reached the gateway, and its state is as it was.
    reached = [json.loads(line).get("method") for line in seen.read_bytes().splitlines()]
    # The hidden llm_job_cancel went out as a probe: a call with no arguments to a random name the
    # gateway does not have (never the hidden name, never the job id).
    assert reached == ["initialize", "notifications/initialized", "tools/list", "tools/call"], reached
    probe = json.loads(seen.read_bytes().splitlines()[-1])["params"]
    assert probe["arguments"] == {} and probe["name"] not in names + ["llm_job_cancel"], probe
    assert "llm_job_cancel" not in seen.read_text() and UNKNOWN_JOB not in seen.read_text()
    assert gateway_state(home) == state

    # After, directly and through the same recorder (which does see calls): the session is still there.
    seen_after = tmp_path / "seen-after.jsonl"
    after = start(tee_argv, {**env, "RECORD_FILE": str(seen_after)})
    after.initialize()
    got = json.loads(text_of(call(after, 1, "session_get", {"sessionId": session["id"]})))
    assert got["session"]["id"] == session["id"] and got["session"]["description"] == "seed"
    # The hidden tool's answer through the guard is the gateway's own answer for a name it lacks.
    assert as_missing(cancel, "llm_job_cancel") == as_missing(
        call(after, 2, "no_such_tool_here", {}), "no_such_tool_here")
    finish(after)
    assert "tools/call" in [json.loads(line).get("method") for line in seen_after.read_bytes().splitlines()]


# ---- a global limit across two mcp-guard processes, each in front of its own gateway -------------


def test_a_global_limit_spans_two_guards_in_front_of_the_real_gateway(llm_cli_gateway: LlmCliGateway, start: Start,
                                                                       tmp_path: Path) -> None:
    """Two clients, two mcp-guard processes, two gateways; one SQLite store: 3 llm_process_health calls an
    hour in all. The first three calls (whichever guard takes them) reach a gateway, the fourth is refused."""
    policy = write_policy(tmp_path, {"version": "1", "name": "gateway-fleet", "rules": {
        "llm_process_health": {"rate_limit": {"max": 3, "window": 3600, "scope": "global"}}}}, "fleet.json")
    state = f"sqlite://{tmp_path}/state.db"
    guards = [start(guarded(llm_cli_gateway.argv, policy, "--state", state),
                    llm_cli_gateway.env(scratch_home(tmp_path, f"home-{n}"))) for n in range(2)]
    for proc in guards:
        proc.initialize()
    answers = [call(guards[n % 2], 10 + n, "llm_process_health", {}) for n in range(4)]
    for proc in guards:
        finish(proc)
    assert [answer["result"].get("isError", False) for answer in answers] == [False, False, False, True], answers
    assert "mcp-guard/decision" not in json.dumps(answers[:3])  # the gateway's own answers
    decision = refusal(answers[3])
    assert (decision["action"], decision["rule"]) == ("deny", "llm_process_health"), decision
    assert decision["reason"].startswith("rate limit reached: at most 3 call(s) per 3600 s")
