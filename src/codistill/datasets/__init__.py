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
    if cfg.name == "mbpp":
        from codistill.datasets.mbpp import load_mbpp

        return load_mbpp(cfg)
    if cfg.name == "code_alpaca":
        from codistill.datasets.code_alpaca import load_code_alpaca

        return load_code_alpaca(cfg)
    if cfg.name in ("humaneval_plus", "mbpp_plus"):
        from codistill.datasets.evalplus import load_evalplus

        return load_evalplus(cfg)
    raise ValueError(f"dataset.name: no loader for {cfg.name!r} "
                     "(known: gsm8k, gsm_symbolic, humaneval, mbpp, code_alpaca, humaneval_plus, mbpp_plus)")


def prepare_problems(ctx, metrics: dict) -> tuple[list[Problem], list[Problem]]:
    """The step after loading for datasets that need a model to finish their problems
    (code_alpaca: the teacher proposes test inputs).  Updates ``ctx.train``/``ctx.test`` and
    ``metrics`` in place and returns (train, test); other datasets pass through untouched."""
    if ctx.cfg.dataset.name == "code_alpaca":
        from codistill.datasets.code_alpaca import prepare

        metrics.update(prepare(ctx))
        metrics.update({"data/n_train_problems": len(ctx.train), "data/n_test_problems": len(ctx.test)})
    return ctx.train, ctx.test
