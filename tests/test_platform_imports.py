"""mcp-guard imports on Windows and macOS, checked on Linux: every module of the package is imported in a
fresh interpreter that reports `sys.platform` as win32 or darwin, with the standard modules that OS lacks
made unimportable (fcntl, termios, resource, pwd, grp...), Windows' own (msvcrt, winreg) stubbed, and the
signal numbers and `os` functions it lacks removed. So a Linux-only import cannot creep back in unnoticed.
The whole run path (cli, runner, relay, lifecycle, both pumps, the session core, guard, approval, audit,
reload) is among them, and what the platform layer then says of that OS is checked too (the pump it
chooses, the signals that end a session, SIGHUP's absence on Windows).

Imports only: what runs on those systems is exercised on Linux by the forced fallback
(MCP_GUARD_FORCE_FALLBACK=1, tests/test_oslayer.py and the `platform_matrix` tests). A second check (an
AST scan) keeps every platform difference in oslayer.py."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mcp_guard"

ALL_MODULES = sorted("mcp_guard." + p.stem for p in PACKAGE.glob("*.py") if p.stem != "__main__")
RUN_PATH = ["mcp_guard." + name for name in (
    "cli", "runner", "relay", "lifecycle", "pump", "pump_poll", "pump_threads", "streams", "framing", "session",
    "pending", "exits", "options", "upstream", "oslayer", "diagnostics", "startup", "guard", "approval", "approver",
    "approvalcmd", "audit", "auditlog", "reload")]

# Run in a fresh interpreter. Third-party dependencies (anyio, click, jsonschema...) are imported first
# with the real platform: they are cross-platform and not ours to check. Then the platform is faked and
# each of our modules imported; the errors are printed as JSON.
SCRIPT = r"""
import importlib, importlib.abc, json, os, signal, sys, types

target, modules, facts = sys.argv[1], sys.argv[2].split(","), json.loads(sys.argv[3])
for dependency in ("anyio", "anyio.to_thread", "click", "jsonschema", "referencing", "subprocess", "shutil",
                   "sqlite3", "tempfile", "threading", "pathlib", "logging", "difflib", "urllib.parse",
                   "importlib.resources", "ctypes", "select", "yaml"):
    try:
        importlib.import_module(dependency)
    except ImportError:
        pass

LINUX_ONLY_OS = ("pidfd_open",)
if target == "win32":
    missing = {"fcntl", "termios", "resource", "pwd", "grp", "tty", "pty", "syslog", "posix", "_posixsubprocess"}
    for name in ("killpg", "getpgid", "setsid", "getuid", "geteuid", "fork", "waitid", "pidfd_open",
                 "sched_getaffinity", "setpgid", "writev", "readv", "get_blocking", "set_blocking"):
        if hasattr(os, name):
            delattr(os, name)
    fake_signal = types.ModuleType("signal")
    for name in dir(signal):
        fake_signal.__dict__[name] = getattr(signal, name)
    for name in ("SIGHUP", "SIGKILL", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGCHLD", "SIGCONT",
                 "SIGSTOP", "SIGTSTP", "SIGWINCH", "SIGTTIN", "SIGTTOU", "SIGIO", "SIGPROF", "SIGVTALRM", "SIGXCPU",
                 "SIGXFSZ", "SIGSYS", "SIGTRAP", "SIGBUS", "SIGURG", "SIGPOLL", "SIGPWR", "SIGRTMIN", "SIGRTMAX",
                 "pthread_kill", "pthread_sigmask", "sigwait", "sigpending", "setitimer", "getitimer", "alarm",
                 "pause", "siginterrupt", "sigtimedwait", "sigwaitinfo", "pidfd_send_signal"):
        fake_signal.__dict__.pop(name, None)
    fake_signal.SIGBREAK = 21
    fake_signal.CTRL_C_EVENT = 0
    fake_signal.CTRL_BREAK_EVENT = 1
    sys.modules["signal"] = fake_signal
    select = sys.modules["select"]
    for name in ("poll", "epoll", "POLLIN", "POLLOUT"):
        if hasattr(select, name):
            delattr(select, name)
    msvcrt = types.ModuleType("msvcrt")
    msvcrt.setmode = lambda fd, mode: mode
    msvcrt.get_osfhandle = lambda fd: fd
    msvcrt.open_osfhandle = lambda handle, flags: handle
    sys.modules["msvcrt"] = msvcrt
    winreg = types.ModuleType("winreg")
    sys.modules["winreg"] = winreg
