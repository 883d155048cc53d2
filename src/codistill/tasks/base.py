"""What every task provides: prompts, program extraction, the checking program, the verdict."""

from __future__ import annotations

import ast
import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codistill.execution import ExecResult, Program


@dataclass
class Problem:
    """One problem. ``answer`` is the weak label (GSM: the gold number); ``meta`` holds
    task-specific fields (HumanEval: prompt, test, entry_point)."""

    id: str
    question: str
    answer: Any = None
    meta: dict = field(default_factory=dict)


@dataclass
class Prompt:
    """A rendered prompt.  ``prefix`` is the start of the program, already in the prompt
    (it pins the entry point: ``def solution():``); it belongs to the program."""

    text: str
    prefix: str = ""
    fenced: bool = False  # the prompt opened a ```python fence that the completion closes
    #: False: ``prefix`` is not in ``text`` -- the model writes a whole program that is appended to
    #: it (HumanEval ``code_style=function``: the problem's imports and stub come before the answer)
    prefix_shown: bool = True


class Task(ABC):
    #: what ``dataset.task`` calls it (a task outside the package is named by its dotted class)
    name: str = "task"
    #: strings that end a completion (the backend stops there; extraction cuts there too)
    stop: tuple[str, ...] = ()
    #: problems carry tests a model may be shown (multi-step refinement needs them)
    visible_tests: bool = True

    @classmethod
    def from_config(cls, task_cfg) -> "Task":
        """The task with the options of the ``task:`` section that concern it."""
        return cls()

    @abstractmethod
    def render(self, problem: Problem, tokenizer: Any, *, chat: bool, shots: int) -> Prompt:
        """The prompt for ``problem``: few-shot when ``shots`` > 0, chat-templated when ``chat``."""

    @abstractmethod
    def extract_program(self, prompt: Prompt, completion: str) -> str:
        """The program a completion stands for (prefix + body, cut at the first stop)."""

    @abstractmethod
    def check_program(self, problem: Problem, program: str) -> Program:
        """The complete program the sandbox runs to judge ``program``."""

    @abstractmethod
    def judge(self, problem: Problem, result: ExecResult) -> bool:
        """The verdict, made in the parent process from plain data."""

    def target(self, prompt: Prompt, program: str) -> str:
        """What the student learns to write after ``prompt.text`` (the program minus the
        prefix, and the closing fence); the trainer appends the end-of-sequence token."""
        body = program[len(prompt.prefix):] if program.startswith(prompt.prefix) else program
        if not prompt.prefix_shown:
            body = body.lstrip("\n")
        return body.rstrip() + ("\n```" if prompt.fenced else "")

    # ------------------------------------------------------------------ code tasks: feedback, refinement
    def feedback_tests(self, problem: Problem, *, visible: bool) -> tuple[list[str], str]:
        """(test statements, setup code) that execution feedback runs one by one.

        Code tasks carry them in ``meta``: ``tests`` (hidden), ``visible_tests`` (what may be shown
        to a model at test time) and optionally ``test_setup`` (imports / helpers the tests need).
        A task without tests (GSM) gives none."""
        tests = problem.meta.get("visible_tests" if visible else "tests") or []
        return list(tests), str(problem.meta.get("test_setup") or "")

    def render_refine(self, problem: Problem, attempt: str, feedback: str, tokenizer: Any, *,
                      chat: bool, guidance: str | None = None) -> Prompt:
        """The prompt asking for a corrected program, given a failed ``attempt`` and its ``feedback``
        (PERsD's refinement prompt).  The answer starts like the task's zero-shot answer (same
        prefix), so ``extract_program`` / ``target`` apply unchanged.  ``guidance`` (the PERsD
        teacher's prompt: :data:`REFINE_GUIDANCE`) is said after the request; the student's own
        refinement prompts (``persd_refine`` pairs, ``eval.refine_steps``) go without, as in the
        PersDistill code."""
        base = self.render(problem, tokenizer, chat=False, shots=0)
        request = REFINE_REQUEST + (f" {guidance}" if guidance else "")
        if chat and getattr(tokenizer, "chat_template", None):
            whole = self.refine_prompt_parts(problem, attempt)
            shown = attempt if whole is None else whole[0]
            user = (f"{REFINE_TASK_HEADER}\n{self.describe(problem)}\n\n{REFINE_ATTEMPT_HEADER}\n"
                    f"```python\n{shown.rstrip()}\n```\n\n{REFINE_FEEDBACK_HEADER}\n{feedback.rstrip()}\n\n"
                    f"{request}")
            messages = [{"role": "system", "content": REFINE_INSTRUCTION}, {"role": "user", "content": user}]
            head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            if whole is not None:  # the model writes the whole corrected program
                return dataclasses.replace(whole[1], text=head + "```python\n")
            return Prompt(text=head + "```python\n" + base.prefix, prefix=base.prefix, fenced=True)
        comment = "\n".join("# " + line for line in feedback.rstrip().splitlines())
        text = (f"{attempt.rstrip()}\n\n# The code above is wrong. {REFINE_FEEDBACK_HEADER}\n{comment}\n"
                f"# {request}\n\n"
                f"{base.text}")
        return Prompt(text=text, prefix=base.prefix, fenced=base.fenced)

    def refine_prompt_parts(self, problem: Problem, attempt: str) -> tuple[str, Prompt] | None:
        """For tasks whose chat answers are whole programs written after a hidden prefix: (the
        attempt as shown to the model, a Prompt carrying that prefix).  None: the refinement's
        answer continues ``render``'s prefix, and the attempt is shown as it is."""
        return None

    def answer_feedback(self, problem: Problem, result: Any, *, reveal_answer: bool = False) -> str | None:
        """Training-time feedback made from the checking run alone, for tasks whose only test is
        the weak label (GSM: the value the program returned, and the gold answer only when
        ``reveal_answer``).  None: run the task's test statements instead (code tasks).
        ``result``: an ExecResult or Judged."""
        return None

    def computes_nothing(self, program: str) -> bool:
        """True when ``program`` only states its result (e.g. ``return 42``): a program that passes
        so has guessed, or copied, the answer (tasks whose only test is one value; PERsD drops
        such refinements).  Code tasks: False."""
        return False

    def describe(self, problem: Problem) -> str:
        """The task as a user would state it in a chat message (for refinement prompts)."""
        return problem.question


