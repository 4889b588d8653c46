"""`mcp-guard test FILE`: expectations about a policy, checked against the real server behind the real guard.

A test file (JSON, or YAML by extension; its schema is tests.schema.json, `mcp-guard schema --tests`)
names a policy, a server command and a list of tests: calls with the outcome they must have, and listings
with the tools the agent must (not) see. Each file runs in one session (one `mcp-guard run` in front of
one server, calltool.GuardedSession) unless a test asks for a new one (`"session": "new"`), so limits
count across the file's tests as they would across an agent's calls.

"allowed" is checked, not assumed: a call's outcome is the guard's own decision record for that request
(from `run --audit`), and the answer must agree with it (a refusal carries mcp-guard's decision record in
its `_meta`; an allowed call's answer is the server's own): calltool.judge.

`--offline` asks the engine alone, as `explain` does (one SessionState, every call at the same instant),
and says so: no server is started, so nothing about the server is checked.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import click

from .calltool import (
    ALLOWED,
    HIDDEN,
    OVER_BUDGET,
    RATE_LIMITED,
    REFUSALS,
    CallOutcome,
    GuardedSession,
    SessionError,
    outcome_of,
)
from .commandline import Failure
from .policy import Policy, PolicyError

PASS = "✓"
FAIL = "✗"
DEFAULT_TIMEOUT = 30.0


def schema() -> dict[str, Any]:
    text = resources.files("mcp_guard").joinpath("tests.schema.json").read_text(encoding="utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


def matches(expected: str, happened: str) -> bool:
    if expected == "refused":
        return happened in REFUSALS
    if expected == "limited":
        return happened in (RATE_LIMITED, OVER_BUDGET)
    return expected == happened


@dataclass
class TestFile:
    path: Path
    policy_path: Path
    server: list[str] | None
    timeout: float
    tests: list[dict[str, Any]]


@dataclass
class Result:
    name: str
    passed: bool
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # shown after a passing line, e.g. a server's error
    seconds: float = 0.0


def read_test_file(path: str) -> TestFile:
    """The test file, validated; a Failure (exit status 2) with its first problem in one line."""
    from .policy import _json_path, _parse

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Failure(f"{path}: no such file", 2) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Failure(f"{path}: cannot be read: {getattr(exc, 'strerror', None) or exc}", 2) from None
    try:
        data = _parse(text, path)
    except PolicyError as exc:
        raise Failure(str(exc), 2) from None
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        error = errors[0]
        where = _json_path(error.absolute_path)
        if error.validator == "oneOf":
            message = ('a test is either {"call": TOOL, "expect": OUTCOME, ...} or {"list": true, '
                       '"expect_absent": [...]}, and "expect_last" needs "repeat"')
        elif error.validator == "dependentRequired":
            message = '"expect_last" needs "repeat"'
        else:
            message = error.message
        raise Failure(f"{path}: at {where}: {message}", 2)
    base = Path(path).resolve().parent
    tests: list[dict[str, Any]] = data["tests"]
    for index, test in enumerate(tests):
        if "expect_last" in test and "repeat" not in test:
            raise Failure(f"{path}: at $.tests[{index}]: \"expect_last\" needs \"repeat\"", 2)
    return TestFile(Path(path), base / data["policy"], data.get("server"), float(data.get("timeout", DEFAULT_TIMEOUT)),
                    tests)


def test_name(test: dict[str, Any]) -> str:
    if "name" in test:
        return str(test["name"])
    if test.get("list"):
        parts = []
        if test.get("expect_absent"):
            parts.append("absent " + ", ".join(test["expect_absent"]))
        if test.get("expect_present"):
            parts.append("present " + ", ".join(test["expect_present"]))
        return "tools/list: " + "; ".join(parts)
    name = f"{test['call']}"
    if "args" in test:
        name += json.dumps(test["args"], ensure_ascii=False, separators=(",", ":"))
    if "repeat" in test:
        name += f" x{test['repeat']}"
    expects = []
    if "expect" in test:
        expects.append(test["expect"])
    if "expect_last" in test:
        expects.append(f"last {test['expect_last']}")
    return f"{name} -> {', '.join(expects)}"


class Runner:
    """Runs one file's tests, in order, in one session (live) or one SessionState (offline)."""

    def __init__(self, spec: TestFile, policy: Policy, command: list[str] | None, offline: bool) -> None:
        self.spec = spec
        self.policy = policy
        self.command = command
        self.offline = offline
        self.session: GuardedSession | None = None
        self.session_error: str | None = None
        from .engine import SessionState

        self.state = SessionState()

    # --- the two ways of asking ----------------------------------------------------------------

    def _live(self) -> GuardedSession:
        if self.session is None:
            assert self.command is not None
            # The file's own server runs beside the file; a COMMAND given on the command line, here.
            cwd = str(self.spec.path.resolve().parent) if self.spec.server is not None and \
                self.command is self.spec.server else None
            self.session = GuardedSession(str(self.spec.policy_path), self.command, self.spec.timeout, cwd=cwd)
            self.session.initialize()
            if self.policy.pin is not None:
                # Under a pin, run refuses a tool no listing has shown matching it: list, as a client does.
                self.session.list_tools()
        return self.session

    def new_session(self) -> None:
        from .engine import SessionState

        self.close()
        self.session_error = None
        self.state = SessionState()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def call(self, tool: str, arguments: dict[str, Any] | None) -> CallOutcome:
        if self.offline:
            from .engine import ToolCall, decide

            decision = decide(self.policy, ToolCall(tool, arguments), self.state, 0.0)
            if decision.allowed:
                self.state.record(decision.charges)
            record = {**decision.as_record(), "kind": decision.kind}
            return CallOutcome(tool, outcome_of(record), record, {})
        return self._live().call(tool, arguments)

    def visible_tools(self, names: list[str]) -> tuple[set[str], list[str] | None]:
        """Which of `names` the agent sees, and (live) the whole listing."""
        if self.offline:
            from .engine import visible

            return {name for name in names if visible(self.policy, name)}, None
        listing = self._live().list_tools()
        return set(listing) & set(names), listing

    # --- tests ---------------------------------------------------------------------------------

    def run(self, test: dict[str, Any]) -> Result:
        started = time.monotonic()
        result = Result(test_name(test), True)
        if test.get("session") == "new":
            self.new_session()
        if self.session_error is not None:
            result.problems.append(f"not run: the session failed earlier ({self.session_error})")
        else:
            try:
                if test.get("list"):
                    self._list_test(test, result)
                else:
                    self._call_test(test, result)
            except SessionError as exc:
                self.session_error = str(exc)
                result.problems.append(f"could not run: {exc}")
                self.close()
        result.passed = not result.problems
        result.seconds = time.monotonic() - started
        return result

    def _list_test(self, test: dict[str, Any], result: Result) -> None:
        absent = list(test.get("expect_absent", []))
        present = list(test.get("expect_present", []))
        seen, listing = self.visible_tools(absent + present)
        shown = [name for name in absent if name in seen]
        if shown:
            result.problems.append(f"expected absent, but listed: {', '.join(shown)}")
        missing = [name for name in present if name not in seen]
        if missing:
            where = "hidden by the policy" if self.offline else "not in the listing"
            result.problems.append(f"expected present, but {where}: {', '.join(missing)}")
        if listing is not None and not result.problems:
            result.name += f" ({len(listing)} listed)"

    def _call_test(self, test: dict[str, Any], result: Result) -> None:
        tool = test["call"]
        arguments = test.get("args")
        repeat = int(test.get("repeat", 1))
        expect = test.get("expect")
        last_expect = test.get("expect_last", expect)
        called: CallOutcome | None = None
        for number in range(1, repeat + 1):
            called = self.call(tool, arguments)
            wanted = last_expect if number == repeat else expect
            which = f"call {number} of {repeat}: " if repeat > 1 else ""
            if called.problem is not None:
                result.problems.append(f"{which}{called.problem}")
                return
            if wanted is not None and not matches(wanted, called.outcome):
                result.problems.append(f"{which}expected {wanted}, happened {describe(called)}")
                return
        assert called is not None
        if called.outcome == ALLOWED and called.server_error:
            # Allowed means it reached the server; whether the server liked it is worth saying.
            result.notes.append(f"the server answered with an error: {called.text[:120]!r}")
        if "reason_contains" in test and test["reason_contains"] not in called.reason:
            result.problems.append(f"expected the reason to contain {test['reason_contains']!r}, "
                                   f"happened {describe(called)}")
        if "result_contains" in test:
            if self.offline:
                result.name += " (result not checked offline)"
            elif called.outcome != ALLOWED or test["result_contains"] not in called.text:
                result.problems.append(f"expected the answer to contain {test['result_contains']!r}, "
                                       f"happened {describe(called)}: {called.text[:200]!r}")


