"""``method=none``: the base student, evaluated without any training (every table's first row)."""

from codistill.methods.base import Method, MethodResult, RunContext


class NoTraining(Method):
    def build(self, ctx: RunContext) -> MethodResult:
        return MethodResult(None, {"data/n_kept": 0})
