"""``method=none``: the base student, evaluated without any training (every table's first row)."""

from dataclasses import dataclass

from codistill.config import MethodConfig
from codistill.methods.base import Method, MethodResult, RunContext


@dataclass
class NoneMethodConfig(MethodConfig):
    name: str = "none"


class NoTraining(Method):
    name = "none"
    Config = NoneMethodConfig

    def build(self, ctx: RunContext) -> MethodResult:
        return MethodResult(pairs=None, metrics={"data/n_kept": 0})
