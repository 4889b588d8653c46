"""Load a policy file, check it against the packaged schema, build an immutable `Policy`.

Every problem becomes one `PolicyError` that names the file, the place (a JSON path, and a line when it
can be found) and the problem, so `mcp-guard run` can stop with exit status 2 before starting anything.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from fnmatch import translate
from importlib import resources
from pathlib import Path
from typing import Any, Literal

Action = Literal["allow", "deny", "require_approval", "hide"]
Scope = Literal["session", "user", "global"]
Refund = Literal["protocol_error", "error"]
Remember = Literal["none", "arguments", "session"]
ACTIONS: tuple[Action, ...] = ("allow", "require_approval", "deny", "hide")
# The tie-breaker between equally specific rules: the more restrictive action wins.
RESTRICTIVENESS: dict[str, int] = {action: rank for rank, action in enumerate(ACTIONS)}


class PolicyError(Exception):
    """A policy file that cannot be used. The message names the file, the place and the problem.

    `problems` holds every problem found in the file (this one first), so `check` can show them all in
    one run; `run` shows the first."""

    def __init__(self, file: str, problem: str, place: str | None = None, line: int | None = None) -> None:
        self.file, self.problem, self.place, self.line = file, problem, place, line
        self.problems: tuple[PolicyError, ...] = (self,)
        where = file
        if line is not None:
            where += f":{line}"
        if place:
            where += f": at {place}"
        super().__init__(f"{where}: {problem}")

    @classmethod
    def of(cls, problems: list[PolicyError]) -> PolicyError:
        """One error for several: in the order of the file's lines (those without a line last)."""
        ordered: list[PolicyError] = []
        for problem in sorted(problems, key=lambda p: p.line if p.line is not None else 1 << 30):
            if all(str(problem) != str(seen) for seen in ordered):
                ordered.append(problem)
        first = ordered[0]
        combined = cls(first.file, first.problem, first.place, first.line)
        combined.problems = (combined, *ordered[1:])
        return combined


@dataclass(frozen=True, slots=True)
class RateLimit:
    max: int
    window: float
    scope: Scope = "session"


@dataclass(frozen=True, slots=True)
class Budget:
    max: float
    window: float
    cost: str  # a JSON Pointer into the call's arguments
    scope: Scope = "session"


# The cache of which rules match a tool name: bounded in count and in name length, so an agent inventing
# (long) names cannot grow it.
MATCH_CACHE_ENTRIES = 4096
MATCH_CACHE_NAME_CHARS = 256


@dataclass(frozen=True, slots=True)
class Approval:
    """How a `require_approval` call is put to a human (approval.py): how long mcp-guard waits for the
    answer, and what an approval covers besides the call itself (`remember`: nothing more, later calls
    with identical arguments, or every later call to the tool in this session)."""

    timeout: float = 120.0
    remember: Remember = "none"


