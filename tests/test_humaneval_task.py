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


class _Chat:
    """A chat tokenizer stand-in: messages rendered as tagged text."""

    chat_template = "tagged"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def _whole_function(p, helper=True):
    """The canonical solution written as a chat model would: the whole function, with a helper
    and a comment before it (both would be cut by the body style's top-level stops)."""
    code = p.meta["prompt"]
    start = code.index(f"def {p.meta['entry_point']}(")
    sig = code[start:code.index(":\n", start) + 1]  # the signature, without the docstring
    extra = "# a helper of my own\ndef _unused_helper(x):\n    return x\n\n" if helper else ""
    return f"{extra}{sig}\n{p.meta['canonical_solution']}"


def test_function_style_asks_for_the_whole_function_and_keeps_the_problem_code():
    task = HumanEvalTask("function")
    problems = read_humaneval()[:20]
    programs, wrong = [], []
    for p in problems:
        prompt = task.render(p, _Chat(), chat=True, shots=0)
        assert prompt.text.endswith("```python\n") and p.meta["prompt"].strip() not in prompt.text.split("<assistant>")[1]
        completion = _whole_function(p) + "```\nThis function works because..."
        program = task.extract_program(prompt, completion)
        assert program.startswith(p.meta["prompt"].rstrip()) and "_unused_helper" in program
        # the student learns exactly what the model wrote, then the closing fence
        assert task.target(prompt, program) == _whole_function(p).rstrip() + "\n```"
        programs.append(task.check_program(p, program))
        stub_only = task.extract_program(prompt, "```")  # closing the block at once: the stub alone
        wrong.append(task.check_program(p, stub_only))
    results = run_programs(programs + wrong, timeout_s=10)
    verdicts = [task.judge(p, r) for p, r in zip(problems + problems, results)]
    assert verdicts[:20] == [True] * 20, [p.id for p, v in zip(problems, verdicts) if not v]
    assert verdicts[20:] == [False] * 20


def test_function_style_accepts_a_bare_body_and_falls_back_to_body_prompts_without_chat():
    task = HumanEvalTask("function")
    p = read_humaneval()[2]
    prompt = task.render(p, _Chat(), chat=True, shots=0)
    program = task.extract_program(prompt, "\n" + p.meta["canonical_solution"] + "```")
    [r] = run_programs([task.check_program(p, program)], timeout_s=10)
    assert task.judge(p, r)
    plain = task.render(p, _NoChat(), chat=True, shots=0)
    assert plain.text == p.meta["prompt"] and plain.prefix_shown


def test_function_style_refinement_shows_the_models_own_code_and_asks_for_it_whole():
    task = HumanEvalTask("function")
    p = read_humaneval()[3]
    prompt = task.render(p, _Chat(), chat=True, shots=0)
    attempt = task.extract_program(prompt, _whole_function(p, helper=False).replace("return", "return not") + "```")
    rp = task.render_refine(p, attempt, "Failed test: ...", _Chat(), chat=True)
    shown = rp.text.split("This attempt is wrong:\n```python\n")[1].split("```")[0]
    assert shown.startswith("def below_zero(") and '"""' not in shown  # no stub in front of it
    assert rp.text.endswith("```python\n") and not rp.prefix_shown
    program = task.extract_program(rp, _whole_function(p) + "```")
    [r] = run_programs([task.check_program(p, program)], timeout_s=10)
    assert task.judge(p, r)
    body_style = HumanEvalTask().render_refine(p, attempt, "Failed test: ...", _Chat(), chat=True)
    assert body_style.text.endswith(p.meta["prompt"]) and body_style.prefix_shown
