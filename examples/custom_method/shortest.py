"""``method=shortest``: EKT that trains on the shortest passing programs of each problem.

A method outside the codistill package, in one file: its config schema (with its checks) and
its class.  It reuses EKT's steps and changes one:

1. The teacher samples ``sampling.n`` programs per training problem, few-shot (as ``ekt``).
2. Each program runs in the sandbox; the passing ones are kept (as ``ekt``).
3. Of a problem's passing programs, the ``keep_shortest`` shortest (in characters) become
   its (problem -> program) training pairs -- the short, direct solutions a small student
   can imitate.
"""

from __future__ import annotations

from dataclasses import dataclass

from codistill.methods.ekt import EKT, EKTConfig
from codistill.plugins import check


@dataclass
class ShortestConfig(EKTConfig):
    name: str = "shortest"
    keep_shortest: int = 1  # passing programs kept per problem, shortest first

    def check(self, key: str) -> None:
        super().check(key)
        check(self.keep_shortest >= 1, f"{key}.keep_shortest", f"must be >= 1, got {self.keep_shortest}")


class Shortest(EKT):
    name = "shortest"
    Config = ShortestConfig

    def select(self, judged):
        passing = sorted((j for j in judged if j.passed), key=lambda j: len(j.program))
        return passing[:self.cfg.keep_shortest]
