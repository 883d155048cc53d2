"""method=kd on tiny models: tokenizer compatibility, the training set, online vs cached teacher
logits, the cached store's reuse and resume, a real Lightning run that lowers the KD loss."""

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli

from codistill.training.vocab import TokenizerMismatch, shared_vocab_size

TINY_TOK = Path(__file__).resolve().parents[1] / "src" / "codistill" / "assets" / "tiny_tokenizer"


def _load_tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def _edited_tokenizer(tmp_path: Path, name: str, edit) -> Path:
    out = tmp_path / name
    shutil.copytree(TINY_TOK, out)
    d = json.loads((out / "tokenizer.json").read_text())
    edit(d)
    (out / "tokenizer.json").write_text(json.dumps(d))
    return out


def _swap_two_tokens(d):
    v = d["model"]["vocab"]
    a, b = [t for t, i in v.items() if i in (100, 101)]
    v[a], v[b] = v[b], v[a]


def _append_token(d):
    n = max(d["model"]["vocab"].values()) + 1
    d["added_tokens"].append({"id": n, "content": "<|extra|>", "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": True})


# --------------------------------------------------------------------------- tokenizers
def test_identical_tokenizers_share_the_whole_vocabulary():
    tok = _load_tok(TINY_TOK)
    assert shared_vocab_size(tok, _load_tok(TINY_TOK)) == len(tok.get_vocab()) == 1536


def test_appended_tokens_share_the_prefix(tmp_path):
    base, longer = _load_tok(TINY_TOK), _load_tok(_edited_tokenizer(tmp_path, "longer", _append_token))
    assert len(longer) == len(base) + 1
    assert shared_vocab_size(longer, base) == shared_vocab_size(base, longer) == len(base)


def test_different_tokenizers_are_a_clear_error_naming_both(tmp_path):
    other = _load_tok(_edited_tokenizer(tmp_path, "swapped", _swap_two_tokens))
    with pytest.raises(TokenizerMismatch) as e:
        shared_vocab_size(_load_tok(TINY_TOK), other, teacher_name="big-teacher", student_name="small-student")
    msg = str(e.value)
    assert "'big-teacher'" in msg and "'small-student'" in msg and "swapped" in msg and "id 100" in msg


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize("override,key", [
    ("method.alpha=1.5", "method.alpha"), ("method.loss=tvd", "method.loss"), ("method.beta=-0.1", "method.beta"),
    ("method.temperature=0", "method.temperature"), ("method.teacher_logits=disk", "method.teacher_logits"),
    ("method.top_k=0", "method.top_k"), ("method.cross_tokenizer=bytes", "method.cross_tokenizer")])
def test_bad_kd_values_name_the_key(compose, override, key):
    from codistill.config import ConfigError, validate

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose("experiment=smoke", "method=kd", override))


def test_kd_defaults_compose(compose):
    from codistill.config import validate
    from codistill.methods.kd import KDConfig

    m = validate(compose("experiment=smoke", "method=kd")).method
    assert isinstance(m, KDConfig)
    assert (m.filter, m.loss, m.teacher_logits, m.keep) == (True, "forward_kl", "online", "first")


# --------------------------------------------------------------------------- helpers
def _run_config(compose, *overrides):
    from codistill.config import validate

    return validate(compose("experiment=smoke", "method=kd", *overrides))


def _tiny(role_seed: int):
    from codistill.config import TinyConfig
    from codistill.models.tiny import build_tiny_model, load_tiny_tokenizer

    tok = load_tiny_tokenizer()
    return build_tiny_model(TinyConfig(init_seed=role_seed), tok, torch.float32), tok


PAIRS = [{"prompt": f"# Question: what is {a} + {b}?\ndef solution():", "completion": f"\n    return {a} + {b}\n"}
         for a, b in [(1, 2), (30, 4), (5, 600), (7, 8), (9, 10), (11, 12)]]


def _items(tok):
    from codistill.training.data import encode_example

    return [encode_example(tok, p["prompt"], p["completion"], max_len=64, mask_prompt=True) for p in PAIRS]


def _spec(**kw):
    from codistill.training.kd import KDSpec

    return KDSpec(**{"loss": "forward_kl", "temperature": 2.0, "alpha": 0.5, "vocab_size": 1536, **kw})


