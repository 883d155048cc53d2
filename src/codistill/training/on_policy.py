"""On-policy distillation (GKD, Agarwal et al. 2024): the student learns the teacher's token
distributions on sequences it sampled itself, mixed with fixed teacher samples.

One training step (:meth:`OnPolicyStudentLM.training_step`):

1. Decide the step's kind with :func:`on_policy_step` -- on-policy with probability ``lmbda``,
   a pure function of (seed, epoch, batch index), so every DDP rank takes the same kind of
   step and a rerun takes the same ones.
2. Off-policy: the batch as the data loader gave it (teacher samples, prompt masked).
   On-policy: the student samples one completion per row of the batch's prompts with
   ``model.generate`` on its *current* weights (eval mode, no autograd graph; each DDP rank
   rolls out the prompts of its own shard, which the DistributedSampler already split).  These
   samples are never written to the generation cache: the weights change every step, so no
   cached sample would be on-policy for the next one.
3. The rollouts run in the sandbox through the task's judge (:func:`codistill.tasks.judge.judge_completions`);
   ``feedback`` turns each verdict into a sequence weight (:func:`feedback_weights`):
   ``none`` 1; ``failed_only`` 0 for a passing sample (it is left out of the mean); ``weighted``
   ``pass_weight`` for a passing one, 1 for a failing one.  ``train/rollout_pass_rate`` logs
   the share that passed.  ``seq_kd`` keeps the batch's teacher samples beside the rollouts.
4. The frozen teacher scores every position (no grad); the loss is the generalised JSD at
   ``beta`` (0 forward KL, 1 reverse KL) and ``temperature`` over completion tokens only
   (:func:`codistill.training.losses.kd_loss` with per-sequence weights).  A batch whose every
   weight is 0 gives a zero loss that still runs the backward, so DDP ranks stay in step.

Across tokenizers (``spec.cross`` ``uld`` / ``aligned``, from ``method.cross_tokenizer``): every
row -- the teacher's sample or the student's rollout -- is handled as *text*.  The rollout is
decoded and the (prompt, completion) text encoded through both tokenizers
(:func:`codistill.training.cross_tokenizer.encode_cross`, as cross-tokenizer KD does): the
student learns on the canonical tokenization of its own sample, the teacher scores the same
characters in its own tokens, and the paired completion positions carry the loss (ULD, or the
aligned hybrid with the generalised JSD at ``beta`` on the shared pieces), weighted per sequence
as above.

Rounds (``rollout_every`` = N > 1): rollouts are drawn once per round, in one generation call,
as TRL's ``steps_per_generation`` does.  The first on-policy step of a round samples its own
batch's prompts plus (N - 1) x B prompts drawn (seeded by seed, step and rank) from the training
examples, and judges them all; the next on-policy steps of the round (the N steps from its
start) take the pool's next B rows.  Those rows were sampled by the weights at the round's start:
up to N - 1 updates old (slightly off-policy), for one larger, better-batched sampling call per
round.  N = 1 is the per-step behaviour above.  A run resumed mid-round draws a new pool.

Time per part of the last step is kept in ``OnPolicyStudentLM.last_times`` (``rollout``: sampling,
``judge``: the sandbox, ``teacher``: the teacher's forward) for benchmarks/bench_onpolicy.py.
"""

from __future__ import annotations

import functools
import random
import time
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch

from codistill.training.data import IGNORE, PairDataset, collate, encode_example
from codistill.training.kd import KDSpec, KDStudentLM, paired
from codistill.training.losses import kd_loss
from codistill.training.resume import ResumableLoader

FEEDBACK = ("none", "failed_only", "weighted")


