"""GSM8K-style problems generated offline by reasoning-gym (``gsm_symbolic``).

Train and test come from different seeds; any test question that also occurs in the
train split is dropped (and replaced), so the splits are disjoint.
"""

from __future__ import annotations

from codistill.tasks.base import Problem
from codistill.tasks.gsm import parse_number


def generate(seed: int, size: int, difficulty: float = 1.0) -> list[Problem]:
    import reasoning_gym

    ds = reasoning_gym.create_dataset("gsm_symbolic", size=size, seed=seed, difficulty=difficulty)
    problems = []
    for i, item in enumerate(ds):
        gold = parse_number(item["metadata"].get("answer_value", item["answer"]))
        if gold is None:
            continue
        problems.append(Problem(id=f"gsm_symbolic/{seed}/{i}", question=item["question"], answer=gold,
                                meta={"solution": item["metadata"].get("answer_cot", "")}))
    return problems


def load_gsm_symbolic(cfg) -> tuple[list[Problem], list[Problem]]:
    train_size = 200 if cfg.train_size is None else cfg.train_size
    test_size = 100 if cfg.test_size is None else cfg.test_size
    train = generate(cfg.train_seed, train_size) if train_size else []
    seen = {p.question for p in train}
    test: list[Problem] = []
    extra = 0
    while len(test) < test_size:
        pool = generate(cfg.test_seed, test_size + extra)
        test = [p for p in pool if p.question not in seen][:test_size]
        if extra > 4 * test_size + 100:
            break
        extra += max(8, test_size // 4)
    return train, test
