#!/usr/bin/env python3
"""Mutation testing of the policing modules with cosmic-ray: does the suite notice when a line breaks?

    pip install -e '.[test,mutation]'
    python scripts/mutation.py guard            # or engine, wire, relay, listing; several at once
    python scripts/mutation.py engine --workdir /tmp/mut-engine --all-operators

Not run in CI: each mutant runs a set of tests, through the real binary for most modules (minutes per
surviving mutant). One module at a time is a habit worth keeping on a shared machine.

How: the tracked files are copied to a scratch directory (the working tree is never mutated), and the
tests run there with PYTHONPATH pointing at the copy, so the `mcp-guard` binary the through-binary tests
spawn imports the mutated package (PYTHONPATH comes before the editable install's finder). cosmic-ray
applies one mutation at a time; `pytest -x` stops at the first failing test, so a killed mutant costs
seconds and a surviving one the whole set.

By default the operators are narrowed to the ones that make a mutant a real question: the comparison
boundaries and flips (< and <=, == and !=, is and is not), + and -, * and /, not added or removed,
and/or, True/False, numbers, exceptions, loops and decorators. The other binary and comparison
replacements (a + b into a << b, a < b into a is b) are left out: they are killed by anything or
equivalent, and they triple the run. --all-operators keeps them all.

The report (survivors with their diffs, and the score) is written to WORKDIR/report.txt and printed.
docs/reliability.md keeps the last score and says, for each survivor, which test now kills it or why
it is equivalent.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Module -> the fast tests that concern it (in-process first: -x stops at the first failure).
PRESETS: dict[str, tuple[str, list[str]]] = {
    "engine": ("mcp_guard/engine.py", ["tests/test_engine.py", "tests/test_guard_unit.py"]),
    # Less the families that exercise the engine's matching or wire parsing, not the guard (and the slow SDK
    # client): a surviving mutant costs the whole set, minutes on a loaded machine.
    "guard": ("mcp_guard/guard.py", ["tests/test_guard_unit.py", "tests/test_noticing.py", "tests/test_policing.py",
                                     "-k", "not odd_names and not sdk_client and not duplicate_key_smuggling"]),
    "wire": ("mcp_guard/wire.py", ["tests/test_wire_unit.py", "tests/test_hostile.py", "tests/test_policing.py"]),
    "relay": ("mcp_guard/relay.py", ["tests/test_relay_inprocess.py", "tests/test_noticing.py",
                                     "tests/test_relay_wire.py", "tests/test_faults.py"]),
    "listing": ("mcp_guard/listing.py", ["tests/test_cli_policy.py"]),
}

KEPT_BINARY = ("Add_Sub", "Sub_Add", "Mul_Div", "Div_Mul")
KEPT_COMPARISON = ("Eq_NotEq", "NotEq_Eq", "Lt_LtE", "LtE_Lt", "Gt_GtE", "GtE_Gt", "Is_IsNot", "IsNot_Is")
EXCLUDED_OPERATORS = [
    "core/ReplaceBinaryOperator_(?!(" + "|".join(KEPT_BINARY) + ")$)",
    "core/ReplaceComparisonOperator_(?!(" + "|".join(KEPT_COMPARISON) + ")$)",
    "core/ReplaceUnaryOperator_.*Invert",
    "core/VariableReplacer",
    "core/VariableInserter",
]


def copy_tree(workdir: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in files:
        source = ROOT / name
        if source.is_file() and not name.startswith((".venv", ".compat")):
            target = workdir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def run_module(name: str, workdir: Path, all_operators: bool, timeout: float) -> str:
    module, tests = PRESETS[name]
    bin_dir = Path(sys.executable).parent
    command = shlex.join([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests])
    config = workdir / f"cosmic-ray-{name}.toml"
    session = workdir / f"session-{name}.sqlite"
    config.write_text(
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(module)}\n"
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(command)}\n"
        "[cosmic-ray.distributor]\n"
        'name = "local"\n'
        "[cosmic-ray.filters.operators-filter]\n"
        f"exclude-operators = {toml_list([] if all_operators else EXCLUDED_OPERATORS)}\n")
    env = {**os.environ, "PYTHONPATH": str(workdir), "MCP_GUARD_SKIP_COMPAT": "1"}

    def cr(tool: str, *args: str) -> str:
        done = subprocess.run([str(bin_dir / tool), *args], cwd=workdir, env=env, check=True,
                              capture_output=True, text=True)
        return done.stdout

    cr("cosmic-ray", "init", str(config), str(session), "--force")
    cr("cr-filter-operators", str(session), str(config))
    baseline = subprocess.run(shlex.split(command), cwd=workdir, env=env, capture_output=True, text=True)
    if baseline.returncode != 0:
        raise SystemExit(f"the tests fail without any mutation:\n{baseline.stdout[-3000:]}")
    cr("cosmic-ray", "exec", str(config), str(session))
    report = cr("cr-report", str(session), "--show-diff", "--surviving-only")
    return f"## {module} (tests: {shlex.join(tests)})\n\n{report}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="+", choices=sorted(PRESETS))
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a new temporary one)")
    parser.add_argument("--all-operators", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant's test run")
    options = parser.parse_args()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="mcp-guard-mutation-"))
    workdir.mkdir(parents=True, exist_ok=True)
    copy_tree(workdir)
    reports = [run_module(name, workdir, options.all_operators, options.timeout) for name in options.modules]
    text = "\n".join(reports)
    (workdir / "report.txt").write_text(text)
    print(text)
    print(f"(sessions and report in {workdir})")


if __name__ == "__main__":
    main()