REFINE_INSTRUCTION = ("You are an expert Python programmer. Fix the code so that it solves the task. "
                      "Return only the complete corrected code.")
REFINE_TASK_HEADER = "Task:"
REFINE_ATTEMPT_HEADER = "This attempt is wrong:"
REFINE_FEEDBACK_HEADER = "Execution feedback:"
REFINE_REQUEST = "Write a corrected version of the code."
#: What the PERsD teacher is told about *how* to correct: the paper's "personalised" refinement
#: keeps the student's own approach where it can.  Our wording of the instruction in PersDistill's
#: teacher prompt (prompts/chatgpt_error_instruction.txt: re-write a significantly wrong code
#: completely, otherwise stay closest to the given code).
REFINE_GUIDANCE = ("If the attempt is badly wrong, rewrite it from scratch; otherwise keep your corrected "
                   "version as close to the attempt as you can.")


def cut_at_stops(text: str, stops: tuple[str, ...] | list[str]) -> str:
    """``text`` up to the earliest of ``stops`` (pure; the backend may run past a stop)."""
    end = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            end = min(end, i)
    return text[:end]


def normalize_program(program: str) -> str:
    """A canonical form for de-duplication: comments and formatting removed."""
    try:
        return ast.unparse(ast.parse(program))
    except (SyntaxError, ValueError):
        return "\n".join(line.rstrip() for line in program.strip().splitlines() if line.strip())
