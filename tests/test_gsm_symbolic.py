"""gsm_symbolic's train/test split is by reasoning-gym template: no template on both sides.

The template of each problem is recovered here from reasoning-gym itself (the problem id names
the seed and the item index), not from what the loader records, so the test holds the loader
to reasoning-gym's own account of where each problem came from.
"""

import pytest

from codistill.config import ConfigError, validate
from codistill.datasets.gsm_symbolic import all_templates, generate, load_gsm_symbolic, split_templates


def reasoning_gym_template(problem_id: str) -> int:
    """The template reasoning-gym used for the problem ``gsm_symbolic/<seed>/<index>``."""
    import reasoning_gym

    _, seed, index = problem_id.split("/")
    ds = reasoning_gym.create_dataset("gsm_symbolic", size=int(index) + 1, seed=int(seed))
    return ds.task_indices[int(index)]


@pytest.mark.parametrize("overrides", [(), ("experiment=repro_ekt_offline",)], ids=["defaults", "repro_ekt_offline"])
def test_no_template_on_both_sides(compose, overrides):
    cfg = validate(compose(*overrides)).dataset
    train, test = load_gsm_symbolic(cfg)
    assert (len(train), len(test)) == (cfg.train_size, cfg.test_size)
    train_t = {reasoning_gym_template(p.id) for p in train}
    test_t = {reasoning_gym_template(p.id) for p in test}
    assert not train_t & test_t, f"templates on both sides: {sorted(train_t & test_t)}"
    assert {p.meta["template"] for p in train + test} == train_t | test_t  # what the loader records


def test_template_split_is_deterministic_and_partitions():
    ts = all_templates()
    a = split_templates(ts, seed=0, test_fraction=0.3)
    assert a == split_templates(ts, seed=0, test_fraction=0.3)
    assert a != split_templates(ts, seed=1, test_fraction=0.3)
    train, test = a
    assert not set(train) & set(test) and sorted(train + test) == sorted(ts)
    assert len(test) == round(0.3 * len(ts))


def test_unreachable_size_fails_naming_the_key():
    # reasoning-gym's template 52 makes fewer than 200 distinct problems (measured: 192 in 200000 draws)
    with pytest.raises(ValueError, match=r"dataset\.test_size: only \d+ of 1000"):
        generate(2, 1000, [52], side="test")


@pytest.mark.parametrize("value", ["0", "1.0"])
def test_test_template_fraction_is_checked(compose, value):
    with pytest.raises(ConfigError, match=r"dataset\.test_template_fraction"):
        validate(compose(f"dataset.test_template_fraction={value}"))
