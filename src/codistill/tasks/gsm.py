"""GSM-style word problems solved by programs (program-aided language models).

Two prompt styles:
  pal     -- ``def solution(): ... return answer``; the prompt ends with ``def solution():``
             so the entry point is pinned.
  mathqa  -- straight-line assignments ending in ``answer = ...`` (the EKT code's style).

The program runs in the sandbox, which hands back the value as plain data; the verdict
(a numeric comparison with absolute and relative tolerance) is made here, in the parent.
"""

from __future__ import annotations

import ast
import logging
import math
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from codistill.tasks.base import Problem, Prompt, Task, cut_at_stops

if TYPE_CHECKING:
    from codistill.execution import ExecResult, Program

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def parse_number(value: Any) -> float | None:
    """A plain number from a program's value or a gold label; None if it is not one.

    Accepts ints and floats (not bools), and strings such as ``"1,234"``, ``"$5.50"``,
    ``"12%"``.  Pure and total: never raises.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        s = value.strip().replace(",", "").replace("$", "").rstrip("%").strip()
        if _NUMBER.match(s):
            return float(s)
    return None


def answers_match(value: Any, gold: Any, *, abs_tol: float = 1e-4, rel_tol: float = 1e-6) -> bool:
    """True when ``value`` equals ``gold`` numerically within ``max(abs_tol, rel_tol*|gold|)``."""
    v, g = parse_number(value), parse_number(gold)
    if v is None or g is None:
        return False
    return math.isclose(v, g, rel_tol=rel_tol, abs_tol=abs_tol)


def trim_to_parsable(program: str, keep: int) -> str:
    """Drop trailing lines (chatter after the code) until the program parses.

    ``keep`` characters (the prefix) are never removed.  Returns the input unchanged when
    no shorter version parses, so the sandbox reports the real syntax error.
    """
    try:
        ast.parse(program)
        return program
    except SyntaxError:
        pass
    lines = program.splitlines()
    for end in range(len(lines) - 1, 0, -1):
        candidate = "\n".join(lines[:end])
        if len(candidate) <= keep:
            break
        try:
            ast.parse(candidate)
            return candidate
        except SyntaxError:
            continue
    return program


def load_exemplars(style: str, path: str | None = None) -> dict:
    """The instruction and few-shot exemplars for ``style`` (a YAML file; ours by default)."""
    if path:
        text = Path(path).read_text()
        source = path
    else:
        ref = resources.files("codistill.tasks") / "prompts" / f"gsm_{style}.yaml"
        text = ref.read_text()
        source = str(ref)
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or "exemplars" not in data:
        raise ValueError(f"{source}: expected keys 'instruction' and 'exemplars'")
    for i, ex in enumerate(data["exemplars"]):
        if not {"question", "program"} <= set(ex):
            raise ValueError(f"{source}: exemplar {i} needs 'question' and 'program'")
    return data


_TRAILING_INSTRUCTION = re.compile(r"\s*Give the result as your final answer\.\s*Do not include units\.\s*$")


def clean_question(q: str) -> str:
    """The question without reasoning-gym's trailing answer-format instruction."""
    return _TRAILING_INSTRUCTION.sub("", q).strip()


