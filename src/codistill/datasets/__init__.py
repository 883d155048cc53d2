"""Dataset loaders: each returns the train and test problems for a config."""

from __future__ import annotations

from codistill.tasks.base import Problem


def load_problems(cfg) -> tuple[list[Problem], list[Problem]]:
    """(train, test) problems for ``cfg`` (a validated DatasetConfig)."""
    if cfg.name == "gsm8k":
        from codistill.datasets.gsm8k import load_gsm8k

        return load_gsm8k(cfg)
    if cfg.name == "gsm_symbolic":
        from codistill.datasets.gsm_symbolic import load_gsm_symbolic

        return load_gsm_symbolic(cfg)
    if cfg.name == "humaneval":
        from codistill.datasets.humaneval import load_humaneval

        return load_humaneval(cfg)
    raise ValueError(f"dataset.name: no loader for {cfg.name!r} (known: gsm8k, gsm_symbolic, humaneval)")
