"""`mcp-guard test`, through the binary in front of the real example server: the shipped test file passes,
a wrong expectation is reported precisely (expected vs happened), JUnit XML reads with a JUnit parser
(xml.etree), --offline says so, a bad file is exit 2 in one line, and "allowed" is what reached the
server (a recording server in front of which the test runs shows exactly the allowed calls)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from wireclient import guard_command

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SERVER = [sys.executable, str(EXAMPLES / "llm_gateway_server.py")]
QUICKSTART = EXAMPLES / "quickstart.tests.json"
TEE = ROOT / "tests" / "servers" / "tee_recorder.py"


def guard_test(cwd: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GUARD_")}
    env["XDG_CONFIG_HOME"] = str(cwd / "config")
    env.update(extra_env)
    proc = subprocess.run([*guard_command(), "test", *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def write_tests(tmp_path: Path, tests: list[dict[str, Any]], name: str = "t.tests.json", **top: Any) -> Path:
    path = tmp_path / name
    body = {"policy": str(EXAMPLES / "policies" / "quickstart.json"), "tests": tests, **top}
    path.write_text(json.dumps(body))
    return path


def test_the_example_file_passes_against_the_example_server(tmp_path: Path) -> None:
    proc = guard_test(tmp_path, str(QUICKSTART), "--", *SERVER)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{QUICKSTART}: policy ") and "through mcp-guard run" in lines[0]
    assert all(line.startswith("✓ ") for line in lines[1:-1]) and len(lines) == 9
    assert lines[-1] == "7 passed, 0 failed"


def test_a_wrong_expectation_is_reported_precisely_and_in_junit(tmp_path: Path) -> None:
    tests = [
        {"call": "llm_admin_stats", "expect": "allowed"},  # wrong: denied by llm_admin_*
        {"call": "llm_job_cancel", "args": {"jobId": "job-1"}, "expect": "hidden"},
        {"call": "llm_request", "args": {"prompt": "p"}, "repeat": 3, "expect_last": "allowed"},  # wrong
        {"list": True, "expect_absent": ["llm_request"]},  # wrong
        {"name": "wrong reason", "call": "llm_admin_stats", "expect": "refused", "reason_contains": "nope"},
    ]
    file = write_tests(tmp_path, tests, server=SERVER)
    junit = tmp_path / "out" / "junit.xml"
    junit.parent.mkdir()
    proc = guard_test(tmp_path, str(file), "--junit", str(junit))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()[1:]
    assert lines == [
        "✗ llm_admin_stats -> allowed: expected allowed, happened denied [rule: llm_admin_*] "
        "(Admin tools are for operators, not agents)",
        '✓ llm_job_cancel{"jobId":"job-1"} -> hidden',
        '✗ llm_request{"prompt":"p"} x3 -> last allowed: call 3 of 3: expected allowed, happened rate_limited '
        "[rule: llm_request] (rate limit reached: at most 2 call(s) per 60 s)",
        "✗ tools/list: absent llm_request: expected absent, but listed: llm_request",
        "✗ wrong reason: expected the reason to contain 'nope', happened denied [rule: llm_admin_*] "
        "(Admin tools are for operators, not agents)",
        "1 passed, 4 failed",
    ]
    suites = ET.parse(junit).getroot()
    assert suites.tag == "testsuites" and suites.get("tests") == "5" and suites.get("failures") == "4"
    cases = suites.findall("./testsuite/testcase")
    assert [case.find("failure") is None for case in cases] == [False, True, False, False, False]
    failure = cases[0].find("failure")
    assert failure is not None and failure.get("message") == (
        "expected allowed, happened denied [rule: llm_admin_*] (Admin tools are for operators, not agents)")
    assert cases[1].get("name") == 'llm_job_cancel{"jobId":"job-1"} -> hidden'
    assert all(float(case.get("time", "x")) >= 0 for case in cases)


def test_allowed_means_it_reached_the_server_and_refused_means_it_did_not(tmp_path: Path) -> None:
    """A tee recorder between mcp-guard and the server writes every line the server receives."""
    record = tmp_path / "seen.jsonl"
    tests = [
        {"call": "llm_request", "args": {"prompt": "first"}, "expect": "allowed"},
        {"call": "llm_admin_stats", "expect": "denied"},
        {"call": "llm_job_status", "args": {"jobId": "../etc"}, "expect": "denied"},
        {"call": "llm_request", "args": {"prompt": "second"}, "expect": "allowed"},
        {"call": "llm_request", "args": {"prompt": "third"}, "expect": "rate_limited"},
        {"call": "llm_job_cancel", "args": {"jobId": "job-1"}, "expect": "hidden"},
    ]
    file = write_tests(tmp_path, tests)
    proc = guard_test(tmp_path, str(file), "--", sys.executable, str(TEE), *SERVER, RECORD_FILE=str(record))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    names = [m["params"]["name"] for m in calls if m.get("method") == "tools/call"]
    # The two allowed calls reached it; the hidden one only as mcp-guard's probe under another name.
    assert names[:2] == ["llm_request", "llm_request"] and len(names) == 3
    assert names[2] not in ("llm_job_cancel", "llm_admin_stats", "llm_job_status")
    prompts = [m["params"]["arguments"]["prompt"] for m in calls if m.get("method") == "tools/call"
               and m["params"]["name"] == "llm_request"]
    assert prompts == ["first", "second"]


def test_allowed_is_reaching_the_server_and_its_error_is_noted(tmp_path: Path) -> None:
    file = write_tests(tmp_path, [{"call": "no_such_tool", "expect": "allowed"}], server=SERVER)
    proc = guard_test(tmp_path, str(file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[1] == ("✓ no_such_tool -> allowed (the server answered with an error: "
                                           "'Unknown tool: no_such_tool')")


def test_offline_asks_the_policy_alone_and_says_so(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    proc = guard_test(tmp_path, str(QUICKSTART), "--offline", "--junit", str(junit))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "offline: decided by the policy alone" in lines[0] and "no server was started" in lines[0]
    assert lines[-1] == "7 passed, 0 failed (offline)"
    assert "(result not checked offline)" in proc.stdout
    assert "(offline)" in (ET.parse(junit).getroot().find("testsuite").get("name") or "")  # type: ignore[union-attr]
    # Offline too, a wrong expectation fails.
    file = write_tests(tmp_path, [{"call": "llm_job_cancel", "expect": "allowed"}])
    proc = guard_test(tmp_path, str(file), "--offline")
    assert proc.returncode == 1
    assert "✗ llm_job_cancel -> allowed: expected allowed, happened hidden [rule: llm_job_cancel]" in proc.stdout


def test_the_server_runs_beside_the_file_and_the_policy_is_relative_to_it(tmp_path: Path) -> None:
    here = tmp_path / "project"
    here.mkdir()
    (here / "policy.yaml").write_text("version: '1'\ndefault: allow\nhide: [llm_job_cancel]\n")
    (here / "server.py").write_text(f"import runpy; runpy.run_path({str(SERVER[1])!r}, run_name='__main__')\n")
    (here / "t.tests.yaml").write_text(
        f"policy: policy.yaml\nserver: [{json.dumps(sys.executable)}, server.py]\n"
        "tests:\n  - {call: llm_job_cancel, expect: hidden}\n  - {list: true, expect_present: [llm_request]}\n")
    proc = guard_test(tmp_path, "project/t.tests.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "2 passed, 0 failed"


@pytest.mark.parametrize(("body", "said"), [
    ("{", "t.tests.json:1: not valid JSON"),
    (json.dumps({"tests": []}), "t.tests.json: at $: 'policy' is a required property"),
    (json.dumps({"policy": "p.json", "tests": [{"call": "x", "expect": "alowed"}]}),
     "t.tests.json: at $.tests[0].expect: 'alowed' is not one of ['allowed', 'hidden', "),
    (json.dumps({"policy": "p.json", "tests": [{"call": "x"}]}), "t.tests.json: at $.tests[0]: a test is either"),
    (json.dumps({"policy": "p.json", "tests": [{"call": "x", "expect_last": "denied"}]}),
     't.tests.json: at $.tests[0]: "expect_last" needs "repeat"'),
    (json.dumps({"policy": "p.json", "tests": [{"call": "x", "expect": "allowed"}], "extra": 1}),
     "t.tests.json: at $: Additional properties are not allowed ('extra' was unexpected)"),
    (json.dumps({"policy": "missing.json", "tests": [{"call": "x", "expect": "allowed"}]}),
     "policy error: "),
    (json.dumps({"policy": str(EXAMPLES / "policies" / "quickstart.json"),
                 "tests": [{"call": "x", "expect": "allowed"}]}), "no server: the file names none"),
])
def test_a_bad_file_is_2_in_one_line(tmp_path: Path, body: str, said: str) -> None:
    (tmp_path / "t.tests.json").write_text(body)
    proc = guard_test(tmp_path, "t.tests.json")
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mcp-guard: error: ") and said in lines[0], proc.stderr


def test_a_server_that_fails_fails_the_tests_not_the_runner(tmp_path: Path) -> None:
    file = write_tests(tmp_path, [{"call": "a", "expect": "allowed"}, {"call": "b", "expect": "denied"}],
                       server=["definitely-not-a-command-xyz"])
    proc = guard_test(tmp_path, str(file))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[1] == ("✗ a -> allowed: could not run: mcp-guard run did not start: command not found: "
                        "definitely-not-a-command-xyz")
    assert lines[2].startswith("✗ b -> denied: not run: the session failed earlier")


def test_schema_for_test_files(tmp_path: Path) -> None:
    proc = subprocess.run([*guard_command(), "schema", "--tests"], capture_output=True, text=True, timeout=30)
    schema = json.loads(proc.stdout)
    assert schema["title"] == "mcp-guard policy tests"
    import jsonschema

    for example in (QUICKSTART, EXAMPLES / "llm-cli-gateway.tests.json"):
        jsonschema.Draft202012Validator(schema).validate(json.loads(example.read_text()))
