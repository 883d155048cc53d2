"""Execution feedback for code tasks: what went wrong, in words a model can use (PERsD).

For a program that failed, a *feedback program* runs it against test statements one by one
(``assert f(1) == 2``) inside the sandbox.  Its entry returns plain data about the first test
that failed: the test, the call (input), the value the program returned and the expected
value -- or the exception and the program line that raised it.  The parent turns that data
into a short text with :func:`format_feedback` (pure).

The feedback is advice, never a verdict: whether a program passes is decided by the task's
own checking program (``Task.check_program`` / ``Task.judge``).  A hostile program can at
most garble its own feedback text.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codistill.execution import Program
    from codistill.tasks.base import Problem, Task

FEEDBACK_ENTRY = "__codistill_feedback__"
MAX_REPR = 300

# Appended to the program; its entry runs the tests one by one and describes the first failure.
# Everything it returns is str / int / None (converted to plain JSON data in the sandbox).
_HARNESS = r'''

def __codistill_feedback__():
    import ast as _ast
    import traceback as _tb
    _g = globals()
    _tests = __TESTS__
    _entry = __ENTRY__

    def _short(v):
        try:
            r = repr(v)
        except BaseException as e:
            r = "<unprintable %s: %s>" % (type(v).__name__, type(e).__name__)
        return r if len(r) <= __MAX_REPR__ else r[:__MAX_REPR__] + "..."

    def _describe(e):
        try:
            msg = str(e)
        except BaseException:
            msg = ""
        msg = msg if len(msg) <= 500 else msg[:500] + "..."
        return "%s: %s" % (type(e).__name__, msg) if msg else type(e).__name__

    def _program_line(tb):
        line = None
        for fr, lineno in _tb.walk_tb(tb):
            if fr.f_code.co_filename == "main.py":
                line = lineno
        return line

    def _test_frame(tb):
        found = None
        for fr, lineno in _tb.walk_tb(tb):
            if fr.f_code.co_filename == "<test>":
                found = (fr, lineno)
        return found

    def _is_entry_call(node):
        return (isinstance(node, _ast.Call) and isinstance(node.func, _ast.Name)
                and node.func.id in (_entry, "candidate"))

    for _i, _t in enumerate(_tests):
        try:
            _code = compile(_t, "<test>", "exec")
        except SyntaxError:
            continue  # a malformed test statement says nothing about the program
        try:
            exec(_code, _g)
        except AssertionError as e:
            out = {"kind": "assertion", "index": _i, "test": _t, "call": None, "output": None,
                   "expected": None, "error": None, "line": None}
            where = _test_frame(e.__traceback__)
            if where is None:  # raised inside the program itself
                out.update(kind="exception", error=_describe(e), line=_program_line(e.__traceback__))
                return out
            fr, lineno = where
            try:
                node = next(n for n in _ast.walk(_ast.parse(_t)) if isinstance(n, _ast.Assert) and n.lineno == lineno)
            except (StopIteration, SyntaxError):
                return out
            out["test"] = _ast.unparse(node.test)
            call = next((n for n in _ast.walk(node.test) if _is_entry_call(n)), None)
            scope = dict(fr.f_globals)
            scope.update(fr.f_locals)
            if call is not None:
                out["call"] = _ast.unparse(call)
                try:
                    out["output"] = _short(eval(compile(_ast.Expression(call), "<test>", "eval"), scope))
                except BaseException as e2:
                    out["output"] = "raised " + _describe(e2)
            t = node.test
            if (isinstance(t, _ast.Compare) and len(t.ops) == 1 and isinstance(t.ops[0], _ast.Eq)
                    and call is not None):
                other = t.comparators[0] if any(n is call for n in _ast.walk(t.left)) else t.left
                try:
                    out["expected"] = _short(eval(compile(_ast.Expression(other), "<test>", "eval"), scope))
                except BaseException:
                    out["expected"] = _ast.unparse(other)
                if t.left is not call and t.comparators[0] is not call:
                    out["expected"] = None  # e.g. round(f(x), 2) == y: show the whole test instead
            return out
        except BaseException as e:
            where = _test_frame(e.__traceback__)
            lines = _t.splitlines()
            if where is not None and len(lines) > 1 and 1 <= where[1] <= len(lines):
                _t = lines[where[1] - 1].strip()  # the statement of a multi-line test that raised
            return {"kind": "exception", "index": _i, "test": _t, "call": None, "output": None,
                    "expected": None, "error": _describe(e), "line": _program_line(e.__traceback__)}
    return {"kind": "passed", "n_tests": len(_tests)}
'''


def feedback_program(program: str, tests: list[str], *, entry_point: str, setup: str = "") -> Program:
    """The sandbox program that runs ``program`` and then ``tests`` one by one (pure).

    ``program`` comes first, so the line numbers the harness reports are the program's own."""
    from codistill.execution import Program

    harness = (_HARNESS.replace("__TESTS__", repr(list(tests))).replace("__ENTRY__", repr(entry_point))
               .replace("__MAX_REPR__", str(MAX_REPR)))
    source = program.rstrip() + "\n\n" + (setup.rstrip() + "\n" if setup.strip() else "") + harness
    return Program(source=source, entry=FEEDBACK_ENTRY)


