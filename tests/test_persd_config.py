"""The PERsD configs compose, and bad values fail before any model loads, naming the key."""

import pytest

from codistill.config import ConfigError, validate


@pytest.mark.parametrize("method", ["persd", "persd_refine", "persd_combined"])
def test_persd_methods_compose_on_humaneval(compose, method):
    rc = validate(compose(f"method={method}", "dataset=humaneval", "eval.refine_steps=2"))
    assert rc.method.name == method and rc.method.attempt_temperature == 0.3 and rc.method.keep == "unique"
    assert rc.eval.refine_steps == 2


@pytest.mark.parametrize("overrides, key", [
    (["method=ekt", "dataset=gsm_symbolic", "eval.refine_steps=1"], "eval.refine_steps"),
    (["method=persd", "dataset=humaneval", "eval.refine_steps=-1"], "eval.refine_steps"),
    (["method=persd_refine", "dataset=humaneval", "method.keep=all"], "method.keep"),
    (["method=persd_combined", "dataset=humaneval", "method.attempt_temperature=-1"], "method.attempt_temperature"),
])
def test_bad_values_name_the_key(compose, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose(*overrides))


def test_persd_composes_on_gsm(compose):
    """PERsD on GSM-style problems: the weak label is the test, so the same sweep can compare it."""
    rc = validate(compose("method=persd", "dataset=gsm_symbolic"))
    assert rc.method.name == "persd" and rc.dataset.task == "gsm"
