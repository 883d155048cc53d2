"""Plugins: every option of every config group composes and validates; a method outside the
package (examples/custom_method) is one .py and one .yaml, found through Hydra's search path,
validated like the built-in ones and run in a sweep beside them."""

import json
import os
from importlib.util import find_spec
from pathlib import Path

import pytest

from conftest import CONF, ROOT, run_cli
from codistill.config import ConfigError, validate

EXAMPLE = ROOT / "examples" / "custom_method"
SEARCHPATH = f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]"
API = "generation.openai.base_url=http://127.0.0.1:1/v1"  # validation only: nothing is requested

# options that need a setting of their own to validate (an API server's URL)
NEEDS = {("model@teacher", "openai-compatible"): [API], ("model@student", "openai-compatible"): [API],
         ("generation", "openai"): [API]}
# options that need a package this machine may not have: they must then fail naming it
PACKAGES = {("generation", "vllm"): "vllm", ("logger", "tensorboard"): "tensorboard", ("logger", "mlflow"): "mlflow"}


def _options(conf_dir, group):
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml") if not p.stem.startswith("_"))


def _cases():
    groups = {"model@teacher": "model", "model@student": "model", "method": "method", "dataset": "dataset",
              "dataset@eval_dataset": "dataset", "generation": "generation", "trainer": "trainer",
              "logger": "logger", "experiment": "experiment"}
    cases = [(key, opt, []) for key, group in groups.items() for opt in _options(CONF, group)]
    cases += [("method", opt, [SEARCHPATH]) for opt in _options(EXAMPLE / "conf", "method")]
    return cases


def test_every_group_is_covered():
    """Each folder of conf/ (but hydra/, Hydra's own) is a group the next test walks."""
    folders = {p.name for p in CONF.iterdir() if p.is_dir()} - {"hydra"}
    assert folders == {"model", "method", "dataset", "generation", "trainer", "logger", "experiment"}
    assert len(_cases()) > 40


