import os
import subprocess
import sys

import pytest

from codistill.config import ConfigError, validate


def test_defaults_validate(compose):
    rc = validate(compose())
    assert rc.method.name == "ekt" and rc.dataset.name == "gsm_symbolic"
    assert rc.teacher.source == "packaged_gguf"


@pytest.mark.parametrize("override,key", [
    ("train.lr=-1", "train.lr"),
    ("train.epochs=0", "train.epochs"),
    ("sampling.top_p=1.5", "sampling.top_p"),
    ("method.keep=all", "method.keep"),
    ("eval.k=[1,10]", "eval.k"),
    ("dataset.test_seed=1", "dataset.train_seed"),
    ("task.prompt_style=cot", "task.prompt_style"),
    ("task.code_style=diff", "task.code_style"),
    ("trainer.precision=bf17", "trainer.precision"),
])
def test_bad_values_name_the_key(compose, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose(override))


def test_wrong_type_fails_at_composition(compose):
    with pytest.raises(Exception, match="train.epochs|epochs"):
        validate(compose("train.epochs=many"))


def test_cli_rejects_bad_value_before_loading_anything(tmp_path):
    """A bad value fails at validation, before torch (or any model) is imported: a poisoned
    ``torch`` first on the path would turn any earlier import into a different error."""
    poison = tmp_path / "poison" / "torch"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('torch imported before the config was validated')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(poison.parent), *filter(None, [env.get("PYTHONPATH")])])
    p = subprocess.run([sys.executable, "-m", "codistill", "experiment=smoke", "train.lr=-1",
                        f"hydra.run.dir={tmp_path}/run"], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode != 0
    out = p.stderr + p.stdout
    assert "train.lr: must be > 0" in out
    assert "torch imported before" not in out


@pytest.mark.parametrize("overrides,key,msg", [
    (["generation=openai"], "generation.openai.base_url", "URL"),
    (["generation=openai", "generation.openai.base_url=http://127.0.0.1:1/v1", "generation.openai.api_key_env=sk-abc"],
     "generation.openai.api_key_env", "environment variable"),
    (["generation=openai", "generation.openai.base_url=http://x/v1", "generation.openai.max_concurrency=0"],
     "generation.openai.max_concurrency", ">= 1"),
    (["generation.batch_size=big"], "generation.batch_size", "auto"),
    (["generation.batch_size=0"], "generation.batch_size", "auto"),
    (["generation.backend=tgi"], "generation.backend", "not one of"),
])
def test_generation_config_errors(compose, overrides, key, msg):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ".*" + msg):
        validate(compose(*overrides))


def test_generation_backends_compose(compose):
    import importlib.util

    rc = validate(compose("generation=openai", "generation.openai.base_url=http://127.0.0.1:8000/v1"))
    assert rc.generation.backend == "openai" and rc.generation.openai.max_concurrency == 8
    assert validate(compose("generation.batch_size=auto")).generation.batch_size == "auto"
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ConfigError, match=r"generation\.backend.*vllm package"):
            validate(compose("generation=vllm"))
    else:
        assert validate(compose("generation=vllm")).generation.vllm.tensor_parallel_size == 1


def test_torch_threads_follow_omp_num_threads_else_split_the_cores(monkeypatch):
    from codistill.run import compute_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert compute_threads(1) == 1  # two runs sharing a machine: each its share, no oversubscription
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert compute_threads(1) == max(1, os.cpu_count() or 1)
    assert compute_threads(64) == 1
