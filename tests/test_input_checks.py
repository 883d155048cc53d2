"""Bad input fails naming what is wrong (issue 15.8): non-finite config values, a diverging
loss, an empty data file."""

from __future__ import annotations

import json
import re

import pytest

from codistill.config import ConfigError, validate

PAIRS = [{"prompt": f"Question: what is {i} plus {i}?\n", "completion": f"def solution():\n    return {i} + {i}\n"}
         for i in range(8)]


@pytest.mark.parametrize("overrides, key", [(["train.lr=inf"], "train.lr"), (["train.grad_clip=inf"], "train.grad_clip"),
                                            (["task.timeout_s=-inf"], "task.timeout_s"),
                                            (["sampling.top_p=nan"], "sampling.top_p"),
                                            (["eval.temperature=inf"], "eval.temperature"),
                                            (["method=kd", "method.temperature=inf"], "method.temperature")])
def test_non_finite_config_values_are_rejected_naming_the_key(compose, overrides, key):
    import re

    with pytest.raises(ConfigError, match="^" + re.escape(f"{key}: must be a finite number")):
        validate(compose("experiment=smoke", *overrides))


def test_a_diverging_loss_stops_training_naming_the_keys_and_the_step(compose, tmp_path):
    from codistill.models import load_model, load_tokenizer
    from codistill.training import train_student
    from codistill.training.module import NonFiniteLossError

    # finite but absurd: the first AdamW step throws the weights to ~1e30, the next loss is not finite
    rc = validate(compose("experiment=smoke", "train.lr=1e30", "train.batch_size=2", "train.epochs=1",
                          "train.checkpoint_every_n_epochs=0", "train.max_seq_len=64"))
    tok = load_tokenizer(rc.student, rc.cache_dir)
    model = load_model(rc.student, rc.cache_dir, for_training=True)
    with pytest.raises(NonFiniteLossError) as err:
        train_student(model, tok, PAIRS, rc, tmp_path, [])
    msg = str(err.value)
    assert re.search(r"at step \d+ ", msg) and "train.lr=1e+30" in msg and "train.grad_clip" in msg, msg


@pytest.mark.parametrize("dataset, side", [("gsm8k", "train"), ("gsm8k", "test"), ("mbpp", "train"),
                                           ("code_alpaca", "train")])
def test_an_empty_data_file_is_an_error_naming_it(compose, tmp_path, dataset, side):
    from codistill.datasets import load_problems
    from codistill.datasets.gsm8k import DataFileError

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")  # blank lines only: no record
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"}) + "\n")
    files = {"train": empty, "test": good if dataset == "gsm8k" else empty}
    if side == "test":
        files = {"train": good, "test": empty}
    over = [f"dataset={dataset}", f"dataset.train_file={files['train']}", f"dataset.test_file={files['test']}",
            "dataset.train_size=null", "dataset.test_size=null"]
    if dataset == "code_alpaca":
        over.remove(f"dataset.test_file={files['test']}")
        over.append("dataset.test_size=1")
    rc = validate(compose("experiment=smoke", *over))
    with pytest.raises(DataFileError, match=rf"dataset\.{side}_file: {empty} holds no records"):
        load_problems(rc.dataset)
