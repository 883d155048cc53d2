"""method=on_policy on tiny models: the loss vanishes when the student is the teacher, gradients
reach the student only, the on-policy share follows lmbda, execution feedback (failed_only never
trains on a passing sample, weighted scales it), a real Lightning run, and the smoke sweep."""

import copy
import csv
import json

import pytest
import torch

from conftest import run_cli

from codistill.config import ConfigError, validate
from codistill.training.losses import IGNORE, kd_loss
from codistill.training.on_policy import (OnPolicySpec, OnPolicyStudentLM, collate_prompts, feedback_weights,
                                          on_policy_step, rollout_batch)


# --------------------------------------------------------------------------- config
def test_on_policy_defaults_compose(compose):
    m = validate(compose("experiment=smoke", "method=on_policy")).method
    assert (m.name, m.lmbda, m.beta, m.feedback, m.seq_kd, m.filter) == ("on_policy", 0.5, 0.5, "none", False, False)


@pytest.mark.parametrize("override,key", [("method.lmbda=1.5", "method.lmbda"), ("method.beta=-0.1", "method.beta"),
                                          ("method.feedback=sometimes", "method.feedback"),
                                          ("method.pass_weight=2", "method.pass_weight"),
                                          ("method.temperature=0", "method.temperature"),
                                          ("method.rollout_temperature=-1", "method.rollout_temperature"),
                                          ("method.max_new_tokens=0", "method.max_new_tokens"),
                                          ("method.rollout_every=0", "method.rollout_every"),
                                          ("method.cross_tokenizer=guess", "method.cross_tokenizer")])
def test_bad_on_policy_values_name_the_key(compose, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose("experiment=smoke", "method=on_policy", override))


@pytest.mark.parametrize("override,key", [("method.max_new_tokens=256", "method.max_new_tokens"),
                                          ("trainer.strategy=fsdp", "trainer.strategy")])