# --------------------------------------------------------------------------- cached top-k
def test_online_and_cached_give_the_same_loss_and_the_store_is_reused_and_resumes(tmp_path):
    from codistill.training.kd import KDStudentLM, TopKDataset, TopKReader, collate_topk, precompute_topk

    teacher, tok = _tiny(1)
    student, _ = _tiny(0)
    items = _items(tok)
    kw = dict(root=tmp_path, teacher_id="tiny-teacher", temperature=2.0, vocab_size=1536, batch_size=4)
    full, stats = precompute_topk(teacher, items, k=1536, **kw)
    assert stats["kd/topk_computed"] == len(items) and stats["kd/topk_reused"] == 0
    again, stats = precompute_topk(teacher, list(reversed(items)), k=1536, **kw)  # order does not matter
    assert again == full and stats["kd/topk_computed"] == 0 and stats["kd/topk_reused"] == len(items)

    batch_items = TopKDataset(items[:4], TopKReader(full))
    batch = collate_topk([batch_items[i] for i in range(4)], pad_id=tok.pad_token_id)
    online = KDStudentLM(student, _spec(teacher=teacher), lr=1e-3, weight_decay=0.0, warmup_steps=0)
    cached = KDStudentLM(student, _spec(), lr=1e-3, weight_decay=0.0, warmup_steps=0)
    # the teacher is neither a parameter nor a hyperparameter (never optimised, synced or checkpointed)
    assert set(online.state_dict()) == set(cached.state_dict()) and "spec" not in online.hparams_initial
    assert online.hparams["kd_teacher_logits"] == "online" and cached.hparams["kd_teacher_logits"] == "cached"
    with torch.no_grad():
        lo, lc = online.losses(batch), cached.losses(batch)
    assert lo["kd"] > 0
    torch.testing.assert_close(lc["kd"], lo["kd"], rtol=1e-4, atol=1e-6)  # k = vocabulary: exact
    torch.testing.assert_close(lc["ce"], lo["ce"])

    small, _ = precompute_topk(teacher, items, k=8, **kw)
    assert small != full  # k is part of the key
    ds = TopKDataset(items[:4], TopKReader(small))
    with torch.no_grad():
        ls = cached.losses(collate_topk([ds[i] for i in range(4)], pad_id=tok.pad_token_id))
    assert 0 < ls["kd"] <= lo["kd"] + 1e-6  # top-8 + rest: a coarsening, never above the full KL

    # a killed precomputation resumes: no index yet, progress at 4 of 6 sequences; the rows of
    # the first 4 are zeroed to prove they are not recomputed, the last 2 must be
    index = json.loads((Path(small) / "index.json").read_text())
    rows = sorted(index["sequences"].values())
    logp = Path(small) / "logp.f32"
    reference = np.fromfile(logp, dtype=np.float32).reshape(-1, 8)
    np.zeros_like(reference).tofile(logp)
    (Path(small) / "index.json").unlink()
    (Path(small) / "progress.json").write_text(json.dumps({"done": 4}))
    _, stats = precompute_topk(teacher, items, k=8, **kw)
    assert (stats["kd/topk_computed"], stats["kd/topk_reused"]) == (2, 4)
    resumed = np.fromfile(logp, dtype=np.float32).reshape(-1, 8)
    split = rows[4][0]
    assert (resumed[:split] == 0).all()
    np.testing.assert_allclose(resumed[split:], reference[split:], rtol=1e-5, atol=1e-5)
    assert (Path(small) / "index.json").exists()


# --------------------------------------------------------------------------- the method's training set
def _seed_teacher_cache(rc, ctx, completions_for):
    """Write the teacher's samples into the generation cache, keyed as EKT/KD draw them."""
    from codistill.generation import open_cache

    t_tok = ctx.tokenizer("teacher")
    sampling = dataclasses.replace(rc.sampling, stop=list(rc.sampling.stop or ctx.task.stop))
    cache = open_cache(ctx.cache_dir, ctx.backend("teacher")[2], sampling, rc.seed)
    cache.append([(ctx.task.render(p, t_tok, chat=rc.teacher.chat, shots=rc.task.num_shots).text,
                   completions_for(p)) for p in ctx.train])


