"""Execution feedback, HumanEval's visible tests and the refinement prompt (no models)."""

import pytest

from codistill.datasets.humaneval import read_humaneval
from codistill.execution import run_programs
from codistill.tasks.base import Problem
from codistill.tasks.examples import docstring_examples
from codistill.tasks.feedback import collect_feedback, feedback_program, format_feedback
from codistill.tasks.humaneval import HumanEvalTask


class _NoChat:
    chat_template = None


@pytest.fixture(scope="module")
def problems():
    return read_humaneval()


def _program(p, body: str) -> str:
    return p.meta["prompt"] + body


def test_canonical_solutions_get_no_feedback_and_wrong_bodies_get_input_and_expected(problems):
    task = HumanEvalTask()
    good = [_program(p, p.meta["canonical_solution"]) for p in problems]
    bad = [_program(p, "    return None\n") for p in problems]
    hidden_good = collect_feedback(task, problems, good, visible=False, timeout_s=10, memory_mb=1024)
    assert [p.id for p, f in zip(problems, hidden_good) if f] == []
    hidden_bad = collect_feedback(task, problems, bad, visible=False, timeout_s=10, memory_mb=1024)
    assert [p.id for p, f in zip(problems, hidden_bad) if not f] == []
    fb = hidden_bad[2]  # truncate_number: the first hidden test, its input, output and expected value
    assert fb == ("Failed test: assert truncate_number(3.5) == 0.5\nInput: truncate_number(3.5)\n"
                  "Output: None\nExpected: 0.5")
    named = sum("Input: " in f and "Expected: " in f for f in hidden_bad)
    assert named >= 140, f"only {named} feedbacks name an input and an expected value"


def test_visible_tests_cover_most_problems_and_the_canonical_solutions_pass_them(problems):
    task = HumanEvalTask()
    with_tests = [p for p in problems if p.meta["visible_tests"]]
    n_tests = sum(len(p.meta["visible_tests"]) for p in problems)
    print(f"\nvisible tests: {len(with_tests)}/164 problems have >= 1, {n_tests} tests in all")
    assert len(with_tests) >= 140 and n_tests >= 390
    good = [_program(p, p.meta["canonical_solution"]) for p in with_tests]
    fb = collect_feedback(task, with_tests, good, visible=True, timeout_s=10, memory_mb=1024)
    assert [(p.id, f) for p, f in zip(with_tests, fb) if f] == []
    # and the visible tests are not the hidden ones: a solution of the examples only fails hidden tests
    p = problems[53]  # add(x, y), examples add(2, 3) == 5 and add(5, 7) == 12
    assert p.meta["visible_tests"] == ["assert add(2, 3) == 5", "assert add(5, 7) == 12"]
    cheat = _program(p, "    return {(2, 3): 5, (5, 7): 12}[(x, y)]\n")
    assert collect_feedback(task, [p], [cheat], visible=True, timeout_s=10, memory_mb=1024) == [None]
    hidden = collect_feedback(task, [p], [cheat], visible=False, timeout_s=10, memory_mb=1024)[0]
    assert hidden.startswith("The program raised KeyError")


@pytest.mark.parametrize("line, expected", [
    (">>> f([1, 2])\n    3\n", ["assert f([1, 2]) == 3"]),
    (">>> f('a',\n... 'b')\n'ab'\n", ["assert f('a', 'b') == 'ab'"]),
    ("f([1, 2]) == [2, 1]", ["assert f([1, 2]) == [2, 1]"]),
    ("f(5, 2, 7) ➞ True ", ["assert f(5, 2, 7) == True"]),
    ("* f(4) => [2,3]", ["assert f(4) == [2, 3]"]),
    ("f(1, 4) => true", ["assert f(1, 4) == True"]),
    ("f(148, 412) should return 16.", ["assert f(148, 412) == 16"]),
    ("f('Hi') returns 'Hi'", ["assert f('Hi') == 'Hi'"]),
    ("f(15)   # returns \"db1111db\"", ["assert f(15) == 'db1111db'"]),
    ("f('x.txt') # => 'No' (the name should start with a letter)", ["assert f('x.txt') == 'No'"]),
    ("f(\"5 apples\", 19) ->19 - 5 - 6 = 8", ["assert f('5 apples', 19) == 8"]),
    ("f(12, 15) = 14", ["assert f(12, 15) == 14"]),
    (">>> f([1, 2]) == [1, 2]\n", ["assert f([1, 2]) == [1, 2]"]),
    ("f(a) => False", []),  # prose argument
    ("g(1) == 2", []),  # another function
    ("f([\"a\", \"b\"]) == \"\"aaa\"", []),  # garbled expected value
    (">>> f(1)\nTraceback (most recent call last):\n", []),
])
def test_docstring_examples(line, expected):
    assert docstring_examples(f'def f(x):\n    """Doc.\n    {line}\n    """\n', "f") == expected


