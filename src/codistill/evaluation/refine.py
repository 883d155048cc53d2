"""Multi-step inference at evaluation (``eval.refine_steps``), as in the PERsD paper.

After the first attempt (step 0), each attempt is run against the problem's VISIBLE tests
only (HumanEval: its docstring examples).  An attempt that fails them is refined by the
student itself, prompted with the task, the attempt and that feedback (``Task.render_refine``,
the prompt ``persd_refine`` trains on); an attempt that passes them, or a problem without
visible tests, is kept as it is.  The hidden tests judge every step's programs but never
decide what is refined, and their results are never shown to the model.
"""

from __future__ import annotations

import dataclasses

from codistill.rollout import roll
from codistill.tasks.base import Problem, Task
from codistill.tasks.feedback import collect_feedback
from codistill.tasks.judge import Judged


@dataclasses.dataclass
class RefineStep:
    """The programs after one refinement step (per problem, per sample) and what was refined."""

    judged: list[list[Judged]]
    refined: list[tuple[int, int]]  # (problem index, sample index) refined at this step
    feedback: dict[tuple[int, int], str]


def refine_steps(backend, tokenizer, task: Task, problems: list[Problem], judged: list[list[Judged]],
                 sampling, *, steps: int, chat: bool, seed: int, model_id: str | None, cache_root: str | None,
                 timeout_s: float, memory_mb: int) -> list[RefineStep]:
    """``steps`` rounds of visible-test feedback -> self-refinement, starting from ``judged``.

    Each (problem, sample) is its own chain; a refinement is one completion drawn with
    ``sampling`` (n=1), independently for every chain even where two chains' refinement prompts
    are identical (the same failed program): :func:`codistill.generation.generate_each`, not the
    prompt-de-duplicating ``generate``, so pass@k over the chains stays unbiased."""
    one = dataclasses.replace(sampling, n=1)
    current, out = judged, []
    for step in range(1, steps + 1):
        where = [(i, k) for i, js in enumerate(current) for k in range(len(js))]
        fbs = collect_feedback(task, [problems[i] for i, _ in where], [current[i][k].program for i, k in where],
                               visible=True, timeout_s=timeout_s, memory_mb=memory_mb)
        todo = [(ik, fb) for ik, fb in zip(where, fbs) if fb]
        nxt = [list(js) for js in current]
        if todo:
            prompts = [task.render_refine(problems[i], current[i][k].program, fb, tokenizer, chat=chat)
                       for (i, k), fb in todo]
            new = roll(backend, prompts, one, seed=seed + step, model_id=model_id, cache_root=cache_root, each=True,
                       task=task, problems=[problems[i] for (i, _), _ in todo], timeout_s=timeout_s,
                       memory_mb=memory_mb).judged
            for ((i, k), _), js in zip(todo, new):
                nxt[i][k] = js[0]
        out.append(RefineStep(judged=nxt, refined=[ik for ik, _ in todo], feedback=dict(todo)))
        current = nxt
    return out