@dataclass
class OnPolicySpec(KDSpec):
    """What ``method=on_policy`` hands the trainer (a :class:`KDSpec`: the online teacher and
    the shared vocabulary, plus the rollout settings and what judging needs)."""

    loss: str = "jsd"
    lmbda: float = 0.5
    seq_kd: bool = False
    feedback: str = "none"
    pass_weight: float = 0.5
    max_new_tokens: int = 128
    rollout_temperature: float = 1.0
    rollout_every: int = 1  # rollouts drawn once per round of this many steps (a pool of N x B rows)
    fixed_length: bool = False  # rollouts of exactly max_new_tokens (no stop, no eos): benchmarks compare at one length
    seed: int = 0
    examples: list = field(default_factory=list)  # {"prompt", "completion", "problem": index}
    task: Any = None
    problems: list = field(default_factory=list)  # codistill Problems, by index
    rendered: list = field(default_factory=list)  # the student's zero-shot Prompt of each problem
    timeout_s: float = 5.0
    memory_mb: int = 1024
    teacher_tokenizer: Any = None  # across tokenizers (cross uld / aligned / projected): the teacher's tokenizer
    max_len: int = 512  # train.max_seq_len, for rows encoded in the step (across tokenizers; a round's pool)

    def make_modules(self, model, data, cfg, **speed):
        """The (data module, LightningModule) pair :func:`codistill.training.kd.kd_modules` hands on."""
        dm = OnPolicyDataModule(self.examples, data.tokenizer, batch_size=cfg.train.batch_size,
                                max_len=cfg.train.max_seq_len, max_new_tokens=self.max_new_tokens, seed=cfg.seed,
                                num_workers=cfg.train.num_workers)
        module = OnPolicyStudentLM(model, self, data.tokenizer, lr=cfg.train.lr,
                                   weight_decay=cfg.train.weight_decay, warmup_steps=cfg.train.warmup_steps,
                                   log_every_n_steps=cfg.trainer.log_every_n_steps, **speed)
        return dm, module


# --------------------------------------------------------------------------- pure parts
def on_policy_step(seed: int, epoch: int, batch_idx: int, lmbda: float) -> bool:
    """Whether step (epoch, batch_idx) is on-policy: a draw below ``lmbda`` from a generator
    seeded by the three (deterministic across processes and reruns)."""
    if lmbda >= 1.0:
        return True
    return random.Random(f"on_policy:{seed}:{epoch}:{batch_idx}").random() < lmbda


def feedback_weights(passed: list[bool], feedback: str, pass_weight: float = 0.5) -> list[float]:
    """One weight per rollout from its verdict: ``none`` 1; ``failed_only`` 0 if it passed (the
    PERsD idea, token-level: learn only where the student fails); ``weighted`` ``pass_weight``
    if it passed, else 1."""
    if feedback == "none":
        return [1.0] * len(passed)
    if feedback == "failed_only":
        return [0.0 if p else 1.0 for p in passed]
    if feedback == "weighted":
        return [pass_weight if p else 1.0 for p in passed]
    raise ValueError(f"method.feedback: {feedback!r} is not one of {list(FEEDBACK)}")


def completion_ids(new_tokens: list[int], end_ids: set[int]) -> list[int]:
    """The sampled tokens up to and including the first end token (eos/pad), none after it."""
    for t, tid in enumerate(new_tokens):
        if tid in end_ids:
            return new_tokens[:t + 1]
    return list(new_tokens)


def rollout_batch(prompts: list[list[int]], completions: list[list[int]], weights: list[float], *,
                  pad_id: int) -> dict:
    """A right-padded training batch of (prompt + sampled completion) rows: ``labels`` are the
    completion tokens (the prompt masked with IGNORE), ``weights`` ``[B, 1]`` one per row."""
    items = [{"input_ids": list(p) + list(c), "labels": [IGNORE] * len(p) + list(c)}
             for p, c in zip(prompts, completions)]
    out = collate(items, pad_id)
    out["weights"] = torch.tensor(weights, dtype=torch.float32).unsqueeze(1)
    return out


