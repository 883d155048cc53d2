"""The humaneval task: canonical solutions pass through it, wrong ones fail."""

from codistill.datasets.humaneval import read_humaneval
from codistill.execution import run_programs
from codistill.tasks.humaneval import HumanEvalTask


class _NoChat:
    chat_template = None


def test_all_164_canonical_solutions_pass_and_wrong_ones_fail():
    task = HumanEvalTask()
    problems = read_humaneval()
    assert len(problems) == 164 and problems[0].id == "HumanEval/0"
    good, bad = [], []
    for p in problems:
        prompt = task.render(p, _NoChat(), chat=False, shots=0)
        good.append(task.check_program(p, task.extract_program(prompt, p.meta["canonical_solution"])))
        bad.append(task.check_program(p, task.extract_program(prompt, "    return None\n")))
    results = run_programs(good + bad, timeout_s=10)
    verdicts = [task.judge(p, r) for p, r in zip(problems + problems, results)]
    failing = [p.id for p, v in zip(problems, verdicts[:164]) if not v]
    assert failing == [], failing
    wrongly_passing = [p.id for p, v in zip(problems, verdicts[164:]) if v]
    assert wrongly_passing == [], wrongly_passing


def test_completion_is_cut_at_the_next_top_level_statement():
    task = HumanEvalTask()
    p = read_humaneval()[0]
    prompt = task.render(p, _NoChat(), chat=False, shots=0)
    completion = "    return True\n\n\ndef unrelated():\n    pass\nprint(1)"
    program = task.extract_program(prompt, completion)
    assert program == p.meta["prompt"] + "    return True\n"
    assert task.target(prompt, program) == "    return True"
