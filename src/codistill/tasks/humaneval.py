"""HumanEval-style function completion, checked by the problem's hidden tests.

The prompt is the function's signature and docstring; the model completes the body.  The
checking program is ``prompt + completion + test + check(entry_point)``, run in the
sandbox; it passes when every assertion of ``check`` holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from codistill.tasks.base import Problem, Prompt, Task, cut_at_stops

if TYPE_CHECKING:
    from codistill.execution import ExecResult, Program

INSTRUCTION = ("Complete the Python function. Keep its signature and docstring, write the body, "
               "and return only the code.")
# Codex-style stops: a new top-level statement ends the function
TOP_LEVEL_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", '\n"""', "\n#")


class HumanEvalTask(Task):
    name = "humaneval"
    stop = ("```",) + TOP_LEVEL_STOPS

    def render(self, problem: Problem, tokenizer: Any, *, chat: bool, shots: int) -> Prompt:
        code = problem.meta["prompt"]
        if chat and getattr(tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": INSTRUCTION},
                        {"role": "user", "content": f"```python\n{code.rstrip()}\n```"}]
            head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return Prompt(text=head + "```python\n" + code, prefix=code, fenced=True)
        return Prompt(text=code, prefix=code, fenced=False)

    def extract_program(self, prompt: Prompt, completion: str) -> str:
        return prompt.prefix + cut_at_stops(completion, self.stop).rstrip() + "\n"

    def check_program(self, problem: Problem, program: str) -> Program:
        from codistill.execution import Program

        test = problem.meta["test"]
        return Program(source=f"{program}\n\n{test}\n\ncheck({problem.meta['entry_point']})\n")

    def judge(self, problem: Problem, result: ExecResult) -> bool:
        return bool(result.passed)

    def describe(self, problem: Problem) -> str:
        return f"```python\n{problem.meta['prompt'].rstrip()}\n```"