def concat_batches(a: dict, b: dict, pad_id: int) -> dict:
    """Rows of ``a`` then ``b`` (tensor keys), right-padded to the wider of the two."""
    width = max(a["input_ids"].shape[1], b["input_ids"].shape[1])
    fill = {"input_ids": pad_id, "labels": IGNORE, "attention_mask": 0}
    out = {}
    for k, v in fill.items():
        parts = [torch.nn.functional.pad(x[k], (0, width - x[k].shape[1]), value=v) for x in (a, b)]
        out[k] = torch.cat(parts)
    out["weights"] = torch.cat([a["weights"], b["weights"]])
    return out


class VocabCut:
    """A logits processor: ids from ``vocab_size`` on get probability 0."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[-1] > self.vocab_size:
            scores = scores.clone()
            scores[..., self.vocab_size:] = -float("inf")
        return scores


# --------------------------------------------------------------------------- data
def rollout_prompt_ids(tokenizer, prompt: str, *, max_len: int, max_new_tokens: int) -> list[int]:
    """The prompt the student rolls out from: its tokens, left-truncated to leave
    ``max_new_tokens`` of room in ``max_len``."""
    room = max(1, max_len - max_new_tokens)
    return tokenizer(prompt, add_special_tokens=False).input_ids[-room:]


def collate_prompts(batch: list[dict], pad_id: int) -> dict:
    """:func:`collate` of the teacher samples, plus each row's ``prompt_ids`` (a list), its
    ``prompt`` and ``completion`` text (lists) and ``problem`` index, and weights 1."""
    out = collate([{"input_ids": x["input_ids"], "labels": x["labels"]} for x in batch], pad_id)
    out["weights"] = torch.ones((len(batch), 1))
    out["prompt_ids"] = [x["prompt_ids"] for x in batch]
    out["prompt"] = [x.get("prompt", "") for x in batch]
    out["completion"] = [x.get("completion", "") for x in batch]
    out["problem"] = torch.tensor([x["problem"] for x in batch], dtype=torch.long)
    return out


class OnPolicyDataModule(pl.LightningDataModule):
    """Teacher samples (prompt masked: the loss covers completion tokens only) and, per row, the
    prompt the student rolls out from (left-truncated to leave ``max_new_tokens`` of room)."""

    def __init__(self, examples: list[dict], tokenizer, *, batch_size: int, max_len: int, max_new_tokens: int,
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        self.tokenizer, self.batch_size, self.seed, self.num_workers = tokenizer, batch_size, seed, num_workers
        self.items = []
        for x in examples:
            enc = encode_example(tokenizer, x["prompt"], x["completion"], max_len=max_len, mask_prompt=True)
            prompt = rollout_prompt_ids(tokenizer, x["prompt"], max_len=max_len, max_new_tokens=max_new_tokens)
            self.items.append({**enc, "prompt_ids": prompt, "problem": int(x["problem"]), "prompt": x["prompt"],
                               "completion": x["completion"]})
        random.Random(seed).shuffle(self.items)

    @property
    def n_tokens(self) -> int:
        return sum(len(x["input_ids"]) for x in self.items)

    def train_dataloader(self) -> ResumableLoader:
        t = self.tokenizer
        pad = t.pad_token_id if t.pad_token_id is not None else t.eos_token_id
        return ResumableLoader(PairDataset(self.items), batch_size=self.batch_size, shuffle=True,
                          num_workers=self.num_workers, collate_fn=functools.partial(collate_prompts, pad_id=pad),
                          generator=torch.Generator().manual_seed(self.seed))


# --------------------------------------------------------------------------- the module
class OnPolicyStudentLM(KDStudentLM):
    """The student trained by on-policy distillation; logs ``train/loss`` (= ``train/kd_loss``),
    ``train/onpolicy_fraction`` (on-policy steps so far / steps so far) and, on on-policy
    steps, ``train/rollout_pass_rate`` and ``train/rollout_tokens``."""

    def __init__(self, model, spec: OnPolicySpec, tokenizer, *, lr: float, weight_decay: float,
                 warmup_steps: int, **speed) -> None:
        super().__init__(model, spec, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, **speed)
        if spec.teacher is None:
            raise ValueError("on-policy distillation needs the teacher model (it scores the student's samples)")
        self.save_hyperparameters({"onpolicy_lmbda": spec.lmbda, "onpolicy_seq_kd": spec.seq_kd,
                                   "onpolicy_feedback": spec.feedback, "onpolicy_pass_weight": spec.pass_weight,
                                   "onpolicy_max_new_tokens": spec.max_new_tokens,
                                   "onpolicy_rollout_temperature": spec.rollout_temperature,
                                   "onpolicy_rollout_every": spec.rollout_every})
        self.tok = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.end_ids = {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
        self.steps = self.on_steps = 0
        self.last_times: dict[str, float] = {}
        self.last_rollout_tokens: list[int] = []  # tokens sampled per row in the last rollout
        self._batch_idx = 0
        self._pool: dict | None = None  # rollout_every > 1: the round's sampled, judged rows
        self._prompt_ids: dict[int, list[int]] = {}  # example index -> its prompt's token ids

    # ------------------------------------------------------------------ rollouts
    @torch.no_grad()
    def sample(self, prompts: list[list[int]]) -> list[list[int]]:
        """One completion per prompt from the student's current weights (token ids, cut after
        the first end token or the task's stop string).  Left-padded batch, eval mode, sampling
        seeded per (seed, epoch, batch, rank) without touching the training RNG."""
        from codistill import distributed
        from codistill.generation.hf import TailStopCriteria

        s = self.spec
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        kw = dict(max_new_tokens=s.max_new_tokens, pad_token_id=self.pad_id, eos_token_id=self.tok.eos_token_id)
        if s.rollout_temperature > 0:
            kw.update(do_sample=True, temperature=s.rollout_temperature, top_k=0, top_p=1.0)
        else:
            kw.update(do_sample=False)
        if s.fixed_length:
            kw["min_new_tokens"] = s.max_new_tokens
        stops = [] if s.fixed_length else list(getattr(s.task, "stop", ()) or ())
        if stops:
            from transformers import StoppingCriteriaList

            kw["stopping_criteria"] = StoppingCriteriaList([TailStopCriteria(self.tok, stops)])
        if s.vocab_size:  # never sample an id past the shared vocabulary (padded output rows): the teacher has none
            from transformers import LogitsProcessorList

            kw["logits_processor"] = LogitsProcessorList([VocabCut(s.vocab_size)])
        was_training = self.model.training
        self.model.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(hash((s.seed, self.current_epoch, self._batch_idx, distributed.rank())) % 2 ** 31)
                out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                          use_cache=True, **kw)
        finally:
            self.model.train(was_training)
        return [completion_ids(row, self.end_ids) for row in out[:, width:].tolist()]

    def judge(self, problems: list[int], texts: list[str]) -> list[bool]:
        """Run each rollout in the sandbox against its problem's weak label or tests."""
        from codistill.tasks.judge import judge_completions

        s = self.spec
        judged = judge_completions(s.task, [s.problems[i] for i in problems], [s.rendered[i] for i in problems],
                                   [[t] for t in texts], timeout_s=s.timeout_s, memory_mb=s.memory_mb)
        return [js[0].passed for js in judged]

    def example_prompt_ids(self, i: int) -> list[int]:
        """Example ``i``'s prompt as the data module encodes it (left-truncated to leave room)."""
        if i not in self._prompt_ids:
            self._prompt_ids[i] = rollout_prompt_ids(self.tok, self.spec.examples[i]["prompt"], max_len=self.spec.max_len,
                                                     max_new_tokens=self.spec.max_new_tokens)
        return self._prompt_ids[i]

    def draw(self, prompt_ids: list[list[int]], prompts: list[str], problems: list[int]) -> dict:
        """Sample one completion per prompt and judge it: the rows' ``prompt_ids``, ``prompt``,
        ``problem``, ``comps`` (token ids), ``texts`` and ``passed``, and the two timings."""
        t0 = time.perf_counter()
        comps = self.sample(prompt_ids)
        t1 = time.perf_counter()
        texts = self.tok.batch_decode(comps, skip_special_tokens=True)
        # judged with feedback=none too: train/rollout_pass_rate shows the student improving
        passed = self.judge(problems, texts)
        return {"prompt_ids": list(prompt_ids), "prompt": list(prompts), "problem": list(problems), "comps": comps,
                "texts": texts, "passed": passed, "times": (t1 - t0, time.perf_counter() - t1)}

    def rows_for(self, batch: dict) -> tuple[dict, tuple[float, float]]:
        """This step's sampled rows: drawn now for the batch's prompts (``rollout_every`` 1), or the
        next B rows of the round's pool, drawn when a round starts (see the module docstring)."""
        from codistill import distributed

        s = self.spec
        bs = len(batch["prompt_ids"])
        own = (batch["prompt_ids"], list(batch["prompt"]), batch["problem"].tolist())
        if s.rollout_every <= 1:
            rows = self.draw(*own)
            return rows, rows["times"]
        times = (0.0, 0.0)
        pool = self._pool
        if pool is None or pool["at"] >= len(pool["problem"]) or self.steps - pool["born"] >= s.rollout_every:
            rng = random.Random(f"on_policy_pool:{s.seed}:{self.steps}:{distributed.rank()}")
            picks = [rng.randrange(len(s.examples)) for _ in range((s.rollout_every - 1) * bs)]
            pool = self.draw(own[0] + [self.example_prompt_ids(i) for i in picks],
                             own[1] + [s.examples[i]["prompt"] for i in picks],
                             own[2] + [int(s.examples[i]["problem"]) for i in picks])
            pool.update(born=self.steps, at=0)
            self._pool, times = pool, pool["times"]
        a, b = pool["at"], pool["at"] + bs
        pool["at"] = b
        keys = ("prompt_ids", "prompt", "problem", "comps", "texts", "passed")
        return {k: pool[k][a:b] for k in keys}, times

    def rollout(self, batch: dict) -> tuple[dict, dict]:
        """The on-policy batch made from ``batch``'s prompts (or the round's pool), and its figures."""
        s = self.spec
        rows, (t_sample, t_judge) = self.rows_for(batch)
        comps, texts, passed = rows["comps"], rows["texts"], rows["passed"]
        weights = feedback_weights(passed, s.feedback, s.pass_weight)
        if s.cross != "shared":  # across tokenizers: rows as text, through both tokenizers
            prompts, completions = list(rows["prompt"]), list(texts)
            if s.seq_kd:
                prompts, completions = prompts + list(batch["prompt"]), completions + list(batch["completion"])
                weights = weights + [1.0] * len(batch["prompt"])
            new = self.cross_batch(prompts, completions, weights)
        else:
            new = rollout_batch(rows["prompt_ids"], comps, weights, pad_id=self.pad_id)
            new = {k: v.to(self.device) for k, v in new.items()}
            if s.seq_kd:  # the batch's teacher samples beside the student's own
                new = concat_batches(new, {k: batch[k] for k in ("input_ids", "labels", "attention_mask", "weights")},
                                     self.pad_id)
        self.last_times.update(rollout=t_sample, judge=t_judge)
        self.last_rollout_tokens = [len(c) for c in comps]
        return new, {"train/rollout_tokens": float(sum(len(c) for c in comps)) / len(comps),
                     "train/rollout_pass_rate": sum(passed) / len(passed)}

    def cross_batch(self, prompts: list[str], completions: list[str], weights: list[float]) -> dict:
        """Across tokenizers: the (prompt, completion) texts through both tokenizers, their completion
        positions paired (:func:`~codistill.training.cross_tokenizer.encode_cross`), collated as
        cross-tokenizer KD batches are (:func:`~codistill.training.kd.collate_cross`), with ``weights``."""
        from codistill.training.cross_tokenizer import encode_cross
        from codistill.training.kd import collate_cross

        s = self.spec
        items = []
        for p, c in zip(prompts, completions):
            x = encode_cross(self.tok, s.teacher_tokenizer, p, c, max_len=s.max_len, mask_prompt=True, mode=s.cross)
            items.append({**x.student, "teacher_input_ids": x.teacher["input_ids"], "s_pos": x.s_pos, "t_pos": x.t_pos})
        out = collate_cross(items, self.pad_id, s.teacher_pad_id)
        out["weights"] = torch.tensor(weights, dtype=torch.float32).unsqueeze(1)
        return {k: v.to(self.device) for k, v in out.items()}

    # ------------------------------------------------------------------ the loss
    def gkd_loss(self, batch: dict) -> torch.Tensor:
        """Generalised JSD (``beta``) at ``temperature`` over the labelled (completion) tokens,
        each sequence weighted by ``batch["weights"]``; the teacher runs without grad.  Across
        tokenizers: :meth:`cross_gkd_loss`."""
        s = self.spec
        if s.cross != "shared":
            return self.cross_gkd_loss(batch)
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            use_cache=False).logits
        t0 = time.perf_counter()
        with torch.no_grad():
            t_logits = self.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                    use_cache=False).logits
        self.last_times["teacher"] = time.perf_counter() - t0
        return kd_loss(logits[:, :-1, :s.vocab_size], t_logits[:, :-1, :s.vocab_size], batch["labels"][:, 1:],
                       kind="jsd", beta=s.beta, temperature=s.temperature, weights=batch["weights"])

    def cross_gkd_loss(self, batch: dict) -> torch.Tensor:
        """Across tokenizers: the student's logits at its paired positions (``s_pos``) against the
        teacher's at the same text (``t_pos`` in the teacher's tokens), through
        :meth:`~codistill.training.kd.KDStudentLM.cross_kd` with the generalised JSD at ``beta``
        (ULD: ``beta`` unused), each position weighted by its sequence's weight."""
        s = self.spec
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            use_cache=False).logits
        m = batch["pos_mask"]
        student = paired(logits, batch["s_pos"], m)[..., :s.vocab_size]
        weights = torch.broadcast_to(batch["weights"], m.shape)[m]
        t0 = time.perf_counter()
        t_logp = self.teacher_paired_logp(batch)
        self.last_times["teacher"] = time.perf_counter() - t0
        return self.cross_kd(student, t_logp, None, kind="jsd", weights=weights)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        s = self.spec
        self._batch_idx = batch_idx
        self.last_times = {"rollout": 0.0, "judge": 0.0}
        on = on_policy_step(s.seed, self.current_epoch, batch_idx, s.lmbda)
        self.steps += 1
        self.on_steps += int(on)
        bs = batch["input_ids"].shape[0]
        figures = {}
        if on:
            batch, figures = self.rollout(batch)
        elif s.cross != "shared":  # the teacher's samples, through both tokenizers
            batch = self.cross_batch(list(batch["prompt"]), list(batch["completion"]), [1.0] * bs)
        loss = self.gkd_loss(batch)
        figures.update({"train/onpolicy_fraction": self.on_steps / self.steps,
                        "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"]})
        self._last.update({"train/loss": loss.detach(), "train/kd_loss": loss.detach(),
                           **{k: torch.tensor(float(v)) for k, v in figures.items() if k != "train/lr"}})
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/kd_loss", loss, batch_size=bs)
        self.log_dict(figures, batch_size=bs, sync_dist="train/rollout_pass_rate" in figures)
        return loss


__all__ = ["FEEDBACK", "OnPolicyDataModule", "OnPolicySpec", "OnPolicyStudentLM", "collate_prompts",
           "completion_ids", "concat_batches", "feedback_weights", "on_policy_step",
           "rollout_batch", "rollout_prompt_ids"]
