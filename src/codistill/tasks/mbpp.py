"""MBPP-style tasks: write a function from a description, checked by ``assert`` statements.

Used by ``dataset=mbpp`` and ``dataset=code_alpaca`` (whose tests the teacher helps make).
The prompt gives the description and the visible tests (MBPP: the first of ``test_list``,
which pins the function's name, as in the MBPP paper); chat models get it chat-templated,
with the answer opened as a ```python fence.  Few-shot prompts use MBPP's own exemplars
(its "prompt" split, task_ids 2-4).  The checking program is ``setup + program + tests``;
it passes when every assertion holds.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

from codistill.tasks.base import Problem, Prompt, Task, cut_at_stops

if TYPE_CHECKING:
    from codistill.execution import ExecResult, Program

# a top-level test, example call or main block ends the solution
STOPS = ("```", "\nassert ", "\nif __name__", "\nprint(", '\n"""', "\n# Test", "\n# Example")


@lru_cache(maxsize=1)
def load_exemplars() -> dict:
    """The instruction and few-shot exemplars (tasks/prompts/mbpp.yaml)."""
    text = (resources.files("codistill.tasks") / "prompts" / "mbpp.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def describe(question: str, tests: list[str]) -> str:
    """The user's turn: the task and the tests the code must pass (pure)."""
    head = "Your code should pass this test:" if len(tests) == 1 else "Your code should pass these tests:"
    return f"{question.strip()}\n{head}\n\n" + "\n".join(t.strip() for t in tests)


def visible_tests(problem: Problem) -> list[str]:
    """The tests shown in the prompt (default: the first hidden test)."""
    return problem.meta.get("visible_tests") or problem.meta["tests"][:1]


class MBPPTask(Task):
    name = "mbpp"
    stop = STOPS

    def render(self, problem: Problem, tokenizer: Any, *, chat: bool, shots: int) -> Prompt:
        ex = load_exemplars()
        shots_ = ex["exemplars"][:shots]
        if chat and getattr(tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": ex["instruction"]}]
            for e in shots_:
                messages.append({"role": "user", "content": describe(e["question"], e["tests"][:1])})
                messages.append({"role": "assistant", "content": f"```python\n{e['program'].rstrip()}\n```"})
            messages.append({"role": "user", "content": describe(problem.question, visible_tests(problem))})
            head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return Prompt(text=head + "```python\n", prefix="", fenced=True)
        blocks = [f"{describe(e['question'], e['tests'][:1])}\n```python\n{e['program'].rstrip()}\n```\n\n"
                  for e in shots_]
        text = "".join(blocks) + describe(problem.question, visible_tests(problem)) + "\n```python\n"
        return Prompt(text=text, prefix="", fenced=True)

    def extract_program(self, prompt: Prompt, completion: str) -> str:
        return prompt.prefix + cut_at_stops(completion, self.stop).rstrip() + "\n"

    def check_program(self, problem: Problem, program: str) -> Program:
        from codistill.execution import Program

        setup = problem.meta.get("setup") or ""
        tests = "\n".join(problem.meta["tests"])
        return Program(source=f"{setup}\n\n{program}\n\n{tests}\n")

    def judge(self, problem: Problem, result: ExecResult) -> bool:
        return bool(result.passed)
