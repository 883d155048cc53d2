"""HumanEval-style function completion, checked by the problem's hidden tests.

The prompt is the function's signature and docstring.  ``task.code_style``:

- ``body`` (default, and always for models without a chat template): the model completes the
  body; the program is ``prompt + completion``.
- ``function`` (chat models): the chat answer opens a code block in which the model writes the
  whole function, helpers included; the program is ``prompt + "\n\n" + code``, so the problem's
  imports and helpers stay and the model's definition replaces the stub.  Small chat models
  often close a code block at once when it opens with the stub they were given (an empty
  body); asked for the whole function they write real code.

The checking program is ``program + test + check(entry_point)``, run in the sandbox; it passes
when every assertion of ``check`` holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from codistill.tasks.base import Problem, Prompt, Task, cut_at_stops

if TYPE_CHECKING:
    from codistill.execution import ExecResult, Program

INSTRUCTION = ("Complete the Python function. Keep its signature and docstring, write the body, "
               "and return only the code.")
FUNCTION_INSTRUCTION = "Complete the Python function. Return the complete function in a Python code block."
STYLES = ("body", "function")
# Codex-style stops: a new top-level statement ends the function
TOP_LEVEL_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", '\n"""', "\n#")


class HumanEvalTask(Task):
    name = "humaneval"
    stop = ("```",) + TOP_LEVEL_STOPS

    @classmethod
    def from_config(cls, task_cfg) -> "HumanEvalTask":
        return cls(task_cfg.code_style)

    def __init__(self, code_style: str = "body") -> None:
        if code_style not in STYLES:
            raise ValueError(f"task.code_style: {code_style!r} is not one of {list(STYLES)}")
        self.style = code_style
        if code_style == "function":
            # the model's own helpers (a nested "\ndef ", comments) belong to its answer
            self.stop = ("```", "\nif __name__", "\nprint(", "\nassert ")

    def render(self, problem: Problem, tokenizer: Any, *, chat: bool, shots: int) -> Prompt:
        code = problem.meta["prompt"]
        if chat and getattr(tokenizer, "chat_template", None):
            whole = self.style == "function"
            messages = [{"role": "system", "content": FUNCTION_INSTRUCTION if whole else INSTRUCTION},
                        {"role": "user", "content": f"```python\n{code.rstrip()}\n```"}]
            head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            if whole:
                return Prompt(text=head + "```python\n", prefix=self._stub(code), fenced=True, prefix_shown=False)
            return Prompt(text=head + "```python\n" + code, prefix=code, fenced=True)
        return Prompt(text=code, prefix=code, fenced=False)

    @staticmethod
    def _stub(code: str) -> str:
        """The problem's code that a whole-function answer is appended to (imports, helpers)."""
        return code.rstrip() + "\n\n\n"

    def extract_program(self, prompt: Prompt, completion: str) -> str:
        code = cut_at_stops(completion, self.stop).rstrip()
        if not prompt.prefix_shown:
            code = code.lstrip("\n")
        return prompt.prefix + code + "\n"

    def refine_prompt_parts(self, problem: Problem, attempt: str) -> tuple[str, Prompt] | None:
        if self.style != "function":
            return None
        prefix = self._stub(problem.meta["prompt"])
        shown = attempt[len(prefix):] if attempt.startswith(prefix) else attempt
        return shown.strip("\n"), Prompt(text="", prefix=prefix, fenced=True, prefix_shown=False)

    def check_program(self, problem: Problem, program: str) -> Program:
        from codistill.execution import Program

        test = problem.meta["test"]
        return Program(source=f"{program}\n\n{test}\n\ncheck({problem.meta['entry_point']})\n")

    def judge(self, problem: Problem, result: ExecResult) -> bool:
        return bool(result.passed)

    def describe(self, problem: Problem) -> str:
        return f"```python\n{problem.meta['prompt'].rstrip()}\n```"
