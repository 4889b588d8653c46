"""Two unrelated PyPI projects install a package named `mcp_guard` and a `mcp-guard` command. A user who
has one of them beside mcp-guard must be told what is going on, in either install order. These tests
use the real wheels from PyPI, unpacked over (or under) a copy of this package, as pip would."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OTHERS = {"bonanza-mcp-guard": "0.1.4", "mcp-guardrails": "0.5.2"}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    target = tmp_path_factory.mktemp("wheels")
    found = {}
    for name, version in OTHERS.items():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(target),
                        f"{name}=={version}"], check=True, timeout=120)
        found[name] = next(target.glob(name.replace("-", "_") + "-*.whl"))
    return found


def install_ours(site: Path) -> None:
    shutil.copytree(ROOT / "mcp_guard", site / "mcp_guard", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "mcp_guard_launcher.py", site / "mcp_guard_launcher.py")


def install_wheel(wheel: Path, site: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)


def run_command(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = f"import sys; sys.path.insert(0, {str(site)!r}); import mcp_guard_launcher; mcp_guard_launcher.main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("other", sorted(OTHERS))
def test_other_installed_first_then_ours_warns_and_works(tmp_path: Path, wheels: dict[str, Path], other: str) -> None:
    install_wheel(wheels[other], tmp_path)
    install_ours(tmp_path)
    result = run_command(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert "mcp-guard (the MCP policy proxy)" in result.stdout
    assert f"{other} {OTHERS[other]} is installed in the same Python environment" in result.stderr
    assert f"pip uninstall {other}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("other", sorted(OTHERS))
def test_other_installed_over_ours_is_named_not_a_traceback(tmp_path: Path, wheels: dict[str, Path],
                                                            other: str) -> None:
    install_ours(tmp_path)
    install_wheel(wheels[other], tmp_path)
    result = run_command(tmp_path, "run", "--no-policy", "--", "true")
    assert result.returncode == 1
    assert "is not mcp-guard's" in result.stderr and "bonanza-mcp-guard and mcp-guardrails" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_alone_there_is_no_warning(tmp_path: Path) -> None:
    install_ours(tmp_path)
    result = run_command(tmp_path, "--version")
    assert result.returncode == 0 and result.stderr == ""


def test_an_editable_install_still_sees_a_conflict_in_site_packages(tmp_path: Path) -> None:
    """With `pip install -e .` the package lives in the checkout, but the other project's files land in
    the interpreter's site-packages: the warning must come from there too."""
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "mcp_guardrails-0.5.2.dist-info").mkdir(parents=True)
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import mcp_guard_launcher; "
            "mcp_guard_launcher.main()")
    result = subprocess.run([str(python), "-c", code, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "mcp-guardrails 0.5.2 is installed in the same Python environment" in result.stderr
    assert sysconfig.get_paths()["purelib"] != str(site)
