"""Visible tests from the examples in a function's docstring (HumanEval-style prompts).

A model may be shown these at test time (multi-step inference refines an attempt with their
feedback); the hidden tests stay hidden.  Three styles occur in HumanEval:

    >>> f(1, 2)            f([1, 2]) == 3          f("a") ➞ True
    3                      f(4) => [2, 3]          f(5) should return 16.

Each example becomes one statement ``assert f(...) == <expected>``.  Only examples whose call
is to the entry point, with literal arguments and a literal expected value, are kept (a
prose example such as ``is_happy(a) => False`` is skipped).  All functions here are pure.
"""

from __future__ import annotations

import ast
import re

# what separates a call from its expected value, in the styles HumanEval uses
_SEPARATOR = re.compile(r"^\s*#?\s*(==>|=>|->|➞|==|=|should\s+return|returns|is)\s*")
_LITERAL_TAIL = re.compile(r"^(\s.*|[.,;:]\s*.*|#.*)?$", re.S)
_WORDS = {"true": "True", "false": "False", "none": "None"}


def _literal(text: str) -> tuple[bool, object]:
    text = _WORDS.get(text.strip(), text.strip())
    if not text:
        return False, None
    try:
        return True, ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def _calls_entry(expr: ast.AST, entry_point: str) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == entry_point
               for n in ast.walk(expr))


def _literal_call(text: str, entry_point: str) -> str | None:
    """``text`` when it is exactly ``entry_point(<literal args>)``."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point):
        return None
    for arg in list(node.args) + [k.value for k in node.keywords]:
        try:
            ast.literal_eval(arg)
        except (ValueError, SyntaxError, TypeError):
            return None
    return ast.unparse(node)


def _expected(rest: str) -> tuple[bool, object]:
    """The literal a line's tail states as the expected value (``19 - 5 - 6 = 8`` gives 8)."""
    rest = rest.strip()
    if " = " in rest:  # a worked computation ending in its result
        ok, v = _literal(rest.rsplit(" = ", 1)[1].rstrip("."))
        if ok:
            return ok, v
    if rest.endswith("."):  # a sentence's full stop ("should return 16.")
        ok, v = _literal(rest[:-1])
        if ok:
            return ok, v
    for end in range(len(rest), 0, -1):  # the longest literal prefix followed by prose / punctuation
        if not _LITERAL_TAIL.match(rest[end:]):
            continue
        ok, v = _literal(rest[:end])
        if ok:
            return ok, v
    return False, None


def _statement(call: str, value: object) -> str:
    return f"assert {call} == {value!r}"


def _doctest_examples(lines: list[str], entry_point: str) -> list[str]:
    """``>>> expr`` followed by its output (``...`` continues the expression)."""
    tests, i = [], 0
    while i < len(lines):
        line = lines[i].strip()
        if not line.startswith(">>>"):
            i += 1
            continue
        expr = line[3:].strip()
        i += 1
        while i < len(lines) and lines[i].strip().startswith("..."):
            expr += "\n" + lines[i].strip()[3:].strip()
            i += 1
        out = []
        while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith(">>>") \
                and '"""' not in lines[i] and "'''" not in lines[i]:
            out.append(lines[i].strip())
            i += 1
        try:
            node = ast.parse(expr, mode="eval").body
        except SyntaxError:
            continue
        if not _calls_entry(node, entry_point):
            continue
        src = ast.unparse(node)
        if not out:  # ``>>> f(x) == y`` stated as a check, no output line
            if isinstance(node, ast.Compare):
                tests.append(f"assert {src}")
            continue
        ok, value = _literal(" ".join(out))
        if ok:
            tests.append(_statement(src, value))
    return tests


def _inline_examples(lines: list[str], entry_point: str) -> list[str]:
    """``f(x) == y``, ``f(x) ➞ y``, ``f(x) => y``, ``f(x) should return y`` ... on one line."""
    tests = []
    for line in lines:
        if line.strip().startswith(">>>"):
            continue
        start = line.find(entry_point + "(")
        while start > 0 and (line[start - 1].isalnum() or line[start - 1] == "_"):  # part of a longer name
            start = line.find(entry_point + "(", start + 1)
        if start < 0:
            continue
        call, end = None, None
        for j in range(start + len(entry_point) + 1, len(line)):
            if line[j] == ")":
                call = _literal_call(line[start:j + 1], entry_point)
                if call is not None:
                    end = j + 1
                    break
        if call is None:
            continue
        m = _SEPARATOR.match(line[end:])
        if not m:
            continue
        ok, value = _expected(line[end + m.end():])
        if ok:
            tests.append(_statement(call, value))
    return tests


def docstring_examples(prompt: str, entry_point: str) -> list[str]:
    """The visible tests stated in ``prompt``'s docstring examples, de-duplicated, in order."""
    lines = prompt.splitlines()
    out: list[str] = []
    for t in _doctest_examples(lines, entry_point) + _inline_examples(lines, entry_point):
        if t not in out:
            out.append(t)
    return out
