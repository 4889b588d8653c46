"""`mcp-guard audit verify|summary|tail`: what the audit file says, for people (and `--json` for programs).

Text is for a terminal: aligned columns, no line wider than 100 characters.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import click

from .auditlog import is_decision, parse_since, records, summarize, verify
from .commandline import Failure

WIDTH = 100
# verify's exit status: intact; broken (a line removed, edited or reordered); intact, but mcp-guard says
# it could not write some records (a full queue or disk); the file cannot be read.
INTACT, BROKEN, GAPS, UNREADABLE = 0, 1, 3, 2


def _lines(path: str) -> list[bytes]:
    try:
        with open(path, "rb") as file:
            return file.read().splitlines()
    except OSError as exc:
        raise Failure(f"cannot read the audit file {path}: {exc.strerror or exc}", UNREADABLE) from None


def _fit(text: str, width: int) -> str:
    text = text if text.isprintable() else repr(text)
    return text if len(text) <= width else text[:width - 1] + "…"


def verify_command(path: str, as_json: bool) -> int:
    result = verify(_lines(path))
    status = BROKEN if result.broken else GAPS if result.gaps else INTACT
    if as_json:
        click.echo(json.dumps({
            "status": {INTACT: "intact", BROKEN: "broken", GAPS: "gaps"}[status],
            "unreadable": result.unreadable,
            "sessions": [{"session": s.session, "records": s.records, "first_line": s.first_line,
                          "last_line": s.last_line, "ended": s.ended, "last_hash": s.last_hash,
                          "problem": s.problem, "gaps": s.gaps} for s in result.sessions.values()],
        }, indent=2))
        return status
    total = sum(s.records for s in result.sessions.values())
    for problem in result.unreadable:
        click.echo(f"BROKEN {problem}")
    for check in result.sessions.values():
        if check.problem:
            click.echo(f"BROKEN session {check.session}: {check.problem}")
        for gap in check.gaps:
            click.echo(f"GAP    session {check.session}: {gap}")
    for check in result.sessions.values():
        state = "broken" if check.problem else "ended" if check.ended else "no end record (running, or killed)"
        click.echo(f"  session {check.session:<28} {check.records:>7} record(s), lines {check.first_line}-"
                   f"{check.last_line}: {state}")
    words = {INTACT: "OK: every chain is intact", BROKEN: "BROKEN: see above",
             GAPS: "OK with gaps: every chain is intact, but mcp-guard could not write some records"}[status]
    click.echo(f"{words} ({len(result.sessions)} session(s), {total} record(s))")
    return status


def summary_command(path: str, since: str | None, session: str | None, as_json: bool) -> int:
    try:
        seconds = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise Failure(f"--since: {exc}", 2) from None
    found = summarize(records(_lines(path)), seconds, session)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return 0
    for line in summary_lines(found, since):
        click.echo(line)
    return 0


def summary_lines(found: dict[str, Any], since: str | None) -> list[str]:
    span = f" in the last {since}" if since else ""
    out = [f"{found['records']} decision(s) in {found['sessions']} session(s){span}"]
    if not found["records"]:
        return out
    out.append("decisions: " + ", ".join(f"{name} {n}" for name, n in found["decisions"].items()))
    columns = ["allowed", "refused", "hidden", "monitor"]
    out += ["", f"{'tool':<40} {'calls':>6} " + " ".join(f"{c:>8}" for c in columns)]
    for tool, counts in list(found["by_tool"].items())[:20]:
        groups = {"allowed": counts.get("allowed", 0), "hidden": counts.get("hidden", 0),
                  "monitor": sum(n for d, n in counts.items() if d.startswith("monitor_would_"))}
        groups["refused"] = sum(counts.values()) - sum(groups.values())
        out.append(f"{_fit(tool, 40):<40} {sum(counts.values()):>6} "
                   + " ".join(f"{groups[c]:>8}" for c in columns))
    if len(found["by_tool"]) > 20:
        out.append(f"... and {len(found['by_tool']) - 20} more tool(s) (--json lists them all)")
    if found["top_reasons"]:
        out += ["", f"{'top refusal reasons':<90} {'count':>6}"]
        out += [f"{_fit(row['reason'], 90):<90} {row['count']:>6}" for row in found["top_reasons"]]
    if found["slowest"]:
        out += ["", f"{'slowest tools':<40} {'calls':>6} {'median ms':>10} {'p95 ms':>10} {'max ms':>10}"]
        out += [f"{_fit(row['tool'], 40):<40} {row['calls']:>6} {row['median_ms']:>10} {row['p95_ms']:>10} "
                f"{row['max_ms']:>10}" for row in found["slowest"]]
    if found["outcomes"]:
        out += ["", "outcomes of forwarded calls: " + ", ".join(f"{k} {n}" for k, n in found["outcomes"].items())]
    if found["approvals"]:
        out += ["approvals: " + ", ".join(f"{k} {n}" for k, n in found["approvals"].items())]
    if found["reloads"]:
        out += ["policy reloads: " + ", ".join(f"{k} {n}" for k, n in found["reloads"].items())]
    return out


def tail_line(record: dict[str, Any]) -> str | None:
    """One short line for a decision (or a reload): time, session, tool, decision, rule, ms, outcome."""
    event = str(record.get("event", ""))
    clock = str(record.get("time", ""))[11:23]
    parts = str(record.get("session", "")).split("-")
    session = f"{parts[0]}-{parts[-1]}" if len(parts) > 2 else "-".join(parts)  # pid and the random part
    if event.startswith("reload"):
        what = record.get("problem") or f"{record.get('policy', '')}"
        return _fit(f"{clock} {session:<12} {event}: {what}", WIDTH)
    if event == "list" and record.get("hidden"):
        return _fit(f"{clock} {session:<12} tools/list: {record.get('shown')} shown, hidden "
                    f"{', '.join(map(str, record['hidden']))}", WIDTH)
    if not is_decision(record):
        return None
    fields = [clock, f"{session:<12}", _fit(str(record.get("tool")), 32), str(record.get("decision") or event)]
    if record.get("rule") is not None:
        fields.append(f"[{_fit(str(record['rule']), 24)}]")
    if isinstance(record.get("duration_ms"), (int, float)):
        fields.append(f"{record['duration_ms']:g} ms")
    if record.get("outcome"):
        code = record.get("error_code")
        fields.append(str(record["outcome"]) + (f" {code}" if code is not None else ""))
    elif record.get("reason"):
        fields.append(str(record["reason"]))
    return _fit(" ".join(fields), WIDTH)


def tail_command(path: str, lines: int, follow: bool, interval: float = 0.25) -> int:
    """The last `lines` decisions, then (with `follow`) each new one as it is written, until interrupted.
    A file replaced or cut short (rotated) is read again from its start."""
    for line in _last(path, lines):
        click.echo(line)
    if not follow:
        return 0
    for line in _follow(path, interval):
        click.echo(line)
    return 0


def _last(path: str, count: int) -> list[str]:
    shown = [text for text in map(tail_line, records(_lines(path))) if text is not None]
    return shown[-count:] if count else []


def _follow(path: str, interval: float) -> Iterator[str]:
    file = open(path, "rb")  # noqa: SIM115 - reopened when the file is replaced
    try:
        file.seek(0, os.SEEK_END)
        partial = b""
        while True:
            chunk = file.readline()
            if chunk:
                partial += chunk
                if partial.endswith(b"\n"):
                    for record in records([partial]):
                        text = tail_line(record)
                        if text is not None:
                            yield text
                    partial = b""
                continue
            time.sleep(interval)
            try:
                replaced = os.stat(path).st_ino != os.fstat(file.fileno()).st_ino
                shorter = os.stat(path).st_size < file.tell()
            except OSError:
                continue
            if replaced or shorter:
                file.close()
                file = open(path, "rb")  # noqa: SIM115
                partial = b""
    finally:
        file.close()