else:
    missing = set()
    for name in LINUX_ONLY_OS:
        if hasattr(os, name):
            delattr(os, name)


class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in missing:
            raise ImportError(f"No module named {name!r} (absent on {sys.platform})")
        return None


for name in missing:
    sys.modules.pop(name, None)
sys.meta_path.insert(0, Missing())
sys.platform = target

errors = {}
for module in modules:
    try:
        importlib.import_module(module)
    except BaseException as exc:
        errors[module] = f"{type(exc).__name__}: {exc}"
found = {}
for fact in facts:  # expressions over the imported modules, evaluated as that OS
    try:
        found[fact] = eval(fact, {"mcp_guard": sys.modules.get("mcp_guard"), "signal": sys.modules["signal"]})
    except BaseException as exc:
        found[fact] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"errors": errors, "facts": found}))
"""


def _run_as(target: str, modules: list[str], facts: list[str], path: Path | None = None) -> dict[str, Any]:
    env = {name: value for name, value in os.environ.items()
           if name != "MCP_GUARD_FORCE_FALLBACK"}  # the platform's own choices, not the forced ones
    if path is not None:
        env["PYTHONPATH"] = str(path)
    done = subprocess.run([sys.executable, "-c", SCRIPT, target, ",".join(modules), json.dumps(facts)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _import_as(target: str, modules: list[str], path: Path | None = None) -> dict[str, str]:
    errors: dict[str, str] = _run_as(target, modules, [], path)["errors"]
    return errors


# What the platform layer says on each OS, once the package is imported there.
FACTS = {
    "win32": {
        "mcp_guard.pump.pump_kind()": "threads",
        "mcp_guard.options.SIGNALS == (signal.SIGINT, signal.SIGTERM, signal.SIGBREAK)": True,
        "mcp_guard.oslayer.SIGHUP is None": True,
        "mcp_guard.oslayer.writev is mcp_guard.oslayer._write_joined": True,
        "mcp_guard.oslayer.set_blocking(0, False)": True,
        "type(mcp_guard.oslayer.Wakeup()._receive.__self__).__name__": "socket",  # the loop waits on sockets only
    },
    "darwin": {
        "mcp_guard.pump.pump_kind()": "poll",
        "mcp_guard.options.SIGNALS == (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)": True,
        "mcp_guard.oslayer.uses_pidfd()": False,
        "mcp_guard.oslayer.uses_watchdog()": True,
    },
}


@pytest.mark.parametrize("target", ["win32", "darwin"])
def test_the_package_imports_on(target: str) -> None:
    assert set(RUN_PATH) <= set(ALL_MODULES)
    result = _run_as(target, ALL_MODULES, list(FACTS[target]))
    assert result["errors"] == {}
    assert result["facts"] == FACTS[target]


def test_the_check_can_fail(tmp_path):
    """A module that imports fcntl, names SIGHUP or calls select.poll at import fails the check."""
    (tmp_path / "uses_fcntl.py").write_text("import fcntl\n")
    (tmp_path / "uses_sighup.py").write_text("import signal\nSTOP = (signal.SIGINT, signal.SIGHUP)\n")
    (tmp_path / "uses_poll.py").write_text("import select\nPOLL = select.poll\n")
    (tmp_path / "uses_pidfd.py").write_text("import os\nOPEN = os.pidfd_open\n")
    (tmp_path / "portable.py").write_text("import os, signal, subprocess\nSTOP = (signal.SIGINT, signal.SIGTERM)\n")
    probes = ["uses_fcntl", "uses_sighup", "uses_poll", "uses_pidfd", "portable"]
    assert sorted(_import_as("win32", probes, tmp_path)) == ["uses_fcntl", "uses_pidfd", "uses_poll", "uses_sighup"]
    assert sorted(_import_as("darwin", probes, tmp_path)) == ["uses_pidfd"]


# --- nothing outside oslayer.py reaches for the platform ------------------------------------------------

PLATFORM_MODULES = {"fcntl", "select", "selectors", "ctypes", "msvcrt", "termios", "resource", "winreg"}
# (os.fork is left to policy.py, which asks hasattr(os, "fork") and validates in process without it.)
PLATFORM_OS_CALLS = {"pidfd_open", "killpg", "getpgid", "setsid", "writev", "set_blocking", "get_blocking"}
FORCE_FALLBACK_ENV = "MCP_GUARD_FORCE_FALLBACK"


def _platform_uses(source: str) -> list[str]:
    """What in `source` belongs to oslayer.py: an import of a platform module, a signal number
    (signal.SIGxxx, from signal import SIGxxx, getattr(signal, "SIGxxx")), an `os` call that exists on some
    systems only, or the forced-fallback switch."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in PLATFORM_MODULES]
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if node.level == 0 and module in PLATFORM_MODULES:
                found.append(f"from {node.module} import ...")
            elif node.level == 0 and module == "signal":
                found += [f"from signal import {a.name}" for a in node.names if a.name.startswith("SIG")]
            elif node.level == 0 and module == "os":
                found += [f"from os import {a.name}" for a in node.names if a.name in PLATFORM_OS_CALLS]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "signal" and node.attr.startswith(("SIG", "CTRL_")):
                found.append(f"signal.{node.attr}")
            elif node.value.id == "os" and node.attr in PLATFORM_OS_CALLS:
                found.append(f"os.{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
              and len(node.args) >= 2 and isinstance(node.args[0], ast.Name) and node.args[0].id in ("signal", "os")
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and (node.args[1].value.startswith("SIG") or node.args[1].value in PLATFORM_OS_CALLS)):
            found.append(f"{node.func.id}({node.args[0].id}, {node.args[1].value!r})")
        elif isinstance(node, ast.Constant) and node.value == FORCE_FALLBACK_ENV:
            found.append(FORCE_FALLBACK_ENV)
    return found