def describe(called: CallOutcome) -> str:
    """What happened to a call, in one phrase: the outcome, the rule, the reason."""
    rule = called.decision.get("rule") or "default"
    if called.outcome == ALLOWED:
        how = " (the server answered with an error)" if called.server_error else ""
        return f"allowed [rule: {rule}]{how}"
    if called.outcome == HIDDEN:
        return f"hidden [rule: {rule}]"
    return f"{called.outcome} [rule: {rule}] ({called.reason})"


def run_tests(tests_file: str, command: tuple[str, ...], junit: str | None, offline: bool) -> int:
    from .commandline import load_policy

    spec = read_test_file(tests_file)
    policy = load_policy(str(spec.policy_path), False)
    server = list(command) if command else spec.server
    if offline and command:
        raise Failure("--offline starts no server: give COMMAND or --offline, not both", 2)
    if not offline and server is None:
        raise Failure(f"{tests_file}: no server: the file names none (\"server\") and no COMMAND was given; "
                      "or say --offline to ask the policy alone", 2)
    runner = Runner(spec, policy, server, offline)
    if offline:
        click.echo(f"{tests_file}: offline: decided by the policy alone ({_relative(spec.policy_path)}), as explain "
                   "does; no server was started, so what reaches it is not checked")
    else:
        assert server is not None
        click.echo(f"{tests_file}: policy {_relative(spec.policy_path)}, server {' '.join(server)} (through "
                   "mcp-guard run; one session unless a test says \"session\": \"new\")")
    results: list[Result] = []
    started = time.monotonic()
    try:
        for test in spec.tests:
            result = runner.run(test)
            results.append(result)
            line = f"{PASS if result.passed else FAIL} {result.name}"
            if result.problems:
                line += ": " + "; ".join(result.problems)
            elif result.notes:
                line += " (" + "; ".join(result.notes) + ")"
            click.echo(line)
    finally:
        runner.close()
    failed = sum(1 for r in results if not r.passed)
    click.echo(f"{len(results) - failed} passed, {failed} failed" + (" (offline)" if offline else ""))
    if junit is not None:
        write_junit(junit, tests_file, results, time.monotonic() - started, offline)
    return 1 if failed else 0


def _relative(path: Path) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


def write_junit(path: str, tests_file: str, results: list[Result], seconds: float, offline: bool) -> None:
    """JUnit XML as CI systems read it: one testsuite for the file, one testcase per test."""
    import xml.etree.ElementTree as ET

    failed = sum(1 for r in results if not r.passed)
    suites = ET.Element("testsuites", tests=str(len(results)), failures=str(failed), errors="0",
                        time=f"{seconds:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=f"mcp-guard test {tests_file}" + (" (offline)" if offline else ""),
                          tests=str(len(results)), failures=str(failed), errors="0", skipped="0",
                          time=f"{seconds:.3f}")
    classname = "mcp-guard." + Path(tests_file).name
    for result in results:
        case = ET.SubElement(suite, "testcase", classname=classname, name=result.name, time=f"{result.seconds:.3f}")
        if not result.passed:
            failure = ET.SubElement(case, "failure", message="; ".join(result.problems), type="expectation")
            failure.text = "\n".join(result.problems)
    try:
        ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise Failure(f"cannot write the JUnit file {path}: {exc.strerror or exc}", 2) from None