def test_run_level_conflicts_fail_in_the_method_check_naming_the_key(compose, tmp_path, override, key):
    from codistill.methods import RunContext, build_method

    # smoke: train.max_seq_len=256; fsdp validates only with accelerator=gpu (nothing is loaded here)
    rc = validate(compose("experiment=smoke", "method=on_policy", "trainer.accelerator=gpu", override))
    ctx = RunContext(cfg=rc, run_dir=tmp_path, task=None, train=[], test=[], cache_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_method(rc).check(ctx)


def test_rollouts_never_sample_past_the_shared_vocabulary():
    from codistill.training.on_policy import VocabCut

    scores = torch.zeros(2, 7)
    cut = VocabCut(5)(None, scores)
    assert torch.isinf(cut[:, 5:]).all() and (cut[:, :5] == 0).all() and (scores == 0).all()
    assert VocabCut(7)(None, scores) is scores


# --------------------------------------------------------------------------- helpers
def _tiny(seed: int):
    from codistill.config import TinyConfig
    from codistill.models.tiny import build_tiny_model, load_tiny_tokenizer

    tok = load_tiny_tokenizer()
    return build_tiny_model(TinyConfig(init_seed=seed), tok, torch.float32), tok


def _setup(compose, *overrides, n_problems=4):
    """(run config, task, problems, the student's prompts, one training example per problem)."""
    from codistill.datasets import load_problems
    from codistill.tasks import build_task

    rc = validate(compose("experiment=smoke", "method=on_policy", f"dataset.train_size={n_problems}", *overrides))
    task = build_task(rc.dataset.task, rc.task)
    problems, _ = load_problems(rc.dataset)
    _, tok = _tiny(0)
    rendered = [task.render(p, tok, chat=True, shots=0) for p in problems]
    examples = [{"prompt": r.text, "completion": task.target(r, f"def solution():\n    return {p.answer}\n"),
                 "problem": i} for i, (p, r) in enumerate(zip(problems, rendered))]
    return rc, task, problems, rendered, examples


def _spec(teacher, task, problems, rendered, examples, **kw):
    return OnPolicySpec(**{"beta": 0.5, "temperature": 1.0, "vocab_size": 1536, "teacher": teacher, "lmbda": 1.0,
                           "max_new_tokens": 12, "seed": 0, "examples": examples, "task": task, "problems": problems,
                           "rendered": rendered, "timeout_s": 3.0, **kw})


def _module(student, tok, spec):
    return OnPolicyStudentLM(student, spec, tok, lr=1e-3, weight_decay=0.0, warmup_steps=0)


def _batch(tok, examples, max_new_tokens=12):
    from codistill.training.on_policy import OnPolicyDataModule

    dm = OnPolicyDataModule(examples, tok, batch_size=len(examples), max_len=256, max_new_tokens=max_new_tokens)
    return collate_prompts(dm.items, pad_id=tok.pad_token_id)


# --------------------------------------------------------------------------- the loss on rollouts
def test_loss_is_zero_when_the_student_is_the_teacher_and_positive_otherwise(compose):
    _, task, problems, rendered, examples = _setup(compose)
    student, tok = _tiny(0)
    batch = _batch(tok, examples)
    same = _module(student, tok, _spec(copy.deepcopy(student), task, problems, rendered, examples))
    rolled, figures = same.rollout(batch)  # real sampling from the student, judged in the sandbox
    assert figures["train/rollout_tokens"] > 0 and 0.0 <= figures["train/rollout_pass_rate"] <= 1.0
    assert (rolled["labels"] != IGNORE).sum() > 0
    assert same.gkd_loss(rolled).abs().item() < 1e-6
    other, _ = _tiny(1)
    with torch.no_grad():
        other.model.norm.weight.mul_(20)  # a confident teacher: a clear divergence
    differ = _module(student, tok, _spec(other, task, problems, rendered, examples))
    assert differ.gkd_loss(rolled).item() > 1e-3


def test_gradient_reaches_the_student_only(compose):
    _, task, problems, rendered, examples = _setup(compose)
    student, tok = _tiny(0)
    teacher, _ = _tiny(1)
    module = _module(student, tok, _spec(teacher, task, problems, rendered, examples))
    rolled, _ = module.rollout(_batch(tok, examples))
    module.gkd_loss(rolled).backward()
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not any(n.startswith("_teacher") or "teacher" in n for n, _ in module.named_parameters())


# --------------------------------------------------------------------------- the on-policy share
@pytest.mark.parametrize("lmbda", [0.0, 0.25, 0.7, 1.0])
def test_on_policy_fraction_follows_lmbda_and_is_deterministic(lmbda):
    draws = [on_policy_step(3, e, b, lmbda) for e in range(4) for b in range(1000)]
    assert abs(sum(draws) / len(draws) - lmbda) < 0.025
    assert draws == [on_policy_step(3, e, b, lmbda) for e in range(4) for b in range(1000)]  # a rerun agrees
    if 0 < lmbda < 1:
        assert draws != [on_policy_step(4, e, b, lmbda) for e in range(4) for b in range(1000)]  # the seed matters


# --------------------------------------------------------------------------- execution feedback
def test_feedback_weights_per_verdict():
    passed = [True, False, True, False]
    assert feedback_weights(passed, "none") == [1.0] * 4
    assert feedback_weights(passed, "failed_only") == [0.0, 1.0, 0.0, 1.0]
    assert feedback_weights(passed, "weighted", 0.25) == [0.25, 1.0, 0.25, 1.0]
    with pytest.raises(ValueError, match="method.feedback"):
        feedback_weights(passed, "bogus")


PROMPTS = [[5, 6, 7], [5, 6], [8, 9, 10, 11], [4]]
COMPS = [[1, 2, 3], [3, 4], [2, 2, 2, 2, 9], [7, 1]]


def _loss_and_row_grads(weights, rows=(0, 1, 2, 3), vocab=11):
    """The weighted JSD of fixed random student/teacher logits over ``rows`` of one rollout
    batch, and the gradient's size on each row of the student's logits."""
    batch = rollout_batch(PROMPTS, COMPS, [1.0] * 4, pad_id=0)
    g = torch.Generator().manual_seed(0)
    s = torch.randn(*batch["input_ids"].shape, vocab, generator=g).requires_grad_()
    t = torch.randn(*batch["input_ids"].shape, vocab, generator=g)
    r = list(rows)
    w = torch.tensor(weights, dtype=torch.float32).unsqueeze(1)
    loss = kd_loss(s[r, :-1], t[r, :-1], batch["labels"][r, 1:], kind="jsd", beta=0.5, weights=w)
    loss.backward()
    return loss, s.grad.abs().sum(dim=(1, 2))


def test_failed_only_trains_on_no_passing_sample_and_weighted_scales_it():
    passed = [True, False, True, False]
    batch = rollout_batch(PROMPTS, COMPS, [1.0] * 4, pad_id=0)  # the prompt is masked, the completion labelled
    assert batch["labels"][0].tolist()[:3] == [IGNORE] * 3 and batch["labels"][0].tolist()[3:6] == [1, 2, 3]
    assert batch["labels"][1].tolist()[4:] == [IGNORE] * 5  # right padding is not labelled
    loss, row_grad = _loss_and_row_grads(feedback_weights(passed, "failed_only"))
    assert row_grad[0] == 0 and row_grad[2] == 0 and row_grad[1] > 0 and row_grad[3] > 0
    failing, _ = _loss_and_row_grads([1.0, 1.0], rows=(1, 3))
    torch.testing.assert_close(loss, failing)  # exactly the loss of the failing rows alone
    zero, row_grad = _loss_and_row_grads(feedback_weights([True] * 4, "failed_only"))
    assert zero.item() == 0.0 and (row_grad == 0).all()  # every sample passed: nothing learnt, backward still ran
    # weighted: a passing row's tokens count pass_weight as much as a failing row's
    passing, _ = _loss_and_row_grads([1.0, 1.0], rows=(0, 2))
    n_pass, n_fail = len(COMPS[0]) + len(COMPS[2]), len(COMPS[1]) + len(COMPS[3])
    w, _ = _loss_and_row_grads(feedback_weights(passed, "weighted", 0.25))
    torch.testing.assert_close(w, (0.25 * passing * n_pass + failing * n_fail) / (n_pass + n_fail))
    full, _ = _loss_and_row_grads([1.0] * 4)
    torch.testing.assert_close(full, (passing * n_pass + failing * n_fail) / (n_pass + n_fail))


class _Scripted(OnPolicyStudentLM):
    """The student's sampler replaced by given completions (right answers for even rows, wrong for
    odd ones), so the real sandbox verdicts are known; everything after sampling is the real code."""

    def sample(self, prompts):
        out = []
        for r in range(len(prompts)):
            p = self.spec.problems[self._rows[r]]
            answer = p.answer if r % 2 == 0 else float(p.answer) + 1
            out.append(self.tok(f"\n    return {answer}\n```", add_special_tokens=False).input_ids
                       + [self.tok.eos_token_id])
        return out


@pytest.mark.parametrize("feedback", ["none", "failed_only", "weighted"])
def test_rollouts_are_judged_in_the_sandbox_and_weighted_by_their_verdict(compose, feedback):
    _, task, problems, rendered, examples = _setup(compose)
    student, tok = _tiny(0)
    teacher, _ = _tiny(1)
    batch = _batch(tok, examples)
    module = _Scripted(student, _spec(teacher, task, problems, rendered, examples, feedback=feedback,
                                      pass_weight=0.25), tok, lr=1e-3, weight_decay=0.0, warmup_steps=0)
    module._rows = batch["problem"].tolist()
    rolled, figures = module.rollout(batch)
    assert figures["train/rollout_pass_rate"] == 0.5
    expected = {"none": [1.0, 1.0], "failed_only": [0.0, 1.0], "weighted": [0.25, 1.0]}[feedback] * 2
    assert rolled["weights"].squeeze(1).tolist() == expected
    assert rolled["input_ids"].shape[0] == len(examples)
    module.spec.seq_kd = True  # the teacher samples of the batch come along, weight 1
    rolled, _ = module.rollout(batch)
    assert rolled["input_ids"].shape[0] == 2 * len(examples) and rolled["weights"][len(examples):].eq(1).all()


# --------------------------------------------------------------------------- a real Lightning run
def test_training_takes_the_seeded_share_of_on_policy_steps_and_logs_the_pass_rate(compose, tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    from codistill.training import train_student

    rc, task, problems, rendered, examples = _setup(compose, "train.epochs=3", "train.batch_size=2",
                                                    "train.checkpoint_every_n_epochs=0", "trainer.precision=32-true")
    student, tok = _tiny(0)
    teacher, _ = _tiny(1)
    spec = _spec(teacher, task, problems, rendered, examples, lmbda=0.5, feedback="failed_only")
    logger = CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    out = train_student(student, tok, examples, rc, tmp_path, [logger], kd=spec)
    assert out["train/steps"] == 6
    expected = [on_policy_step(rc.seed, e, b, 0.5) for e in range(3) for b in range(2)]
    assert 0 < sum(expected) < 6  # this seed mixes both kinds of step
    rows = [r for r in csv.DictReader((tmp_path / "csv" / "metrics.csv").open()) if r.get("train/onpolicy_fraction")]
    assert [float(r["train/onpolicy_fraction"]) for r in rows] == pytest.approx(
        [sum(expected[:i + 1]) / (i + 1) for i in range(6)])
    assert [bool(r["train/rollout_pass_rate"]) for r in rows] == expected  # verdicts logged on on-policy steps
    assert out["train/final_onpolicy_fraction"] == pytest.approx(sum(expected) / 6)
    assert all(p.grad is None for p in teacher.parameters())


# --------------------------------------------------------------------------- the CLI
@pytest.mark.slow
def test_smoke_sweep_runs_on_policy_with_each_feedback(tmp_path):
    p = run_cli(["-m", "experiment=smoke", "method=on_policy", "method.feedback=none,failed_only,weighted",
                 "logger=csv", "eval.baseline=false"], cwd=tmp_path, env={"CODISTILL_CACHE": str(tmp_path / "cache")},
                timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ms = [json.loads(f.read_text()) for f in sorted((tmp_path / "multirun" / "smoke").glob("*/*/metrics.json"))]
    assert sorted(m["onpolicy/feedback"] for m in ms) == ["failed_only", "none", "weighted"]
    for m in ms:
        assert m["status"] == "ok" and m["method"] == "on_policy" and m["train/steps"] == 6, m.get("error")
        assert 0.0 <= m["train/final_rollout_pass_rate"] <= 1.0 and 0 < m["train/final_onpolicy_fraction"] <= 1
        assert m["teacher/cached_prompts"] + 0 >= 0 and 0 <= m["eval/pass@1"] <= 1


@pytest.mark.slow
def test_on_policy_runs_under_ddp_with_a_lora_student(tmp_path):
    """Two CPU ranks (gloo), each rolling out its own shard of prompts, a LoRA student; failed_only
    keeps the ranks in step even where a rank's whole batch would be left out."""
    run_dir = tmp_path / "run"
    p = run_cli(["experiment=smoke", "method=on_policy", "method.feedback=failed_only", "method.lmbda=1",
                 "trainer=ddp", "trainer.devices=2", "student.lora.enabled=true", "eval.baseline=false",
                 "logger=csv", f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                env={"CODISTILL_CACHE": str(tmp_path / "cache")}, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok" and m["train/world_size"] == 2 and m["train/steps"] == 3  # 24 rows / (2 ranks x 4)
    assert m["train/final_onpolicy_fraction"] == 1.0 and 0.0 <= m["train/final_rollout_pass_rate"] <= 1.0
    assert m["train/trainable_params"] < 100_000  # the LoRA adapters only (the tiny student has 180k weights)


@pytest.mark.slow
def test_on_policy_feedbacks_sweep_beside_the_other_methods_on_the_same_problems(tmp_path):
    fast = ["experiment=smoke", "eval.baseline=false", "dataset.train_size=2", "dataset.test_size=2", "sampling.n=2",
            "sampling.max_new_tokens=8", "eval.n_samples=0", "eval.k=[1]", "eval.max_new_tokens=8", "logger=csv"]
    methods = ["ekt", "kd", "persd", "on_policy", "on_policy_failed_only", "on_policy_weighted"]
    p = run_cli(["-m", *fast, f"method={','.join(methods)}"], cwd=tmp_path,
                env={"CODISTILL_CACHE": str(tmp_path / "cache")}, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ms = [json.loads(f.read_text()) for f in sorted((tmp_path / "multirun" / "smoke").glob("*/*/metrics.json"))]
    assert sorted(m["method"] for m in ms) == sorted(["ekt", "kd", "persd"] + ["on_policy"] * 3)
    assert all(m["status"] == "ok" for m in ms), [m.get("error") for m in ms]
    assert {m["data/n_test_problems"] for m in ms} == {2} and {m["data/n_train_problems"] for m in ms} == {2}
    on = {m["onpolicy/feedback"]: m for m in ms if m["method"] == "on_policy"}
    assert sorted(on) == ["failed_only", "none", "weighted"]
    assert all(m["teacher/cached_prompts"] == 2 for m in on.values())  # the teacher samples of ekt/kd, reused


# --------------------------------------------------------------------------- across tokenizers
def _cross_module(compose, tmp_path, mode, feedback="none", **kw):
    """A tiny student (1,536-token vocabulary) and a tiny teacher of another tokenizer (360 tokens),
    the spec filled as :meth:`codistill.methods.on_policy.OnPolicy._cross_spec` fills it."""
    from test_cross_tokenizer import tiny_teacher_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codistill.training.cross_tokenizer import tokenizer_piece_map, tokenizer_projection_map

    _, task, problems, rendered, examples = _setup(compose)
    student, tok = _tiny(0)
    t_dir = tiny_teacher_dir(tmp_path)
    teacher, t_tok = AutoModelForCausalLM.from_pretrained(str(t_dir)), AutoTokenizer.from_pretrained(str(t_dir))
    with torch.no_grad():
        teacher.model.norm.weight.mul_(20)  # a confident teacher: a clear divergence
    spec = _spec(teacher, task, problems, rendered, examples, feedback=feedback, cross=mode, vocab_size=len(tok),
                 teacher_vocab_size=len(t_tok), teacher_tokenizer=t_tok, teacher_pad_id=t_tok.pad_token_id,
                 max_len=256, t2s={"aligned": lambda: torch.from_numpy(tokenizer_piece_map(t_tok, tok, len(t_tok))),
                                   "projected": lambda: torch.from_numpy(tokenizer_projection_map(t_tok, tok, len(t_tok))),
                                   "uld": lambda: None}[mode](), **kw)
    return _module(student, tok, spec), tok, teacher, examples


@pytest.mark.parametrize("mode", ["aligned", "uld", "projected"])
def test_across_tokenizers_rollouts_are_scored_by_the_teacher_in_its_own_tokens(compose, tmp_path, mode):
    module, tok, teacher, examples = _cross_module(compose, tmp_path, mode)
    batch = _batch(tok, examples)
    rolled, figures = module.rollout(batch)  # real sampling, judged in the sandbox, then through both tokenizers
    assert rolled["teacher_input_ids"].shape[0] == rolled["input_ids"].shape[0] == len(examples)
    assert rolled["pos_mask"].sum() > 0 and int(rolled["teacher_input_ids"].max()) < 360
    loss = module.gkd_loss(rolled)
    assert torch.isfinite(loss) and loss.item() > 1e-3
    loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in module.model.parameters() if p.grad is not None) > 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    # the teacher's own samples (an off-policy step) go the same way: the same text, both tokenizers
    off = module.cross_batch(batch["prompt"], batch["completion"], [1.0] * len(examples))
    assert torch.isfinite(module.gkd_loss(off))


def test_across_tokenizers_failed_only_leaves_passing_rollouts_out(compose, tmp_path):
    module, tok, _, examples = _cross_module(compose, tmp_path, "aligned", feedback="failed_only")
    batch = _batch(tok, examples)
    prompts, comps = list(batch["prompt"]), list(batch["completion"])
    mixed = module.cross_batch(prompts, comps, [0.0, 1.0, 0.0, 1.0])
    alone = module.cross_batch([prompts[1], prompts[3]], [comps[1], comps[3]], [1.0, 1.0])
    torch.testing.assert_close(module.gkd_loss(mixed), module.gkd_loss(alone))  # only the failing rows count
    assert module.gkd_loss(module.cross_batch(prompts, comps, [0.0] * 4)).item() == 0.0


def test_cli_on_policy_across_tokenizers_runs_ok(tmp_path):
    """`method=on_policy` with a teacher of another tokenizer (auto -> aligned) trains and reports the
    rollouts' pass rate; cross_tokenizer=refuse keeps the early error."""
    from test_cross_tokenizer import tiny_teacher_dir

    t_dir = tiny_teacher_dir(tmp_path)
    base = ["experiment=smoke", "method=on_policy", "teacher.source=local", f"teacher.path={t_dir}",
            "teacher.name=other", "eval.baseline=false", "eval.n_samples=0", "eval.k=[1]", "dataset.train_size=2",
            "method.lmbda=0.5", "train.epochs=3", "seed=0", "logger=csv"]
    draws = [on_policy_step(0, e, b, 0.5) for e in range(3) for b in range(2)]  # 2 steps per epoch
    assert any(draws) and not all(draws)  # both kinds of step: the teacher's samples and rollouts, as text
    env = {"CODISTILL_CACHE": str(tmp_path / "cache")}
    p = run_cli(base + [f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["status"] == "ok" and m["kd/cross_tokenizer"] == "aligned", m.get("error")
    assert m["kd/vocab_size"] == 1536 and m["kd/teacher_vocab_size"] == 360
    assert m["train/steps"] == 6 and m["train/final_kd_loss"] > 0
    assert m["train/final_onpolicy_fraction"] == pytest.approx(sum(draws) / 6)
    assert 0.0 <= m["train/final_rollout_pass_rate"] <= 1.0
    p = run_cli(base + ["method.cross_tokenizer=refuse", f"hydra.run.dir={tmp_path / 'refuse'}"], cwd=tmp_path,
                env=env)
    assert p.returncode != 0
    assert "TokenizerMismatch" in json.loads((tmp_path / "refuse" / "metrics.json").read_text())["error"]


# --------------------------------------------------------------------------- rounds (rollout_every)
class _Counting(OnPolicyStudentLM):
    """The real sampler, counted: how many calls and how many prompts each."""

    calls: list

    def sample(self, prompts):
        self.calls.append(len(prompts))
        return super().sample(prompts)


def test_rollout_every_draws_one_pool_per_round_and_hands_it_out_in_order(compose):
    _, task, problems, rendered, examples = _setup(compose)
    student, tok = _tiny(0)
    teacher, _ = _tiny(1)
    module = _Counting(student, _spec(teacher, task, problems, rendered, examples, rollout_every=3, max_len=256),
                       tok, lr=1e-3, weight_decay=0.0, warmup_steps=0)
    module.calls = []
    batch = _batch(tok, examples[:2])  # B = 2
    seen = []
    for step in range(1, 7):  # training_step counts steps before it rolls out
        module.steps = step
        rolled, figures = module.rollout(batch)
        assert rolled["input_ids"].shape[0] == 2 and 0.0 <= figures["train/rollout_pass_rate"] <= 1.0
        seen.append(rolled["input_ids"].tolist())
    assert module.calls == [6, 6]  # steps 1 and 4 start a round: 3 x B prompts in one call each
    assert seen[0] != seen[1] or seen[1] != seen[2]  # the round's rows differ step to step
    # the round's first B rows are the batch's own prompts (rollout_every=1 rolls out exactly those)
    prompt = batch["prompt_ids"][0]
    assert seen[0][0][:len(prompt)] == prompt and seen[3][0][:len(prompt)] == prompt
    # a round ends after N steps even where some of them were off-policy (the pool is not used up)
    module.calls, module._pool = [], None
    module.steps = 10
    module.rollout(batch)
    module.steps = 13  # steps 11 and 12 were off-policy
    module.rollout(batch)
    assert module.calls == [6, 6]