def test_nothing_outside_the_platform_layer_reaches_for_the_platform() -> None:
    """Every difference between the systems is oslayer.py's (docs/platforms.md): no other module of the
    package imports fcntl, select, selectors, ctypes or msvcrt, names a signal number, calls an `os`
    function some systems lack, or reads MCP_GUARD_FORCE_FALLBACK."""
    found = {path.name: uses for path in sorted(PACKAGE.glob("*.py")) if path.name != "oslayer.py"
             if (uses := _platform_uses(path.read_text()))}
    assert found == {}
    assert _platform_uses((PACKAGE / "oslayer.py").read_text())  # the scan sees what is there


def test_the_platform_scan_can_fail() -> None:
    source = """
import os, signal, subprocess
import select
from fcntl import fcntl
from signal import SIGKILL, Signals
import ctypes.wintypes

def f(pid):
    os.killpg(pid, signal.SIGTERM)
    os.kill(pid, getattr(signal, "SIGHUP", 1))
    os.environ.get("MCP_GUARD_FORCE_FALLBACK")
    signal.Signals(2).name
    os.write(1, b"")
"""
    assert sorted(_platform_uses(source)) == sorted([
        "import select", "from fcntl import ...", "from signal import SIGKILL", "import ctypes.wintypes",
        "os.killpg", "signal.SIGTERM", "getattr(signal, 'SIGHUP')", FORCE_FALLBACK_ENV])


def test_the_cli_imports_without_anyio_or_jsonschema() -> None:
    """`mcp-guard --version` (and the launcher's check for a conflicting package) must work where only
    the CLI's own dependency is importable, and start-up must not pay for what it does not use: the event
    loop's library and the schema validator are imported where they are needed (regression: oslayer
    imported anyio at the top, which broke `--version` beside a bare interpreter's click)."""
    code = ("import sys, mcp_guard.cli, mcp_guard.options, mcp_guard.oslayer; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'anyio', 'jsonschema', 'mcp'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