def program_line(program: str, lineno: int | None) -> str | None:
    """Line ``lineno`` (1-based) of ``program``, stripped; None when out of range (pure)."""
    lines = program.splitlines()
    if lineno is None or not 1 <= lineno <= len(lines):
        return None
    return lines[lineno - 1].strip() or None


def _error_lineno(error: str | None, stderr: str | None) -> int | None:
    """The program line an uncaught error points at: ``(main.py, line N)`` of a SyntaxError, or
    the last ``File "main.py", line N`` of the traceback tail (pure)."""
    m = re.search(r"\(main\.py, line (\d+)\)", error or "")
    if m:
        return int(m.group(1))
    found = re.findall(r'File "main\.py", line (\d+)', stderr or "")
    return int(found[-1]) if found else None


def format_feedback(result: dict | None, program: str, *, status: str = "passed", error: str | None = None,
                    stderr: str | None = None, timeout_s: float | None = None) -> str | None:
    """A short, human-readable feedback text, or None when every test passed (pure).

    ``result`` is the value the feedback program's entry returned (None when the program did
    not get that far); ``status`` / ``error`` / ``stderr`` are its ExecResult's."""
    if status == "timeout":
        return (f"Timeout: the program did not finish within {timeout_s:g} s (an infinite loop, or too slow)."
                if timeout_s else "Timeout: the program did not finish in time (an infinite loop, or too slow).")
    if status == "killed":
        return f"The program was killed: {error or 'resource limit exceeded'}."
    if result is None:  # the program itself failed before any test ran (syntax error, bad import, ...)
        msg = error or "the program failed before any test ran"
        line = program_line(program, _error_lineno(error, stderr))
        return f"The program raised {msg}" + (f"\nat line: {line}" if line else "")
    kind = result.get("kind")
    if kind == "passed":
        return None
    test = result.get("test") or ""
    if kind == "exception":
        line = program_line(program, result.get("line"))
        text = f"The program raised {result.get('error')}"
        if line:
            text += f"\nat line: {line}"
        return text + f"\nwhile running the test: {test}"
    parts = [f"Failed test: assert {test}"]
    if result.get("call"):
        parts.append(f"Input: {result['call']}")
        parts.append(f"Output: {result.get('output')}")
        if result.get("expected") is not None:
            parts.append(f"Expected: {result['expected']}")
    return "\n".join(parts)


def collect_feedback(task: Task, problems: list[Problem], programs: list[str], *, visible: bool,
                     timeout_s: float, memory_mb: int, results: list | None = None,
                     reveal_answer: bool = False) -> list[str | None]:
    """Feedback for each (problem, program): None when the program passes the tests in question.

    ``visible=True`` runs only the problem's visible tests (what a model may be told at test
    time); ``visible=False`` runs the hidden ones (training-time feedback, as in PERsD).  When the
    checking run's ``results`` are given (ExecResult or tasks.judge.Judged: ``status``, ``passed``,
    ``error``), a timeout / kill there is reported without re-running.  ``reveal_answer``: a task
    whose test is its weak label (GSM) names the expected answer in the feedback."""
    from codistill.execution import run_programs

    out: list[str | None] = [None] * len(problems)
    todo, progs = [], []
    for i, (prob, program) in enumerate(zip(problems, programs)):
        res = results[i] if results is not None else None
        if res is not None and res.status in ("timeout", "killed"):
            out[i] = format_feedback(None, program, status=res.status, error=res.error, timeout_s=timeout_s)
            continue
        direct = None if res is None or visible else task.answer_feedback(prob, res, reveal_answer=reveal_answer)
        if direct is not None:
            out[i] = direct  # the task's test is its weak label (GSM): no second run needed
            continue
        tests, setup = task.feedback_tests(prob, visible=visible)
        if not tests:
            if res is not None and not res.passed:  # no test statements: the checking run's own error
                out[i] = format_feedback(None, program, status="error", error=res.error or "the tests failed",
                                         stderr=getattr(res, "stderr", None))
            continue
        todo.append(i)
        progs.append(feedback_program(program, tests, entry_point=prob.meta.get("entry_point", ""), setup=setup))
    for i, res in zip(todo, run_programs(progs, timeout_s=timeout_s, memory_mb=memory_mb) if progs else []):
        value: Any = res.value if res.status == "passed" else None
        out[i] = format_feedback(value if isinstance(value, dict) else None, programs[i], status=res.status,
                                 error=res.error, stderr=res.stderr, timeout_s=timeout_s)
    return out