def _context(rc, tmp_path):
    from codistill.datasets import load_problems
    from codistill.methods import RunContext
    from codistill.tasks import build_task

    train, test = load_problems(rc.dataset)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return RunContext(cfg=rc, run_dir=run_dir, task=build_task(rc.dataset.task, rc.task), train=train,
                      test=test, cache_dir=str(tmp_path / "cache"))


def _read(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("filter_", [True, False])
def test_kd_training_set_is_the_teacher_samples_filtered_or_not(compose, tmp_path, filter_):
    """Teacher samples (right, wrong, right-but-different) come through the generation cache
    exactly as EKT draws them; the filter keeps the first passing one, no filter keeps all."""
    from codistill.methods import build_method

    rc = _run_config(compose, "dataset.train_size=3", "sampling.n=3", f"method.filter={str(filter_).lower()}")
    ctx = _context(rc, tmp_path)

    def samples(p):
        gold = int(float(p.answer))
        return [f"\n    return {gold + 1}\n```", f"\n    return {gold}\n```", f"\n    x = {gold}\n    return x\n```"]

    _seed_teacher_cache(rc, ctx, samples)
    method = build_method(rc)
    method.check(ctx)
    result = method.build(ctx)
    assert result.metrics["teacher/cached_prompts"] == 3  # nothing generated: same cache as EKT
    rows = _read(ctx.run_dir / "train_set.jsonl")
    gens = _read(ctx.run_dir / "generations.jsonl")
    assert len(gens) == 9 and [g["passed"] for g in gens] == [False, True, True] * 3
    if filter_:
        expected = [(p.id, f"def solution():\n    return {int(float(p.answer))}\n") for p in ctx.train]
    else:
        expected = [(g["problem_id"], g["program"]) for g in gens]
    assert [(r["problem_id"], r["program"]) for r in rows] == expected
    assert [x["completion"] for x in result.pairs] == [r["completion"] for r in rows]
    spec = result.plan.objective
    assert spec.vocab_size == 1536 and spec.teacher is not None and spec.topk_dir is None  # online (default)
    assert (spec.loss, spec.alpha) == (rc.method.loss, rc.method.alpha)


# --------------------------------------------------------------------------- a real training run
def test_kd_training_logs_both_terms_and_lowers_the_kd_loss(compose, tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    from codistill.training import train_student
    from codistill.training.data import collate
    from codistill.training.kd import KDStudentLM

    rc = _run_config(compose, "train.lr=1e-2", "train.epochs=6", "train.batch_size=3", "trainer.precision=32-true",
                     "train.checkpoint_every_n_epochs=0", "method.alpha=0.5", "method.temperature=1.0")
    teacher, tok = _tiny(1)
    with torch.no_grad():  # a confident teacher (random tiny models are near uniform): KD ~ CE in scale
        teacher.model.norm.weight.mul_(30)
    student, _ = _tiny(0)
    spec = _spec(teacher=teacher, temperature=1.0)
    probe = KDStudentLM(student, spec, lr=1e-3, weight_decay=0.0, warmup_steps=0)
    batch = collate(_items(tok), pad_id=tok.pad_token_id)
    with torch.no_grad():
        before = probe.losses(batch)["kd"].item()
    logger = CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    out = train_student(student, tok, PAIRS, rc, tmp_path, [logger], kd=spec)
    with torch.no_grad():
        after = probe.losses(batch)["kd"].item()
    assert out["train/steps"] == 12
    assert before > 1.0 and after < 0.8 * before, (before, after)
    assert {"train/final_kd_loss", "train/final_ce_loss"} <= set(out)
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    logged = [r for r in rows if r.get("train/kd_loss")]
    assert logged and all(r["train/ce_loss"] and r["train/loss"] for r in logged)
    r = logged[0]
    total = 0.5 * float(r["train/kd_loss"]) + 0.5 * float(r["train/ce_loss"])
    assert abs(float(r["train/loss"]) - total) < 1e-4
    assert not any(p.grad is not None for p in teacher.parameters())  # the teacher stayed frozen


# --------------------------------------------------------------------------- the CLI
def test_tokenizer_mismatch_with_refuse_fails_before_any_weights_load(tmp_path):
    other = _edited_tokenizer(tmp_path, "swapped_tok", _swap_two_tokens)
    run_dir = tmp_path / "run"
    p = run_cli(["experiment=smoke", "method=kd", "method.cross_tokenizer=refuse", "teacher.source=local",
                 f"teacher.path={other}",
                 "teacher.name=odd-teacher", "logger=csv", f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                env={"CODISTILL_CACHE": str(tmp_path / "cache")})
    assert p.returncode != 0
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "failed" and "TokenizerMismatch" in m["error"]
    assert "'odd-teacher'" in m["error"] and "'tiny'" in m["error"] and "swapped_tok" in m["error"]
    assert "eval_base/pass@1" not in m  # failed before the baseline evaluation loaded the student


@pytest.mark.slow
def test_smoke_kd_cached_runs_ok_and_a_second_run_reuses_the_teacher_logits(tmp_path):
    cache = tmp_path / "cache"
    args = ["experiment=smoke", "method=kd", "method.filter=false", "method.teacher_logits=cached",
            "method.top_k=16", "eval.baseline=false", "logger=csv"]
    ms = []
    for name, more in (("first", []), ("second", ["eval.enabled=false"])):
        p = run_cli(args + more + [f"hydra.run.dir={tmp_path / name}"], cwd=tmp_path,
                    env={"CODISTILL_CACHE": str(cache)})
        assert p.returncode == 0, p.stderr[-3000:]
        ms.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    first, second = ms
    assert first["status"] == second["status"] == "ok"
    assert first["data/n_kept"] == first["data/n_samples"] == 24  # unfiltered: every teacher sample
    assert first["kd/topk_computed"] == 24 and second["kd/topk_computed"] == 0 and second["kd/topk_reused"] == 24
    assert second["teacher/cached_prompts"] == 6
    assert 0 <= first["eval/pass@1"] <= 1
    for m in ms:
        assert m["train/final_kd_loss"] > 0 and m["train/final_ce_loss"] > 0 and m["train/steps"] == 6


@pytest.mark.slow
@pytest.mark.packaged_models
def test_offline_qwen_coder_teacher_and_student_share_their_vocabulary(compose):
    """Qwen2.5-Coder-1.5B -> 0.5B, as converted offline: one tokenizer, one logit width."""
    from transformers import AutoConfig

    from codistill.models import load_tokenizer, resolve_checkpoint

    rc = _run_config(compose, "model@teacher=qwen2.5-coder-1.5b-instruct", "model@student=qwen2.5-coder-0.5b-instruct")
    import os

    cache = os.path.expanduser(rc.cache_dir)
    t_tok, s_tok = load_tokenizer(rc.teacher, cache), load_tokenizer(rc.student, cache)
    n = shared_vocab_size(t_tok, s_tok, teacher_name=rc.teacher.name, student_name=rc.student.name)
    widths = [AutoConfig.from_pretrained(resolve_checkpoint(m, cache)).vocab_size for m in (rc.teacher, rc.student)]
    assert n <= min(widths) and n >= 151643  # every real Qwen2.5 token is shared


def test_teacher_topk_store_is_keyed_by_the_teachers_dtype_and_the_cross_tokenizer_mode(tmp_path):
    """A bf16 teacher's log-probs differ from its fp32 weights': they must not share a store."""
    from codistill.training.kd import precompute_topk

    teacher, tok = _tiny(1)
    items = _items(tok)[:2]
    kw = dict(root=tmp_path, teacher_id="tiny-teacher", k=4, temperature=1.0, vocab_size=1536)
    fp32, _ = precompute_topk(teacher, items, **kw)
    bf16, stats = precompute_topk(teacher.to(torch.bfloat16), items, **kw)
    assert bf16 != fp32 and stats["kd/topk_computed"] == 2
    uld, _ = precompute_topk(teacher, items, mode="uld", **kw)
    assert uld not in (fp32, bf16)
    index = json.loads((Path(bf16) / "index.json").read_text())
    assert (index["dtype"], index["format"]) == ("bfloat16", 2)
