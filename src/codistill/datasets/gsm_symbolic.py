"""GSM8K-style problems generated offline by reasoning-gym (``gsm_symbolic``).

reasoning-gym builds every problem from one of a few dozen templates (its task index:
the same story with other names and numbers), so splitting by question text leaks: a test
problem can be a renamed, renumbered copy of a training problem.  The split is therefore
by template: the templates are shuffled with ``dataset.template_seed`` and the first
``dataset.test_template_fraction`` of them are the test side's, the rest the train side's.
Each side then draws problems from reasoning-gym with its own seed (``train_seed``,
``test_seed``) and keeps only those of its own templates, so no template is on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random

from codistill.config import DatasetConfig
from codistill.datasets.base import Dataset
from codistill.plugins import check
from codistill.tasks.base import Problem
from codistill.tasks.gsm import parse_number

#: draws allowed per requested problem before a size counts as unreachable (a side with a
#: fraction f of the templates keeps about f of the draws)
MAX_DRAWS_PER_PROBLEM = 200


def all_templates() -> list[int]:
    """reasoning-gym's usable gsm_symbolic templates (its ``tasks_ok`` task indices), sorted."""
    from reasoning_gym.arithmetic.gsm_symbolic import gsm_symbolic as rg

    return sorted(rg.tasks_ok)


def split_templates(templates: list[int], seed: int, test_fraction: float) -> tuple[list[int], list[int]]:
    """(train templates, test templates): disjoint, together ``templates``, decided by ``seed``
    alone (pure).  The test side gets round(``test_fraction`` * len) templates, at least one
    and leaving at least one for training."""
    shuffled = sorted(templates)
    Random(seed).shuffle(shuffled)
    n_test = min(max(1, round(test_fraction * len(shuffled))), len(shuffled) - 1)
    return sorted(shuffled[n_test:]), sorted(shuffled[:n_test])


def generate(seed: int, size: int, templates: list[int], *, side: str, difficulty: float = 1.0) -> list[Problem]:
    """``size`` distinct problems drawn with ``seed``, each from one of ``templates``.

    Raises ValueError naming ``dataset.<side>_size`` when they cannot be found within
    :data:`MAX_DRAWS_PER_PROBLEM` draws per problem."""
    import reasoning_gym

    if size == 0:
        return []
    allowed = set(templates)
    limit = MAX_DRAWS_PER_PROBLEM * size
    # reasoning-gym picks item i's template as the i-th of Random(seed).choices(...): a prefix of
    # a larger dataset is the smaller one, and items are made only when indexed, so one large
    # virtual dataset costs nothing beyond the problems kept
    ds = reasoning_gym.create_dataset("gsm_symbolic", size=limit, seed=seed, difficulty=difficulty)
    task_of = getattr(ds, "task_indices", None)
    if task_of is None:
        raise RuntimeError("dataset.name=gsm_symbolic: this reasoning-gym has no per-item template index "
                           "(GSMSymbolicDataset.task_indices); the template split needs it")
    problems: list[Problem] = []
    seen: set[str] = set()
    for i in range(limit):
        if task_of[i] not in allowed:
            continue
        item = ds[i]
        gold = parse_number(item["metadata"].get("answer_value", item["answer"]))
        if gold is None or item["question"] in seen:
            continue
        seen.add(item["question"])
        problems.append(Problem(id=f"gsm_symbolic/{seed}/{i}", question=item["question"], answer=gold,
                                meta={"solution": item["metadata"].get("answer_cot", ""), "template": task_of[i]}))
        if len(problems) == size:
            return problems
    raise ValueError(f"dataset.{side}_size: only {len(problems)} of {size} distinct gsm_symbolic problems found "
                     f"in {limit} draws from the {side} side's {len(templates)} templates; lower the size or "
                     f"change dataset.test_template_fraction")


def load_gsm_symbolic(cfg) -> tuple[list[Problem], list[Problem]]:
    train_size = 200 if cfg.train_size is None else cfg.train_size
    test_size = 100 if cfg.test_size is None else cfg.test_size
    train_t, test_t = split_templates(all_templates(), cfg.template_seed, cfg.test_template_fraction)
    train = generate(cfg.train_seed, train_size, train_t, side="train")
    test = generate(cfg.test_seed, test_size, test_t, side="test")
    return train, test


def split_counts(cfg, train: list[Problem], test: list[Problem]) -> dict:
    """The split's figures for metrics.json: ``data/split`` (a line), the templates each side
    may draw from, and ``data/shared_templates``: templates the kept problems of both sides use
    (0 by construction; recorded so a report can show it)."""
    train_t, test_t = split_templates(all_templates(), cfg.template_seed, cfg.test_template_fraction)
    used = {p.meta.get("template") for p in train} & {p.meta.get("template") for p in test}
    return {"data/split": f"templates: train {len(train_t)}, test {len(test_t)}, disjoint "
                          f"(template_seed={cfg.template_seed})",
            "data/train_templates": len(train_t), "data/test_templates": len(test_t),
            "data/shared_templates": len(used - {None})}


@dataclass
class GSMSymbolicConfig(DatasetConfig):
    # train and test come from disjoint sets of reasoning-gym's templates, split by this seed;
    # the test side gets this fraction of the templates
    template_seed: int = 0
    test_template_fraction: float = 0.3

    def check(self, key: str) -> None:
        super().check(key)
        check(self.train_seed != self.test_seed, f"{key}.train_seed",
              "train and test seeds must differ so the splits are disjoint")
        check(0.0 < self.test_template_fraction < 1.0, f"{key}.test_template_fraction",
              f"must be in (0, 1) (both sides need templates), got {self.test_template_fraction}")


class GSMSymbolic(Dataset):
    """``dataset=gsm_symbolic``: GSM8K-style problems made offline by reasoning-gym."""

    Config = GSMSymbolicConfig

    def load(self):
        return load_gsm_symbolic(self.cfg)

    def describe(self, train, test) -> dict:
        return {} if train is None else split_counts(self.cfg, train, test)