DEFAULT_APPROVAL = Approval()


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on checking a call's arguments against a rule's schema (docs/policy.md, "Limits")."""

    # A call to a tool with an argument schema whose message is larger is refused without being checked.
    max_argument_bytes: int = 1024 * 1024
    # A check that takes longer is given up and the call refused ("too costly to check").
    argument_check_seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class Rule:
    key: str  # the tool name or glob, exactly as written
    action: Action
    reason: str | None = None
    rate_limit: RateLimit | None = None
    budget: Budget | None = None
    arguments: Any = None  # a JSON Schema, or None
    origin: str = "rules"  # "rules" or "hide": where the policy file says it
    refund: Refund = "protocol_error"  # which failed calls give their quota back
    monitor: bool = False  # monitor mode for this rule: its refusals are recorded, the call still passes
    approval: Approval = Approval()  # how a require_approval call is asked (approval.py)

    @property
    def is_glob(self) -> bool:
        return is_glob(self.key)

    @property
    def place(self) -> str:
        return f"rules.{self.key}" if self.origin == "rules" else f"hide[{self.key!r}]"


@dataclass(frozen=True)
class Policy:
    source: str
    default: Action = "allow"
    default_reason: str | None = None
    description: str | None = None
    rules: tuple[Rule, ...] = ()
    raw: Any = None
    _exact: dict[str, tuple[Rule, ...]] = field(default_factory=dict, repr=False, compare=False)
    _globs: tuple[tuple[Rule, re.Pattern[str]], ...] = field(default=(), repr=False, compare=False)
    _validators: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _key_plans: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _matches: dict[str, tuple[Rule, ...]] = field(default_factory=dict, repr=False, compare=False)
    limits: Limits = Limits()
    # The shared limit store (docs/scaling.md): the policy's name for its counters, the store it names,
    # and what a call under a shared limit gets while the store cannot be reached.
    name: str | None = None
    state: str | None = None
    on_store_error: Literal["deny", "allow"] = "deny"
    # Tool pinning (pinning.py): the lock file's path, resolved against the policy file's directory, and
    # what a tool that is new or changed since it was pinned gets.
    pin: str | None = None
    on_pin_mismatch: Literal["hide", "require_approval"] = "hide"
    # "monitor": every decision is recorded as it would be, and nothing is refused or hidden (docs/audit.md).
    mode: Literal["enforce", "monitor"] = "enforce"
    # The command asked when the client cannot be (approvalcmd.py); --approval-command and
    # $MCP_GUARD_APPROVAL_COMMAND take precedence.
    approval_command: str | None = None

    @property
    def shared_limits(self) -> bool:
        """Whether any rule keeps a limit in a store (user or global scope), not only in the session."""
        return any((rule.rate_limit is not None and rule.rate_limit.scope != "session")
                   or (rule.budget is not None and rule.budget.scope != "session") for rule in self.rules)

    @classmethod
    def build(cls, source: str, default: Action = "allow", rules: tuple[Rule, ...] = (),
              default_reason: str | None = None, description: str | None = None, raw: Any = None,
              limits: Limits | None = None, name: str | None = None, state: str | None = None,
              on_store_error: Literal["deny", "allow"] = "deny", pin: str | None = None,
              on_pin_mismatch: Literal["hide", "require_approval"] = "hide",
              mode: Literal["enforce", "monitor"] = "enforce",
              approval_command: str | None = None) -> Policy:
        exact: dict[str, list[Rule]] = {}
        globs: list[tuple[Rule, re.Pattern[str]]] = []
        for rule in rules:
            if rule.is_glob:
                globs.append((rule, re.compile(translate(rule.key), re.DOTALL)))
            else:
                exact.setdefault(rule.key, []).append(rule)
        return cls(source, default, default_reason, description, rules, raw,
                   {k: tuple(v) for k, v in exact.items()}, tuple(globs), limits=limits or Limits(),
                   name=name, state=state, on_store_error=on_store_error, pin=pin,
                   on_pin_mismatch=on_pin_mismatch, mode=mode,
                   approval_command=approval_command)

    def matching_rules(self, name: str) -> tuple[Rule, ...]:
        """Every rule whose key matches `name`, most decisive first (the precedence order)."""
        cached = self._matches.get(name)
        if cached is not None:
            return cached
        found = list(self._exact.get(name, ()))
        found += [rule for rule, pattern in self._globs if pattern.fullmatch(name)]
        found.sort(key=precedence, reverse=True)
        result = tuple(found)
        if len(self._matches) < MATCH_CACHE_ENTRIES and len(name) <= MATCH_CACHE_NAME_CHARS:
            self._matches[name] = result
        return result

    def validator(self, rule: Rule) -> Any:
        """The compiled argument validator of a rule (built once, on first use)."""
        validator = self._validators.get(rule.key + "\0" + rule.origin)
        if validator is None:
            from .argschema import draft_of, validator_class

            # The draft the schema's $schema names (checked at load), else 2020-12.
            validator = validator_class(draft_of(rule.arguments))(rule.arguments)
            self._validators[rule.key + "\0" + rule.origin] = validator
        return validator

    def key_plan(self, rule: Rule) -> Any:
        """Which object keys the rule's argument schema constrains, for the case-variant refusal."""
        plan = self._key_plans.get(rule.key + "\0" + rule.origin)
        if plan is None:
            from .argschema import KeyPlan, draft_of

            plan = KeyPlan(rule.arguments, draft_of(rule.arguments))
            self._key_plans[rule.key + "\0" + rule.origin] = plan
        return plan


