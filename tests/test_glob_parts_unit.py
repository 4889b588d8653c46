"""policy.glob_parts: the one reading of a glob's character classes, shared by the policy's checks
(glob_problem) and the lint's samples (lint._samples). Read as fnmatch reads them."""

from __future__ import annotations

import fnmatch

import pytest

from mcp_guard.policy import CharClass, glob_parts, glob_problem


@pytest.mark.parametrize(("key", "parts", "unclosed"), [
    ("read_*", ("read_", "*"), False),
    ("a?b", ("a", "?", "b"), False),
    ("[a-c]x", (CharClass(False, (("a", "c"),)), "x"), False),
    ("[!a-c_]", (CharClass(True, (("a", "c"), ("_", "_"))),), False),
    ("[]x]", (CharClass(False, (("]", "]"), ("x", "x"))),), False),
    ("[!]]", (CharClass(True, (("]", "]"),)),), False),
    ("[^a]", (CharClass(False, (("^", "^"), ("a", "a"))),), False),  # fnmatch: ^ is no negation
    ("admin_[x", ("admin_[x",), True),
    ("[*]", (CharClass(False, (("*", "*"),)),), False),
])
def test_glob_parts(key, parts, unclosed):
    parsed = glob_parts(key)
    assert parsed.parts == parts
    assert parsed.unclosed == unclosed


@pytest.mark.parametrize(("key", "problem"), [
    ("tool_[z-a]", "has the reversed character range z-a, which matches nothing"),
    ("admin_[x", "has a [ that is never closed; write [[] to match a literal ["),
    ("tool_[a-z]*", None),
    ("[[]x", None),
])
def test_glob_problem(key, problem):
    assert glob_problem(key) == problem


@pytest.mark.parametrize("name", ["]", "x", "a", "^", "-"])
def test_classes_agree_with_fnmatch(name):
    for key in ("[]x]", "[!]]", "[^a]", "[a-]"):
        char_class = glob_parts(key).parts[0]
        assert isinstance(char_class, CharClass)
        inside = any(first <= name <= last for first, last in char_class.ranges) != char_class.negated
        assert inside == fnmatch.fnmatchcase(name, key), (key, name)
