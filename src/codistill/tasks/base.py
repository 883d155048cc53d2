"""What every task provides: prompts, program extraction, the checking program, the verdict."""

from __future__ import annotations

import ast
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


class Task(ABC):
    name: str = "task"
    #: strings that end a completion (the backend stops there; extraction cuts there too)
    stop: tuple[str, ...] = ()

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
        return body.rstrip() + ("\n```" if prompt.fenced else "")


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