def is_glob(key: str) -> bool:
    return any(ch in key for ch in "*?[")


@dataclass(frozen=True)
class CharClass:
    """A glob's [...] as fnmatch reads it: `ranges` holds (first, last) pairs, a single character as (c, c)."""

    negated: bool
    ranges: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class GlobParts:
    """A glob read the way fnmatch reads it: "*" and "?" wildcards, literal text (which never holds a
    wildcard) and character classes, in order. `unclosed` says a [ was never closed (fnmatch then reads
    it as a literal [, kept in the literal text)."""

    parts: tuple[str | CharClass, ...]
    unclosed: bool


def glob_parts(key: str) -> GlobParts:
    parts: list[str | CharClass] = []
    literal = ""
    unclosed = False
    i = 0
    while i < len(key):
        char = key[i]
        if char in "*?" or char == "[":
            if char == "[":
                j = i + 1
                negated = j < len(key) and key[j] == "!"
                j += negated
                if j < len(key) and key[j] == "]":  # a ] first in the class is one of its characters
                    j += 1
                end = key.find("]", j)
                if end < 0:
                    unclosed = True
                    literal += char
                    i += 1
                    continue
                if literal:
                    parts.append(literal)
                    literal = ""
                parts.append(CharClass(negated, _class_ranges(key[i + 1 + negated:end])))
                i = end + 1
                continue
            if literal:
                parts.append(literal)
                literal = ""
            parts.append(char)
        else:
            literal += char
        i += 1
    if literal:
        parts.append(literal)
    return GlobParts(tuple(parts), unclosed)


def _class_ranges(body: str) -> tuple[tuple[str, str], ...]:
    ranges: list[tuple[str, str]] = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            ranges.append((body[k], body[k + 2]))
            k += 3
        else:
            ranges.append((body[k], body[k]))
            k += 1
    return tuple(ranges)


def glob_problem(key: str) -> str | None:
    """Why a glob is malformed (a [ never closed) or can match nothing (a reversed range such as [z-a]),
    or None."""
    parsed = glob_parts(key)
    for part in parsed.parts:
        if isinstance(part, CharClass):
            for first, last in part.ranges:
                if first > last:
                    return f"has the reversed character range {first}-{last}, which matches nothing"
    if parsed.unclosed:
        # fnmatch would read it as a literal [, which is almost never what was meant ("admin_[x").
        return "has a [ that is never closed; write [[] to match a literal ["
    return None


def precedence(rule: Rule) -> tuple[int, int, int]:
    """Exact beats glob; a longer glob beats a shorter one; at a tie the more restrictive action."""
    return (0 if rule.is_glob else 1, len(rule.key), RESTRICTIVENESS[rule.action])


def allow_all(source: str = "(no policy)") -> Policy:
    return Policy.build(source)


# --- loading --------------------------------------------------------------------------------------


def schema() -> dict[str, Any]:
    text = resources.files("mcp_guard").joinpath("policy.schema.json").read_text(encoding="utf-8")
    result: dict[str, Any] = json.loads(text)
    return result


def load(path: str | Path) -> Policy:
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(file, "no such file") from None
    except IsADirectoryError:
        raise PolicyError(file, "is a directory, not a policy file") from None
    except UnicodeDecodeError:
        raise PolicyError(file, "is not UTF-8 text") from None
    except OSError as exc:
        raise PolicyError(file, f"cannot be read: {exc.strerror or exc}") from None
    return loads(text, file)