def test_feedback_names_the_exception_and_the_failing_line():
    task = HumanEvalTask()
    p = Problem(id="t", question="", meta={"entry_point": "f", "tests": ["assert f(2) == 1", "assert f(0) == 0"]})
    program = "def f(x):\n    y = x - 2\n    return 10 // y\n"
    [fb] = collect_feedback(task, [p], [program], visible=False, timeout_s=5, memory_mb=512)
    assert fb == ("The program raised ZeroDivisionError: integer division or modulo by zero\n"
                  "at line: return 10 // y\nwhile running the test: assert f(2) == 1")
    [fb] = collect_feedback(task, [p], ["def f(x):\n    return x +\n"], visible=False, timeout_s=5, memory_mb=512)
    assert fb.startswith("The program raised SyntaxError") and "at line: return x +" in fb
    [fb] = collect_feedback(task, [p], ["def f(x):\n    while True:\n        pass\n"], visible=False,
                            timeout_s=1, memory_mb=512)
    assert fb == "Timeout: the program did not finish within 1 s (an infinite loop, or too slow)."


def test_a_program_cannot_forge_a_verdict_through_its_feedback(problems):
    """Disabling ``exec`` silences the feedback, but the verdict is the task's own check."""
    task = HumanEvalTask()
    p = problems[2]
    program = p.meta["prompt"] + "    return None\n\nimport builtins\nbuiltins.exec = lambda *a, **k: None\n"
    [res] = run_programs([task.check_program(p, program)], timeout_s=5)
    assert not task.judge(p, res)
    [value] = run_programs([feedback_program(program, p.meta["tests"], entry_point=p.meta["entry_point"],
                                             setup=p.meta["test_setup"])], timeout_s=5)
    assert value.value == {"kind": "passed", "n_tests": len(p.meta["tests"])}  # silenced, not a verdict


def test_format_feedback_is_pure():
    prog = "def f(x):\n    return x[0]\n"
    assert format_feedback({"kind": "passed", "n_tests": 3}, prog) is None
    assert format_feedback(None, prog, status="timeout", timeout_s=2.5).startswith("Timeout: ")
    assert format_feedback(None, prog, status="error", error="NameError: name 'q' is not defined",
                           stderr='  File "main.py", line 2, in f\n') == (
        "The program raised NameError: name 'q' is not defined\nat line: return x[0]")
    assert format_feedback({"kind": "assertion", "test": "f([1]) == 2", "call": "f([1])", "output": "1",
                            "expected": "2"}, prog) == (
        "Failed test: assert f([1]) == 2\nInput: f([1])\nOutput: 1\nExpected: 2")
    assert format_feedback({"kind": "assertion", "test": "f([]) is None", "call": None}, prog) == (
        "Failed test: assert f([]) is None")


def test_refinement_prompt_holds_task_attempt_and_feedback_and_keeps_the_prefix(problems):
    from codistill.models.tiny import load_tiny_tokenizer  # a tokenizer with a chat template

    task = HumanEvalTask()
    p = problems[2]
    attempt = p.meta["prompt"] + "    return number\n"
    fb = "Failed test: assert truncate_number(3.5) == 0.5"
    plain = task.render_refine(p, attempt, fb, _NoChat(), chat=True)  # no chat template: completion style
    assert plain.text.startswith(attempt.rstrip()) and "# " + fb in plain.text
    assert plain.text.endswith(p.meta["prompt"]) and plain.prefix == p.meta["prompt"] and not plain.fenced
    program = task.extract_program(plain, "    return number % 1.0\n")
    assert program == p.meta["prompt"] + "    return number % 1.0\n"
    assert task.target(plain, program) == "    return number % 1.0"
    chat = task.render_refine(p, attempt, fb, load_tiny_tokenizer(), chat=True)
    assert chat.fenced and chat.prefix == p.meta["prompt"] and chat.text.endswith("```python\n" + p.meta["prompt"])
    assert task.describe(p) in chat.text and attempt.rstrip() in chat.text and fb in chat.text
    assert task.target(chat, program) == "    return number % 1.0\n```"


def test_gsm_feedback_names_the_returned_value_not_the_answer():
    """GSM's only test is the gold answer: a wrong program is told what it returned and that it is
    wrong -- the expected value only with reveal_answer (method.reveal_answer), since a teacher
    shown it can pass by returning it -- a crashing one its exception, a correct one nothing --
    made from the real sandbox run."""
    from codistill.tasks.base import Problem
    from codistill.tasks.feedback import collect_feedback
    from codistill.tasks.gsm import GSMTask
    from codistill.execution import run_programs

    task = GSMTask("pal")
    prob = Problem(id="g0", question="Tom has 3 boxes of 4 apples. How many apples?", answer="12")
    programs = ["def solution():\n    return 3 * 4\n", "def solution():\n    return 3 + 4\n",
                "def solution():\n    return 3 / 0\n"]
    results = run_programs([task.check_program(prob, p) for p in programs], timeout_s=5)
    fb = collect_feedback(task, [prob] * 3, programs, visible=False, timeout_s=5, memory_mb=512, results=results)
    assert fb[0] is None
    assert fb[1] == "Wrong answer: solution() returned 7, which is not the correct answer."
    assert "12" not in fb[1]
    shown = collect_feedback(task, [prob], programs[1:2], visible=False, timeout_s=5, memory_mb=512,
                             results=results[1:2], reveal_answer=True)
    assert shown == ["Wrong answer: solution() returned 7\nExpected: 12"]
    assert fb[2].startswith("The program raised ZeroDivisionError")
    # at test time (visible tests only) GSM gives no feedback: the answer is hidden
    assert collect_feedback(task, [prob], programs[1:2], visible=True, timeout_s=5, memory_mb=512,
                            results=results[1:2]) == [None]
