"""Training at scale: memory estimate, MFU figures, LoRA, QLoRA / FSDP config errors."""

import json

import pytest
import torch

from codistill.config import ConfigError, validate
from codistill.training.memory import GIB, InsufficientMemoryError, check_fits, estimate_training_memory
from codistill.training.speed import flops_per_token, gpu_peak_flops, mfu, model_flops_per_token
from conftest import run_cli

PAIRS = [{"prompt": f"Question: what is {i} plus {i}?\n", "completion": f"def solution():\n    return {i} + {i}\n"}
         for i in range(12)]


# --------------------------------------------------------------------------- memory
def test_memory_estimate_terms():
    est = estimate_training_memory(n_params=100_000_000, n_trainable=100_000_000, weight_bytes=4, n_layers=10,
                                   hidden=512, vocab=32_000, batch=8, seq_len=256, half_activations=True)
    assert est.weights == 400_000_000 and est.gradients == 400_000_000
    assert est.optimizer == 800_000_000  # two fp32 AdamW moments
    tokens = 8 * 256
    assert est.activations == 10 * 34 * 512 * tokens + tokens * 32_000 * 8
    assert est.total == est.weights + est.gradients + est.optimizer + est.activations
    fp32 = estimate_training_memory(n_params=100_000_000, n_trainable=100_000_000, weight_bytes=4, n_layers=10,
                                    hidden=512, vocab=32_000, batch=8, seq_len=256, half_activations=False)
    assert fp32.activations > est.activations
    lora = estimate_training_memory(n_params=100_000_000, n_trainable=1_000_000, weight_bytes=2, n_layers=10,
                                    hidden=512, vocab=32_000, batch=8, seq_len=256, half_activations=True,
                                    gradient_checkpointing=True, extra_bytes=123)
    assert lora.optimizer == 8_000_000 and lora.activations < est.activations and lora.extra == 123
    sharded = estimate_training_memory(n_params=100_000_000, n_trainable=100_000_000, weight_bytes=4, n_layers=10,
                                       hidden=512, vocab=32_000, batch=8, seq_len=256, half_activations=True,
                                       shards=4)
    assert sharded.weights == est.weights // 4 and sharded.activations == est.activations


def test_check_fits_fails_with_the_numbers():
    est = estimate_training_memory(n_params=10 ** 9, n_trainable=10 ** 9, weight_bytes=4, n_layers=24, hidden=2048,
                                   vocab=50_000, batch=8, seq_len=512, half_activations=True)
    check_fits(est, est.total + 1, "test memory")
    with pytest.raises(InsufficientMemoryError) as e:
        check_fits(est, 4 * GIB, "test memory", processes=2)
    msg = str(e.value)
    assert f"{2 * est.total / GIB:.2f} GiB" in msg and "4.00 GiB of test memory" in msg
    assert "train.batch_size" in msg and "x 2 processes" in msg and "optimizer" in msg


def test_check_fits_does_not_count_loaded_weights_twice():
    """On CPU the loaded model is already out of the available RAM: only the rest must fit."""
    est = estimate_training_memory(n_params=5 * 10 ** 8, n_trainable=5 * 10 ** 8, weight_bytes=4, n_layers=24,
                                   hidden=896, vocab=151_936, batch=2, seq_len=384, half_activations=False)
    room = est.total - est.weights + GIB // 10
    check_fits(est, room, "available RAM", resident=est.weights)
    with pytest.raises(InsufficientMemoryError, match="already loaded") as e:
        check_fits(est, room - GIB // 5, "available RAM", resident=est.weights)
    assert f"{(est.total - est.weights) / GIB:.2f} GiB more" in str(e.value)
    with pytest.raises(InsufficientMemoryError):
        check_fits(est, room, "available RAM")  # counted twice, it would not fit


# --------------------------------------------------------------------------- speed figures
def test_flops_and_mfu():
    assert flops_per_token(1_000, 2, 8, 16) == 6_000 + 12 * 2 * 8 * 16
    assert mfu(1000.0, 6e9, 989e12) == pytest.approx(1000 * 6e9 / 989e12)
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and gpu_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_peak_flops("NVIDIA A100-SXM4-40GB") == 312e12 and gpu_peak_flops("NVIDIA L4") == 121e12
    assert gpu_peak_flops("Some Future GPU") is None


def test_model_flops_count_the_matmuls(compose):
    from codistill.models import load_model

    rc = validate(compose("experiment=smoke"))
    model = load_model(rc.student, rc.cache_dir, for_training=True)
    n = sum(p.numel() for p in model.parameters())  # tied embeddings: the output matmul counts
    cfg = model.config
    assert model_flops_per_token(model, 128) == flops_per_token(n, cfg.num_hidden_layers, cfg.hidden_size, 128)


# --------------------------------------------------------------------------- training runs (real Trainer)
def test_lora_trains_only_the_adapters_and_saves_merged_weights(compose, tmp_path):
    from transformers import AutoModelForCausalLM

    from codistill.models import load_model, load_tokenizer
    from codistill.training import merge_lora, train_student

    rc = validate(compose("experiment=smoke", "student.lora.enabled=true", "student.lora.r=4",
                          "student.lora.dropout=0.0", "train.packing=true", "train.lr=1e-2", "train.epochs=2",
                          "train.checkpoint_every_n_epochs=0", "train.max_seq_len=64",
                          "student.lora.target_modules=[q_proj,v_proj]"))
    tok = load_tokenizer(rc.student, rc.cache_dir)
    model = load_model(rc.student, rc.cache_dir, for_training=True)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainable = {k for k, v in model.named_parameters() if v.requires_grad}
    assert trainable and all("lora_" in k for k in trainable)
    m = train_student(model, tok, PAIRS, rc, tmp_path, [])
    assert m["train/steps"] >= 2 and m["train/rows"] < len(PAIRS)  # packed
    assert m["train/trainable_params"] == sum(before[k].numel() for k in trainable)
    assert m["train/tokens_per_s"] > 0 and 0 < m["train/mfu"] < 1 and m["train/memory_estimate_gib"] > 0
    # the training state is released before evaluation: no gradients left on the trained model
    assert all(p.grad is None for p in model.parameters())
    after = dict(model.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k].detach())}
    assert changed and changed <= trainable  # the base weights did not move
    assert any("lora_B" in k for k in changed)
    # merged: a plain transformers model whose weights = base + the adapters' delta
    x = torch.tensor([tok("def solution():").input_ids])
    model.eval()
    with torch.no_grad():
        want = model(input_ids=x).logits
    merged = merge_lora(model)
    assert not any("lora" in k for k, _ in merged.named_parameters())
    merged.save_pretrained(tmp_path / "student")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "student").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=x).logits, want, atol=1e-4, rtol=1e-4)