def loads(text: str, file: str = "<policy>") -> Policy:
    data = _parse(text, file)
    problems = _non_finite(data, text, file, [])
    problems += _validate_isolated(data, text, file)
    problems += _glob_problems(data, text, file)
    if problems:
        raise PolicyError.of(problems)
    return _build(data, text, file)


def _validate_all(data: Any, text: str, file: str) -> list[PolicyError]:
    problems = _validate(data, text, file)
    rules = data.get("rules") if isinstance(data, dict) else None
    for key, spec in (rules.items() if isinstance(rules, dict) else ()):
        if isinstance(spec, dict) and spec.get("arguments") is not None:
            try:
                _check_argument_schema(spec["arguments"], file, text, key)
            except PolicyError as exc:
                problems.append(exc)
    return problems


def _validate_isolated(data: Any, text: str, file: str) -> list[PolicyError]:
    """Validate in a forked child when jsonschema is not loaded yet: importing it costs ~15 MiB that a
    proxy whose policy constrains no arguments never needs again (docs/performance.md)."""
    if "jsonschema" in sys.modules or not hasattr(os, "fork"):
        return _validate_all(data, text, file)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: validate, report, leave without running any cleanup of the parent's
        os.close(read_end)
        try:
            found = _validate_all(data, text, file)
            report: dict[str, Any] = {"problems": [
                {"problem": exc.problem, "place": exc.place, "line": exc.line} for exc in found]}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails closed
            report = {"problems": [{"problem": f"could not be validated: {exc!r}", "place": None, "line": None}]}
        with os.fdopen(write_end, "wb") as out:
            out.write(json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as inp:
        raw = inp.read()
    os.waitpid(pid, 0)
    try:
        report = json.loads(raw)
        problems = report["problems"]
    except (ValueError, KeyError, TypeError):
        problems = [{"problem": "could not be validated (the validator crashed)", "place": None, "line": None}]
    return [PolicyError(file, p["problem"], p.get("place"), p.get("line")) for p in problems]


def _duplicate_checked(file: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    raise PolicyError(file, f"the key {key!r} appears twice in one object; "
                                            "which one applies would be ambiguous")
                seen.add(key)
        return obj

    return hook


def _non_finite(node: Any, text: str, file: str, path: list[Any]) -> list[PolicyError]:
    """YAML has .nan and .inf; a NaN limit compares false with everything and would disable it."""
    if isinstance(node, float) and not math.isfinite(node):
        return [PolicyError(file, f"{node} is not a finite number (a NaN or infinite limit would not limit)",
                            _json_path(path), _line_of(text, path))]
    found: list[PolicyError] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _non_finite(value, text, file, path + [key])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _non_finite(value, text, file, path + [index])
    return found


YAML_BOOLEANS = "YAML reads unquoted yes/no/on/off/true/false as booleans: quote it"


def _is_yaml(file: str) -> bool:
    return file.endswith((".yaml", ".yml"))


def _glob_problems(data: Any, text: str, file: str) -> list[PolicyError]:
    found: list[PolicyError] = []
    rules = data.get("rules") if isinstance(data, dict) else None
    hidden = data.get("hide") if isinstance(data, dict) else None
    keys = [(key, "rules") for key in (rules if isinstance(rules, dict) else ())]
    keys += [(key, "hide") for key in (hidden if isinstance(hidden, list) else ()) if isinstance(key, str)]
    for key, origin in keys:
        problem = glob_problem(key) if is_glob(key) else None
        if problem is not None:
            place = f"$.rules[{json.dumps(key)}]" if origin == "rules" else f"$.hide ({key!r})"
            path: list[Any] = ["rules", key] if origin == "rules" else ["hide", key]
            found.append(PolicyError(file, f"the glob {key!r} {problem}", place, _line_of(text, path)))
    return found


def _no_constant(file: str) -> Any:
    def reject(name: str) -> Any:
        raise PolicyError(file, f"{name} is not a number JSON allows (a NaN limit would disable it)")

    return reject


def _strict_yaml_loader(yaml: Any, file: str) -> Any:
    """A SafeLoader that refuses duplicate keys, as the JSON loader does (PyYAML keeps the last), and keys
    that are not strings: `no:` is the boolean False in YAML 1.1, and `? [a, b]` a list."""

    class StrictLoader(yaml.SafeLoader):  # type: ignore[misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, str):
                    raise PolicyError(file, _not_a_name(key), line=key_node.start_mark.line + 1)
                if key in seen:
                    raise PolicyError(file, f"the key {key!r} appears twice in one mapping; which one applies "
                                            "would be ambiguous", line=key_node.start_mark.line + 1)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def _not_a_name(key: Any) -> str:
    if isinstance(key, bool):
        return f"the key {key!r} is a boolean, not a name ({YAML_BOOLEANS})"
    if isinstance(key, (int, float)) or key is None:
        return f"the key {key!r} is {'null' if key is None else 'a number'}, not a name (quote it)"
    return "a key here is a collection, not a name"


FORMAT_BY_NAME = "a policy is read as YAML when its file name ends in .yaml or .yml, as JSON otherwise"


def _parse(text: str, file: str) -> Any:
    if _is_yaml(file):
        try:
            import yaml
        except ImportError:
            raise PolicyError(file, "YAML policies need PyYAML: pip install 'mcp-guard[yaml]'") from None
        try:
            return yaml.load(text, Loader=_strict_yaml_loader(yaml, file))  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc)
            raise PolicyError(file, f"not valid YAML: {problem}",
                              line=mark.line + 1 if mark is not None else None) from None
    try:
        return json.loads(text, object_pairs_hook=_duplicate_checked(file), parse_constant=_no_constant(file))
    except json.JSONDecodeError as exc:
        note = "" if file.endswith(".json") else f"; {FORMAT_BY_NAME}"
        raise PolicyError(file, f"not valid JSON: {exc.msg} (column {exc.colno}){note}",
                          line=exc.lineno) from None


def _json_path(path: Any) -> str:
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _line_of(text: str, path: list[Any]) -> int | None:
    """Best effort: the line where the value at `path` is written, by finding each key in turn."""
    pos = 0
    found = False
    for part in path:
        if isinstance(part, int):
            continue
        for needle in (json.dumps(part), f"{part}:", f"'{part}'"):
            index = text.find(needle, pos)
            if index >= 0:
                pos, found = index, True
                break
        else:
            return None
    return text.count("\n", 0, pos) + 1 if found else None


def _validate(data: Any, text: str, file: str) -> list[PolicyError]:
    """Every place where the file breaks the schema (one problem per place), not only the first."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    validator = Draft202012Validator(schema())
    found: list[PolicyError] = []
    for each in validator.iter_errors(data):
        error = best_match([each])
        path = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # One problem per unknown key, at the key's own line, with the key it probably meant.
            known = sorted(error.schema.get("properties", {}))
            for extra in sorted(set(error.instance) - set(known)):
                found.append(PolicyError(file, _unknown_key(extra, known), _json_path(path),
                                         _line_of(text, [*path, extra]) or _line_of(text, path)))
            continue
        problem = _explain_schema_error(error)
        if _is_yaml(file) and isinstance(error.instance, bool):
            problem += f" ({YAML_BOOLEANS})"
        found.append(PolicyError(file, problem, _json_path(path), _line_of(text, path)))
    return found


def _unknown_key(key: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {key!r} ({hint}known keys: {', '.join(known)})"


def _explain_schema_error(error: Any) -> str:
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(repr, error.validator_value))}"
    if error.validator == "const":
        return f"{error.instance!r} must be {error.validator_value!r}"
    return str(error.message)


def _build(data: dict[str, Any], text: str, file: str) -> Policy:
    rules: list[Rule] = []
    for key, spec in (data.get("rules") or {}).items():
        arguments = spec.get("arguments")
        rate = spec.get("rate_limit")
        budget = spec.get("budget")
        approval = spec.get("approval") or {}
        rules.append(Rule(
            key=key,
            action=spec.get("action", "allow"),
            reason=spec.get("reason"),
            rate_limit=RateLimit(rate["max"], float(rate["window"]), rate.get("scope", "session")) if rate else None,
            budget=Budget(budget["max"], float(budget["window"]), budget["cost"],
                          budget.get("scope", "session")) if budget else None,
            arguments=arguments,
            refund=spec.get("refund", "protocol_error"),
            monitor=spec.get("monitor", False),
            approval=Approval(float(approval.get("timeout", DEFAULT_APPROVAL.timeout)),
                              approval.get("remember", DEFAULT_APPROVAL.remember)),
        ))
    for key in data.get("hide") or ():
        rules.append(Rule(key=key, action="hide", origin="hide"))
    state = data.get("state")
    if state is not None:
        from .limitstore import StoreURLError, parse_url

        try:
            parse_url(state)
        except StoreURLError as exc:
            raise PolicyError(file, str(exc), "$.state", _line_of(text, ["state"])) from None
    limits, defaults = data.get("limits") or {}, Limits()
    return Policy.build(file, data.get("default", "allow"), tuple(rules),
                        data.get("default_reason"), data.get("description"), data,
                        Limits(limits.get("max_argument_bytes", defaults.max_argument_bytes),
                               float(limits.get("argument_check_seconds", defaults.argument_check_seconds))),
                        name=data.get("name"), state=state, on_store_error=data.get("on_store_error", "deny"),
                        pin=_pin_path(file, data.get("pin")), on_pin_mismatch=data.get("on_pin_mismatch", "hide"),
                        mode=data.get("mode", "enforce"),
                        approval_command=data.get("approval_command"))


def _pin_path(file: str, pin: Any) -> str | None:
    """The lock file `pin` names, relative to the policy file's directory (as a client's working
    directory is unknown)."""
    if not isinstance(pin, str):
        return None
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(file)), os.path.expanduser(pin)))


def _check_argument_schema(arguments: Any, file: str, text: str, key: str) -> None:
    """An argument schema must say what it means: a draft mcp-guard evaluates, valid in that draft, only
    that draft's keywords (a misspelled or another draft's keyword would constrain nothing, silently),
    and every $ref inside it."""
    from jsonschema.exceptions import SchemaError

    from .argschema import draft_of, draft_problem, keyword_problems, references, validator_class

    at = ["rules", key, "arguments"]
    unknown_draft = draft_problem(arguments)
    if unknown_draft is not None:
        path = at + unknown_draft[0]
        raise PolicyError(file, unknown_draft[1], _json_path(path), _line_of(text, path))
    draft = draft_of(arguments)
    try:
        validator_class(draft).check_schema(arguments)
    except SchemaError as exc:
        path = at + list(exc.path)
        raise PolicyError(file, f"not a valid JSON Schema: {exc.message}", _json_path(path),
                          _line_of(text, path)) from None
    for path, problem in keyword_problems(arguments, draft, at):
        raise PolicyError(file, problem, _json_path(path), _line_of(text, path))
    for path, ref in references(arguments, draft, at):
        if not ref.startswith("#"):
            raise PolicyError(file, f"$ref {ref!r} points outside the policy; mcp-guard never fetches schemas",
                              _json_path(path), _line_of(text, path))
        try:
            _resolver(arguments, draft).lookup(ref)
        except Exception:  # noqa: BLE001 - any failure to resolve is the same problem for the user
            raise PolicyError(file, f"$ref {ref!r} points to nothing in this schema", _json_path(path),
                              _line_of(text, path)) from None


def _resolver(schema_root: Any, draft: str = "2020-12") -> Any:
    from referencing import Registry

    from .argschema import specification

    resource = specification(draft).create_resource(schema_root)
    return Registry().with_resource("urn:mcp-guard:arguments", resource).resolver("urn:mcp-guard:arguments")
