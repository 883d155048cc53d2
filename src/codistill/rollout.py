"""One rollout service: render -> generate (cached, sharded across ranks) -> release -> judge.

Every stage that samples a model and checks what it wrote goes through :func:`roll` (the
methods through :meth:`codistill.methods.base.RunContext.rollout`, which adds the role's
backend, its prompts and the release of its memory): the teacher's samples of ekt/stand/kd,
PERsD's student attempts and teacher refinements, expert iteration's rounds, code_alpaca's
test inputs, the student's evaluation and its refinement steps.  The backend contract is
:class:`codistill.generation.Backend`; the cache and the sharding are
:func:`codistill.generation.generate`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Rollout:
    """What one rollout drew: ``prompts`` (Prompt objects, or plain strings), ``completions``
    (``sampling.n`` per prompt), ``judged`` (the sandbox's verdicts, per prompt; None when not
    judged), the generation ``stats`` and the ``tokenizer`` that rendered the prompts."""

    prompts: list
    completions: list[list[str]]
    judged: list | None
    stats: dict
    tokenizer: Any = None


def roll(backend, prompts: list, sampling, *, seed: int, model_id: str | None, cache_root, task=None,
         problems: list | None = None, timeout_s: float = 5.0, memory_mb: int = 1024, each: bool = False,
         release: Callable[[], None] | None = None, tokenizer=None) -> Rollout:
    """Generate for ``prompts`` (through the generation cache), call ``release`` (free the model
    before the sandbox runs), and judge each completion against its problem with ``task`` (no
    ``task``: not judged).  ``each``: one independent completion per entry, identical prompts
    included (:func:`codistill.generation.generate_each`: refinement chains)."""
    from codistill.generation import generate, generate_each

    texts = [p if isinstance(p, str) else p.text for p in prompts]
    if each:
        flat, stats = generate_each(backend, texts, sampling, seed=seed, model_id=model_id, cache_root=cache_root)
        comps = [[c] for c in flat]
    else:
        comps, stats = generate(backend, texts, sampling, seed=seed, model_id=model_id, cache_root=cache_root)
    if release is not None:
        release()
    judged = None
    if task is not None:
        from codistill.tasks.judge import judge_completions

        judged = judge_completions(task, problems, prompts, comps, timeout_s=timeout_s, memory_mb=memory_mb)
    return Rollout(prompts, comps, judged, stats, tokenizer)