def test_training_that_cannot_fit_fails_before_the_first_step(compose, tmp_path):
    from codistill.models import load_model, load_tokenizer
    from codistill.training import train_student

    rc = validate(compose("experiment=smoke", "train.batch_size=1000000", "train.max_seq_len=4096"))
    tok = load_tokenizer(rc.student, rc.cache_dir)
    model = load_model(rc.student, rc.cache_dir, for_training=True)
    long_pairs = [{"prompt": "Question: add them.\n", "completion": "x = 1\n" * 2000}]  # a 4096-token row
    with pytest.raises(InsufficientMemoryError, match=r"training needs about [\d.]+ GiB .* available RAM"):
        train_student(model, tok, long_pairs, rc, tmp_path, [])
    assert not (tmp_path / "checkpoints").exists()  # nothing ran


def test_memory_estimate_is_sized_by_the_longest_row_not_max_seq_len(compose):
    """Batches are padded to their longest row: short examples under a long train.max_seq_len
    must not be estimated (and refused) as if every row were max_seq_len long."""
    from codistill.models import load_model, load_tokenizer
    from codistill.training import memory_preflight
    from codistill.training.data import PairDataModule

    rc = validate(compose("experiment=smoke", "train.max_seq_len=4096", "train.batch_size=8"))
    tok = load_tokenizer(rc.student, rc.cache_dir)
    model = load_model(rc.student, rc.cache_dir, for_training=True)
    dm = PairDataModule(PAIRS, tok, batch_size=8, max_len=4096, mask_prompt=True)
    assert 0 < dm.longest < 100
    short = memory_preflight(model, rc, seq_len=dm.longest)
    full = memory_preflight(model, rc)
    assert short["train/memory_estimate_seq_len"] == dm.longest and full["train/memory_estimate_seq_len"] == 4096
    assert short["train/memory_estimate_gib"] < full["train/memory_estimate_gib"] / 10


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU error path")
def test_qlora_on_cpu_is_a_clear_config_error(tmp_path):
    p = run_cli(["experiment=smoke", "student.lora.enabled=true", "student.lora.quantize=4bit", "logger=csv",
                 f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, timeout=300)
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert "student.lora.quantize=4bit" in out and "CUDA" in out
    assert not (tmp_path / "run" / "metrics.json").exists() or json.loads(
        (tmp_path / "run" / "metrics.json").read_text())["status"] != "ok"


def test_fsdp_config_errors(compose):
    with pytest.raises(ConfigError, match="trainer.strategy: fsdp needs GPUs"):
        validate(compose("experiment=smoke", "trainer=fsdp", "trainer.accelerator=cpu"))
    rc = validate(compose("experiment=smoke", "trainer=fsdp"))
    assert rc.trainer.strategy == "fsdp" and rc.trainer.devices == 2
    if not torch.cuda.is_available():
        from codistill.models import check_hardware

        with pytest.raises(ConfigError, match="trainer.strategy=fsdp: FSDP runs on GPUs"):
            check_hardware(rc)


def test_fsdp_wraps_the_model_s_transformer_blocks(compose):
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from codistill.models import load_model
    from codistill.training import block_classes

    rc = validate(compose("experiment=smoke"))
    assert block_classes(load_model(rc.student, rc.cache_dir, for_training=True)) == {LlamaDecoderLayer}


def test_full_finetune_with_packing_and_gradient_checkpointing_learns(compose, tmp_path):
    """The packed path through the real Trainer lowers the loss on the data it sees, with
    activation recomputation on; throughput figures are logged to the loggers."""
    from pytorch_lightning.loggers import CSVLogger

    from codistill.models import load_model, load_tokenizer
    from codistill.training import train_student

    rc = validate(compose("experiment=smoke", "train.packing=true", "train.gradient_checkpointing=true",
                          "train.lr=3e-3", "train.epochs=6", "train.batch_size=2", "train.max_seq_len=96",
                          "train.checkpoint_every_n_epochs=0", "trainer.log_every_n_steps=2"))
    tok = load_tokenizer(rc.student, rc.cache_dir)
    model = load_model(rc.student, rc.cache_dir, for_training=True)
    logger = CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    m = train_student(model, tok, PAIRS, rc, tmp_path, [logger])
    assert model.is_gradient_checkpointing
    assert m["train/steps"] >= 6 and m["train/final_loss"] is not None
    logger.save()
    import csv

    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses[-1] < losses[0]
    assert any(r.get("train/tokens_per_s") for r in rows) and any(r.get("train/mfu") for r in rows)
