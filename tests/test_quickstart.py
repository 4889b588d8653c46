"""README's first command ends by running the quickstart: it must show the policy applied."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_shows_the_policy_applied() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Through mcp-guard the agent sees 10 tools; hidden: ['llm_job_cancel']" in out
    assert "ERROR: Unknown tool: llm_job_cancel" in out
    assert "Admin tools are for operators, not agents" in out
    assert "argument jobId: the value does not match" in out
    assert out.count("ok: [demo] echo:") == 2
    assert "rate limit reached: at most 2 call(s) per 60 s. Retry after 60 s." in out
    assert "llm_request      deny   rule=llm_request" in out
    # One approval: mcp-guard asks the client (elicitation), the client's person accepts, the call runs.
    assert "      | Tool:      llm_spend" in out and "the person clicks Accept" in out
    assert 'ok: { "spent": 5.0, "total": 5.0 }' in out
    assert "llm_spend        approval_granted (elicitation)" in out
    assert "Traceback" not in result.stderr
    # It ends with the policy test of examples/quickstart.tests.json, all passing.
    assert "The same, as a policy test: mcp-guard test examples/quickstart.tests.json" in out
    assert out.rstrip().endswith("7 passed, 0 failed")
