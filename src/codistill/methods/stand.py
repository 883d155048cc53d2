"""``method=stand``: standard distillation (the baseline of the PERsD paper).

The teacher writes zero-shot solutions to the training problems (no exemplars in its
prompt; its chat setting as configured), ``sampling.n`` per problem; they are executed and
filtered exactly as in ``ekt`` (weak label for GSM, the tests for code tasks), and the
student is fine-tuned on the kept (problem -> solution) pairs.  The only difference from
``ekt`` is the teacher's prompt: zero-shot instead of ``task.num_shots`` exemplars.
"""

from __future__ import annotations

from codistill.methods.base import RunContext
from codistill.methods.ekt import EKT


class StanD(EKT):
    def teacher_shots(self, ctx: RunContext) -> int:
        return 0