class GSMTask(Task):
    name = "gsm"
    stop = ("```", "\n# Question:", "\n\n\n")
    visible_tests = False  # the gold answer is the only test

    @classmethod
    def from_config(cls, task_cfg) -> "GSMTask":
        return cls(task_cfg.prompt_style, abs_tol=task_cfg.abs_tol, rel_tol=task_cfg.rel_tol,
                   exemplars_file=task_cfg.exemplars_file)

    def __init__(self, prompt_style: str = "pal", *, abs_tol: float = 1e-4, rel_tol: float = 1e-6,
                 exemplars_file: str | None = None) -> None:
        if prompt_style not in ("pal", "mathqa"):
            raise ValueError(f"task.prompt_style: {prompt_style!r} is not one of ['pal', 'mathqa'] for gsm")
        self.style = prompt_style
        self.abs_tol, self.rel_tol = abs_tol, rel_tol
        self.prompts = load_exemplars(prompt_style, exemplars_file)
        self.entry = "solution" if prompt_style == "pal" else "answer"
        self.code_prefix = "def solution():" if prompt_style == "pal" else ""

    # ------------------------------------------------------------------ prompts
    def render(self, problem: Problem, tokenizer: Any, *, chat: bool, shots: int) -> Prompt:
        shots_list = self.prompts["exemplars"][:shots]
        question = clean_question(problem.question)
        if chat and getattr(tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": self.prompts["instruction"]}]
            for ex in shots_list:
                messages.append({"role": "user", "content": ex["question"].strip()})
                messages.append({"role": "assistant", "content": f"```python\n{ex['program'].rstrip()}\n```"})
            messages.append({"role": "user", "content": question})
            head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return Prompt(text=head + "```python\n" + self.code_prefix, prefix=self.code_prefix, fenced=True)
        if chat:
            log.warning("the tokenizer has no chat template; using a plain completion prompt")
        parts = [f"# {self.prompts['instruction']}\n"]
        for ex in shots_list:
            parts.append(f"# Question: {ex['question'].strip()}\n{ex['program'].rstrip()}\n")
        parts.append(f"# Question: {question}\n{self.code_prefix}")
        return Prompt(text="\n".join(parts), prefix=self.code_prefix, fenced=False)

    # ------------------------------------------------------------------ programs
    def extract_program(self, prompt: Prompt, completion: str) -> str:
        program = prompt.prefix + cut_at_stops(completion, self.stop)
        return trim_to_parsable(program.rstrip(), keep=len(prompt.prefix)) + "\n"

    def check_program(self, problem: Problem, program: str) -> Program:
        from codistill.execution import Program

        return Program(source=program, entry=self.entry)

    def judge(self, problem: Problem, result: ExecResult) -> bool:
        return bool(result.passed) and answers_match(result.value, problem.answer,
                                                     abs_tol=self.abs_tol, rel_tol=self.rel_tol)

    # ------------------------------------------------------------------ feedback (PERsD on GSM)
    def answer_feedback(self, problem: Problem, result: Any, *, reveal_answer: bool = False) -> str | None:
        """The GSM analogue of a failed unit test: what the program returned, or the exception it
        raised (pure).  The gold answer is the only test, so it is named only with
        ``reveal_answer`` (``method.reveal_answer``): shown it, a teacher can pass the filter by
        returning that number without solving the problem."""
        if getattr(result, "passed", False) and result.status == "passed" and self.judge(problem, result):
            return None
        if result.status != "passed":
            return f"The program raised {result.error or result.status}"
        call = "solution()" if self.style == "pal" else "answer"
        if not reveal_answer:
            return f"Wrong answer: {call} returned {result.value!r}, which is not the correct answer."
        gold = parse_number(problem.answer)
        expected = (f"{int(gold)}" if gold is not None and gold.is_integer() else f"{gold:g}") if gold is not None \
            else repr(problem.answer)
        return f"Wrong answer: {call} returned {result.value!r}\nExpected: {expected}"

    def computes_nothing(self, program: str) -> bool:
        """True when the program's statements only bind or return literals (``return 42``,
        ``x = 42; return x``, ``answer = 42``): it states a number instead of computing it from
        the problem (pure).  Its entry -- ``solution``'s body (pal) or the module (mathqa) -- may
        hold docstrings, ``pass``, and assignments / a return of a number, a string, a name or
        a signed number; anything else (an operation, a call, a loop) counts as computing.  A
        program that does not parse, or has no ``solution`` (pal), is not judged here."""
        try:
            tree = ast.parse(program)
        except (SyntaxError, ValueError):
            return False
        body = tree.body
        if self.style == "pal":
            fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "solution"), None)
            if fn is None:
                return False
            body = fn.body

        def literal(e: ast.expr | None) -> bool:
            if isinstance(e, ast.UnaryOp) and isinstance(e.op, (ast.USub, ast.UAdd)):
                e = e.operand
            return e is None or isinstance(e, (ast.Constant, ast.Name))

        for st in body:
            if isinstance(st, ast.Pass) or (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant)):
                continue
            if isinstance(st, (ast.Assign, ast.AnnAssign, ast.Return)) and literal(st.value):
                continue
            return False
        return True