@pytest.mark.parametrize("key,option,extra", _cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_option_composes_and_validates(compose, monkeypatch, key, option, extra):
    monkeypatch.syspath_prepend(str(EXAMPLE))  # the example method's module, as PYTHONPATH would
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")  # the PERsD paper's API teacher
    overrides = [*extra, f"{key}={option}", *NEEDS.get((key.split("=")[0], option), [])]
    pkg = PACKAGES.get((key, option))
    if pkg and find_spec(pkg) is None:
        with pytest.raises(ConfigError, match=pkg):
            validate(compose(*overrides))
        return
    rc = validate(compose(*overrides))
    if key == "method":  # the schema came from the class the YAML names
        from codistill.config import MethodConfig
        from codistill.plugins import schema_of

        assert type(rc.method) is schema_of(rc.method._target_, "method._target_", MethodConfig)


def test_plugin_schema_checks_run_before_anything_loads(compose, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    rc = validate(compose(SEARCHPATH, "method=shortest", "method.keep_shortest=2"))
    assert (rc.method.name, rc.method.keep_shortest, type(rc.method).__name__) == ("shortest", 2, "ShortestConfig")
    with pytest.raises(ConfigError, match=r"method\.keep_shortest: must be >= 1"):
        validate(compose(SEARCHPATH, "method=shortest", "method.keep_shortest=0"))
    with pytest.raises(ConfigError, match=r"method\.keep_shortst"):  # a typo names the key
        validate(compose(SEARCHPATH, "method=shortest", "+method.keep_shortst=2"))


def test_a_target_that_does_not_import_names_the_key(compose):
    with pytest.raises(ConfigError, match=r"method\._target_: cannot import 'no_such_pkg.mod'.*PYTHONPATH"):
        validate(compose("method._target_=no_such_pkg.mod.Method"))
    with pytest.raises(ConfigError, match=r"method\._target_: module 'codistill.methods.ekt' has no 'Nope'"):
        validate(compose("method._target_=codistill.methods.ekt.Nope"))
    with pytest.raises(ConfigError, match=r"logger\._target_"):
        validate(compose("logger._target_=nothing"))


def test_custom_method_runs_in_a_sweep_beside_ekt(tmp_path):
    """The worked example as its README runs it: ``-m experiment=smoke method=ekt,shortest``."""
    env = {"PYTHONPATH": os.pathsep.join([str(EXAMPLE), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "CODISTILL_CACHE": str(tmp_path / "cache")}
    p = run_cli(["-m", "experiment=smoke", "method=ekt,shortest", SEARCHPATH, "logger=csv",
                 "eval.baseline=false", "eval.n_samples=0", "eval.k=[1]"], cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    ms = {m["method"]: m for m in (json.loads(f.read_text()) for f in tmp_path.glob("multirun/smoke/*/*/metrics.json"))}
    assert set(ms) == {"ekt", "shortest"}
    assert all(m["status"] == "ok" and "eval/pass@1" in m for m in ms.values())
    # the same teacher samples (the generation cache is shared): shortest keeps at most ekt's problems
    assert ms["shortest"]["data/n_samples"] == ms["ekt"]["data/n_samples"]


def test_dataset_options_live_with_their_loader_and_name_the_key(compose):
    """A dataset's own options are its Config's (codistill.datasets.gsm_symbolic.GSMSymbolicConfig):
    another dataset has no such key, and a bad value or an unknown task names the key."""
    rc = validate(compose("dataset=gsm_symbolic", "dataset.template_seed=3"))
    assert (type(rc.dataset).__name__, rc.dataset.template_seed) == ("GSMSymbolicConfig", 3)
    with pytest.raises(ConfigError, match=r"dataset\.template_seed"):
        validate(compose("dataset=gsm8k", "+dataset.template_seed=3"))
    with pytest.raises(ConfigError, match=r"eval_dataset\.test_template_fraction: must be in \(0, 1\)"):
        validate(compose("dataset@eval_dataset=gsm_symbolic", "eval_dataset.test_template_fraction=1.5"))
    with pytest.raises(ConfigError, match=r"dataset\.task: no task named 'gsm9'.*known: gsm, humaneval"):
        validate(compose("dataset.task=gsm9"))


def test_a_logger_is_a_lightning_logger_named_by_target(compose, tmp_path):
    """logger=csv is Lightning's CSVLogger itself (its YAML's keys are its arguments; the run
    gives it its directory); a logger whose package is missing fails validation naming it."""
    from pytorch_lightning.loggers import CSVLogger

    from codistill.tracking import make_loggers

    rc = validate(compose("experiment=smoke", "logger=csv"))
    [lg] = make_loggers(rc, tmp_path, {}, name="job", group="g")
    assert type(lg) is CSVLogger and Path(lg.log_dir) == tmp_path / "csv"
    assert make_loggers(validate(compose("experiment=smoke", "logger=wandb", "logger.mode=disabled")),
                        tmp_path, {}, name="job", group="g") == []
    with pytest.raises(ConfigError, match=r"logger\._target_: .* needs the 'no_such_package' package"):
        validate(compose("logger=csv", "+logger._requires_=[no_such_package]"))


def test_rollout_renders_generates_cached_releases_and_judges(compose, tmp_path):
    """RunContext.rollout, the one path every stage samples through: the tiny teacher's samples
    are judged in the sandbox (one verdict per sample), its weights are released before judging,
    and a second rollout is served from the generation cache with the same completions."""
    from codistill.datasets import load_problems
    from codistill.methods.base import RunContext
    from codistill.tasks import build_task

    rc = validate(compose("experiment=smoke", "sampling.n=2"))
    train, _ = load_problems(rc.dataset)
    ctx = RunContext(cfg=rc, run_dir=tmp_path, task=build_task(rc.dataset.task, rc.task), train=train[:3], test=[],
                     cache_dir=str(tmp_path / "cache"))
    first = ctx.rollout("teacher", ctx.train, shots=1)
    assert [len(js) for js in first.judged] == [2, 2, 2] == [len(c) for c in first.completions]
    assert all(j.status for js in first.judged for j in js)  # every sample ran in the sandbox
    assert first.prompts[0].text.count("def solution():") >= 2  # one exemplar + the problem's stub
    assert not [k for k in ctx._models if k[0] == "teacher"]  # released before judging
    again = ctx.rollout("teacher", ctx.train, shots=1)
    assert again.stats["cached_prompts"] == 3 and again.completions == first.completions
