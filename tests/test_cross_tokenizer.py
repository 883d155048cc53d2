"""KD across tokenizers: the span alignment on hand-made and real tokenizations, the piece map,
the ULD / aligned losses against their formulas, and a real KD fit across two tokenizers."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from codistill.training.cross_tokenizer import (align_spans, aligned_positions, clean_cuts, encode_cross,
                                                piece_map, resolve_mode)
from codistill.training.losses import aligned_kd_loss, divergence, sorted_probs, uld_distance, uld_loss

TINY_TOK = Path(__file__).resolve().parents[1] / "src" / "codistill" / "assets" / "tiny_tokenizer"


def spans(*pieces: str) -> list[tuple[int, int]]:
    """Contiguous character spans of pieces that concatenate to the text."""
    out, at = [], 0
    for p in pieces:
        out.append((at, at + len(p)))
        at += len(p)
    return out


# --------------------------------------------------------------------------- alignment (hand-made)
def test_identical_tokenizations_align_one_to_one():
    s = spans("def", " f", "():")
    assert align_spans(s, s) == [([0], [0]), ([1], [1]), ([2], [2])]


def test_a_merge_on_one_side_is_one_group():
    # student: "    return" as 2 tokens; teacher: one token
    s, t = spans("\n", "   ", " return", " 1"), spans("\n   ", " return", " 1")
    assert align_spans(s, t) == [([0, 1], [0]), ([2], [1]), ([3], [2])]


def test_crossing_splits_group_until_a_common_cut():
    # "abcd": student ab|cd, teacher a|bc|d -> no common cut before 4
    assert align_spans(spans("ab", "cd"), spans("a", "bc", "d")) == [([0, 1], [0, 1, 2])]


def test_whitespace_runs_split_differently():
    s, t = spans("x", "  ", "  ", "y"), spans("x", "   ", " y")
    assert align_spans(s, t) == [([0], [0]), ([1, 2, 3], [1, 2])]


def test_bytes_of_one_character_never_end_a_group():
    # byte-level BPE: two tokens share the span of "你" (57, 58); the other side has it whole
    s = [(0, 1), (1, 2), (1, 2), (2, 3)]
    t = [(0, 1), (1, 2), (2, 3)]
    assert clean_cuts(s) == {1: 0, 2: 2, 3: 3}
    assert align_spans(s, t) == [([0], [0]), ([1, 2], [1]), ([3], [2])]


def test_special_tokens_and_truncation():
    # a chat-template token covering its own text; an empty-span token joins the group before it
    s = spans("<|im_end|>", "\n", "x") + [(12, 12)]
    t = spans("<|im_end|>", "\nx")
    assert align_spans(s, t) == [([0], [0]), ([1, 2, 3], [1])]
    # one side truncated: tokens past the last common cut are in no group
    assert align_spans(spans("ab", "c", "d"), spans("ab", "c")) == [([0], [0]), ([1], [1])]
    assert aligned_positions([([0, 1], [0]), ([2], [1, 2])]) == ([0, 2], [0, 1])


def test_piece_map_matches_strings_and_eos_by_role():
    t_vocab = {"a": 0, "Ġb": 1, "<|endoftext|>": 2, "zz": 3}
    s_vocab = {"Ġb": 5, "a": 7, "<|im_end|>": 1, "q": 0}
    t2s = piece_map(t_vocab, s_vocab, 5, same=[(2, 1)])
    assert t2s.tolist() == [7, 5, 1, -1, -1]  # id 4: padding past the teacher's tokenizer


# --------------------------------------------------------------------------- real tokenizers
def _model_dir(prefix: str) -> Path:
    from codistill.models import default_cache_dir

    found = sorted((Path(default_cache_dir()) / "models").glob(prefix + "-*"))
    if not found or not (found[0] / "tokenizer.json").exists():
        pytest.skip(f"converted {prefix} not in the model cache (make install)")
    return found[0]


@pytest.fixture(scope="module")
def real_pair():
    from transformers import AutoTokenizer

    return (AutoTokenizer.from_pretrained(str(_model_dir("smollm2-135m-instruct"))),
            AutoTokenizer.from_pretrained(str(_model_dir("qwen2.5-coder-0.5b-instruct"))))


TEXTS = ["\n    total = 12 * 3.5  # naïve\n\n\treturn {'a': [1, 2]}  ∑ 你好 🙂\n",
         "def solution():\n    apples = 23\n    return apples - 20 + 6\n```"]


@pytest.mark.packaged_models
@pytest.mark.parametrize("text", TEXTS)
def test_real_tokenizers_groups_cover_the_same_text(real_pair, text):
    s_tok, t_tok = real_pair
    s = s_tok(text, add_special_tokens=False, return_offsets_mapping=True)
    t = t_tok(text, add_special_tokens=False, return_offsets_mapping=True)
    groups = align_spans(s.offset_mapping, t.offset_mapping)
    s_text = [s_tok.decode([s.input_ids[i] for i in g]) for g, _ in groups]
    t_text = [t_tok.decode([t.input_ids[j] for j in g]) for _, g in groups]
    assert s_text == t_text and "".join(s_text) == text  # every group: the same characters
    assert [i for g, _ in groups for i in g] == list(range(len(s.input_ids)))
    assert [j for _, g in groups for j in g] == list(range(len(t.input_ids)))
    assert sum(len(a) == len(b) == 1 for a, b in groups) >= 0.6 * len(groups)  # mostly one to one


@pytest.mark.packaged_models
def test_real_pair_resolves_to_aligned_and_shares_most_pieces(real_pair):
    from codistill.training.cross_tokenizer import tokenizer_piece_map
    from codistill.training.vocab import TokenizerMismatch

    s_tok, t_tok = real_pair
    assert resolve_mode("auto", t_tok, s_tok) == ("aligned", 0)
    assert resolve_mode("uld", t_tok, s_tok) == ("uld", 0)
    with pytest.raises(TokenizerMismatch):
        resolve_mode("refuse", t_tok, s_tok)
    t2s = tokenizer_piece_map(t_tok, s_tok, len(t_tok))
    assert t2s[t_tok.eos_token_id] == s_tok.eos_token_id
    assert t2s[t_tok.convert_tokens_to_ids("Ġreturn")] == s_tok.convert_tokens_to_ids("Ġreturn")
    assert (t2s >= 0).sum() > 20000


@pytest.mark.packaged_models
@pytest.mark.parametrize("mode", ["uld", "aligned"])
def test_encode_cross_pairs_positions_predicting_the_same_text(real_pair, mode):
    s_tok, t_tok = real_pair
    prompt, completion = "<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n", TEXTS[1]
    c = encode_cross(s_tok, t_tok, prompt, completion, max_len=128, mask_prompt=True, mode=mode)
    s_ids, t_ids = c.student["input_ids"], c.teacher["input_ids"]
    assert s_ids[-1] == s_tok.eos_token_id and t_ids[-1] == t_tok.eos_token_id
    assert len(c.s_pos) == len(c.t_pos) > 0
    s_start = len(s_ids) - len(s_tok(completion, add_special_tokens=False).input_ids) - 1
    t_start = len(t_ids) - len(t_tok(completion, add_special_tokens=False).input_ids) - 1
    assert c.s_pos[0] == s_start - 1 and c.t_pos[0] == t_start - 1  # both predict the completion's start
    if mode == "aligned":  # each pair predicts text starting at the same character
        for p, q in zip(c.s_pos, c.t_pos):
            assert len(s_tok.decode(s_ids[s_start:p + 1])) == len(t_tok.decode(t_ids[t_start:q + 1]))
        assert (c.s_pos[-1], c.t_pos[-1]) == (len(s_ids) - 2, len(t_ids) - 2)  # eos <-> eos
    else:
        n = min(len(s_ids) - s_start, len(t_ids) - t_start)
        assert len(c.s_pos) == n


# --------------------------------------------------------------------------- losses
def _logp(*shape, seed=0):
    return torch.log_softmax(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2, -1)


def test_uld_formula_zero_symmetric_bounded_and_order_free():
    p, q = _logp(5, 7), _logp(5, 11, seed=1)
    d = uld_distance(sorted_probs(p)[0], sorted_probs(q)[0])
    expect = [sum(abs(a - b) for a, b in zip(sorted(x.exp().tolist(), reverse=True) + [0.0] * 4,
                                               sorted(y.exp().tolist(), reverse=True)))
              for x, y in zip(p, q)]
    torch.testing.assert_close(d, torch.tensor(expect), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(uld_distance(sorted_probs(q)[0], sorted_probs(p)[0]), d)  # symmetric
    assert ((d >= 0) & (d <= 2)).all()
    perm = p[:, torch.randperm(7, generator=torch.Generator().manual_seed(3))]
    assert uld_loss(p, perm).item() < 1e-6  # a relabelled vocabulary is the same distribution
    assert uld_loss(p, q).item() == pytest.approx(d.mean().item(), rel=1e-5)
    one_hot_a, one_hot_b = torch.tensor([[0.0, -1e4]]), torch.tensor([[-1e4, -1e4, 0.0]])
    assert uld_loss(one_hot_a, one_hot_b).item() < 1e-6  # both certain: sorted, equal
    assert uld_loss(one_hot_a, torch.log(torch.full((1, 4), 0.25))).item() == pytest.approx(1.5)


def test_uld_top_k_with_tails_is_exact_at_full_k_and_a_lower_bound_below():
    s, t = _logp(6, 9), _logp(6, 13, seed=2)
    full = uld_loss(s, t)
    topk_all = torch.topk(t, 13, dim=-1).values
    torch.testing.assert_close(uld_loss(s, topk_all, complete=False), full)
    for k in (1, 3, 8):
        assert uld_loss(s, torch.topk(t, k, dim=-1).values, complete=False) <= full + 1e-6


def test_aligned_loss_is_the_shared_divergence_plus_uld_of_the_rest():
    # teacher vocab 5, student vocab 4; pieces: t0<->s2, t1<->s0, t3<->s3; t2, t4 and s1 unshared
    t2s = torch.tensor([2, 0, -1, 3, -1])
    s_logits, t_logp = _logp(3, 4, seed=4) * 1.5, _logp(3, 5, seed=5)
    got = aligned_kd_loss(s_logits, t_logp, None, t2s, kind="forward_kl")
    s_logp = torch.log_softmax(s_logits, -1)
    ps, pt = s_logp.exp(), t_logp.exp()
    qs = torch.stack([ps[:, 2], ps[:, 0], ps[:, 3], ps[:, 1]], -1)  # shared + rest (= s1)
    qt = torch.stack([pt[:, 0], pt[:, 1], pt[:, 3], pt[:, 2] + pt[:, 4]], -1)
    kl = (qt * (qt.log() - qs.log())).sum(-1)
    un_t = torch.sort(torch.stack([pt[:, 2], pt[:, 4]], -1), -1, True).values
    w1 = (un_t[:, 0] - ps[:, 1]).abs() + un_t[:, 1]
    torch.testing.assert_close(got, (kl + w1).mean(), rtol=1e-5, atol=1e-6)
    # identical distributions over identical vocabularies: 0; the same as the dense divergence
    ident = torch.arange(4)
    assert aligned_kd_loss(s_logp, s_logp, None, ident).item() < 1e-6
    t4 = _logp(3, 4, seed=6)
    torch.testing.assert_close(aligned_kd_loss(s_logits, t4, None, ident, kind="jsd"),
                               divergence(s_logp, t4, "jsd").mean(), rtol=1e-5, atol=1e-6)
    # a cached top-k gives the same entries by id (also with more unshared student ids than
    # teacher entries); gradients stay finite with nothing shared
    ids = torch.topk(t_logp, 5, -1).indices
    torch.testing.assert_close(aligned_kd_loss(s_logits, torch.gather(t_logp, -1, ids), ids, t2s), got,
                               rtol=1e-5, atol=1e-6)
    wide, t2s_few = _logp(3, 9, seed=7), torch.tensor([2, -1, -1, 3, -1])  # 7 unshared student ids > 5
    torch.testing.assert_close(aligned_kd_loss(wide, torch.gather(t_logp, -1, ids), ids, t2s_few),
                               aligned_kd_loss(wide, t_logp, None, t2s_few), rtol=1e-5, atol=1e-6)
    x = s_logits.clone().requires_grad_(True)
    aligned_kd_loss(x, t_logp[:, [2, 4]], torch.tensor([[2, 4]] * 3), t2s).backward()
    assert torch.isfinite(x.grad).all()


def test_memory_estimate_counts_the_teachers_logits_and_the_uld_sorts():
    """Qwen2.5 (152k) teacher online -> SmolLM2 (49k) student, batch 4 x 384: ~1.9 GiB of teacher
    logits and their log-softmax, ~3.4 GiB more for the sorts -- more than the 135M student's weights."""
    from codistill.training.memory import GIB, kd_logit_bytes

    kw = dict(batch=4, seq_len=384, teacher_vocab=151936, student_vocab=49152)
    shared = kd_logit_bytes(online=True, cross=False, **kw)
    cross = kd_logit_bytes(online=True, cross=True, **kw)
    assert shared == 4 * 384 * 151936 * 8 and 1.5 * GIB < shared < 2 * GIB
    assert cross == shared + 4 * 384 * (151936 + 49152) * 12
    assert kd_logit_bytes(online=False, cross=False, **kw) == 0  # a cached top-k: negligible
    assert 0 < kd_logit_bytes(online=False, cross=True, **kw) < shared


# --------------------------------------------------------------------------- a tiny model on another tokenizer
def other_tokenizer(tmp_path: Path) -> Path:
    """The tiny tokenizer cut to its first 100 merges (the tokens no merge makes dropped) with
    its ids reversed: another vocabulary, other ids, other splits of the same text (every byte
    is still a token)."""
    out = tmp_path / "other_tok"
    shutil.copytree(TINY_TOK, out)
    d = json.loads((out / "tokenizer.json").read_text())
    m = d["model"]
    m["merges"] = m["merges"][:100]
    made = {a + b for a, b in m["merges"]}
    specials = {a["content"] for a in d["added_tokens"]}
    keep = [t for t, _ in sorted(m["vocab"].items(), key=lambda x: x[1])
            if len(t) == 1 or t in made or t in specials]
    m["vocab"] = {t: i for i, t in enumerate(reversed(keep))}
    for a in d["added_tokens"]:
        a["id"] = m["vocab"][a["content"]]
    (out / "tokenizer.json").write_text(json.dumps(d))
    return out


def tiny_teacher_dir(tmp_path: Path, seed: int = 1) -> Path:
    """A tiny random Llama on :func:`other_tokenizer`, saved as a local checkpoint."""
    from transformers import AutoTokenizer

    from codistill.config import TinyConfig
    from codistill.models.tiny import build_tiny_model

    tok_dir = other_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    model = build_tiny_model(TinyConfig(init_seed=seed), tok, torch.float32)
    out = tmp_path / "other_teacher"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_the_other_tiny_tokenizer_is_another_vocabulary_of_the_same_text(tmp_path):
    from transformers import AutoTokenizer

    from codistill.training.vocab import TokenizerMismatch, shared_vocab_size

    a, b = AutoTokenizer.from_pretrained(str(TINY_TOK)), AutoTokenizer.from_pretrained(str(other_tokenizer(tmp_path)))
    text = TEXTS[1]
    assert a.decode(a(text).input_ids) == b.decode(b(text).input_ids) == text
    assert len(a(text).input_ids) < len(b(text).input_ids)
    with pytest.raises(TokenizerMismatch):
        shared_vocab_size(b, a)
    assert resolve_mode("auto", b, a) == ("aligned", 0)


@pytest.mark.parametrize("mode", ["uld", "aligned", "projected"])
def test_kd_across_tokenizers_trains_online_and_cached_alike(compose, tmp_path, mode):
    """A real fit (Lightning, the method's data path) across two tokenizers lowers the KD term;
    the cached store (k = the teacher's vocabulary) gives the online loss exactly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codistill.config import validate
    from codistill.models.tiny import build_tiny_model, load_tiny_tokenizer
    from codistill.config import TinyConfig
    from codistill.training import train_student
    from codistill.training.cross_tokenizer import tokenizer_piece_map, tokenizer_projection_map
    from codistill.training.kd import (CrossDataset, KDSpec, KDStudentLM, TopKReader, collate_cross, precompute_topk,
                                       sequence_key)

    rc = validate(compose("experiment=smoke", "method=kd", "train.lr=3e-2", "train.epochs=10", "train.batch_size=3",
                          "trainer.precision=32-true", "train.checkpoint_every_n_epochs=0", "method.alpha=1.0"))
    t_dir = tiny_teacher_dir(tmp_path)
    teacher, t_tok = AutoModelForCausalLM.from_pretrained(str(t_dir)), AutoTokenizer.from_pretrained(str(t_dir))
    with torch.no_grad():
        teacher.model.norm.weight.mul_(30)  # a confident teacher
    s_tok = load_tiny_tokenizer()
    student = build_tiny_model(TinyConfig(init_seed=0), s_tok, torch.float32)
    pairs = [{"prompt": f"# what is {a} + {b}?\ndef solution():", "completion": f"\n    return {a} + {b}\n"}
             for a, b in [(1, 2), (30, 4), (5, 600), (7, 8), (9, 10), (11, 12)]]
    cross, t_items = {}, []
    for x in pairs:
        c = encode_cross(s_tok, t_tok, x["prompt"], x["completion"], max_len=64, mask_prompt=True, mode=mode)
        cross[sequence_key(c.student["input_ids"])] = {"teacher_input_ids": c.teacher["input_ids"],
                                                       "s_pos": c.s_pos, "t_pos": c.t_pos}
        t_items.append(c.teacher)
    vs, vt = len(s_tok), len(t_tok)
    kw = dict(cross=mode, vocab_size=vs, teacher_vocab_size=vt, cross_items=cross, teacher_pad_id=t_tok.pad_token_id,
              t2s={"aligned": lambda: torch.from_numpy(tokenizer_piece_map(t_tok, s_tok, vt)),
                   "projected": lambda: torch.from_numpy(tokenizer_projection_map(t_tok, s_tok, vt)),
                   "uld": lambda: None}[mode](),
              alpha=1.0)
    store, _ = precompute_topk(teacher, t_items, root=tmp_path, teacher_id="other", k=vt, temperature=1.0,
                               vocab_size=vt, pad_id=t_tok.pad_token_id, mode=mode)
    s_items = [encode_cross(s_tok, t_tok, x["prompt"], x["completion"], max_len=64, mask_prompt=True,
                            mode=mode).student for x in pairs]
    ds = CrossDataset(s_items, cross, TopKReader(store))
    batch = collate_cross([ds[i] for i in range(6)], pad_id=s_tok.pad_token_id, teacher_pad_id=t_tok.pad_token_id)
    online = KDStudentLM(student, KDSpec(teacher=teacher, **kw), lr=1e-3, weight_decay=0.0, warmup_steps=0)
    cached = KDStudentLM(student, KDSpec(**kw), lr=1e-3, weight_decay=0.0, warmup_steps=0)
    with torch.no_grad():
        before, c_before = online.losses(batch)["kd"].item(), cached.losses(batch)["kd"].item()
    assert before > 0 and c_before == pytest.approx(before, rel=1e-4)
    out = train_student(student, s_tok, pairs, rc, tmp_path, [], kd=KDSpec(teacher=teacher, **kw))
    with torch.no_grad():
        after = online.losses(batch)["kd"].item()
    assert out["train/steps"] == 20 and after < 0.8 * before, (before, after)
    assert not any(p.grad is not None for p in teacher.parameters())


def test_cli_kd_across_tokenizers_runs_ok(tmp_path):
    """`codistill experiment=smoke method=kd` with a teacher of another tokenizer (auto -> aligned),
    online and cached; refuse keeps the early error."""
    from conftest import run_cli

    t_dir = tiny_teacher_dir(tmp_path)
    base = ["experiment=smoke", "method=kd", "teacher.source=local", f"teacher.path={t_dir}", "teacher.name=other",
            "eval.baseline=false", "eval.n_samples=0", "eval.k=[1]", "method.filter=false", "dataset.train_size=2", "logger=csv"]
    env = {"CODISTILL_CACHE": str(tmp_path / "cache")}
    for name, more in (("online", []), ("cached", ["method.teacher_logits=cached", "method.top_k=8"])):
        p = run_cli(base + more + [f"hydra.run.dir={tmp_path / name}"], cwd=tmp_path, env=env)
        assert p.returncode == 0, p.stderr[-3000:]
        m = json.loads((tmp_path / name / "metrics.json").read_text())
        assert m["status"] == "ok" and m["kd/cross_tokenizer"] == "aligned"
        assert m["kd/cross_positions"] > 0 and m["train/final_kd_loss"] > 0
        assert m["kd/vocab_size"] == 1536 and m["kd/teacher_vocab_size"] == 360
    p = run_cli(base + ["method.cross_tokenizer=refuse", f"hydra.run.dir={tmp_path / 'refuse'}"], cwd=tmp_path,
                env=env)
    assert p.returncode != 0
    m = json.loads((tmp_path / "refuse" / "metrics.json").read_text())
    assert "TokenizerMismatch" in m["error"]


@pytest.mark.slow
@pytest.mark.packaged_models
def test_demo_kd_on_the_default_pair_runs_ok(tmp_path):
    """`codistill experiment=demo method=kd`: Qwen2.5-Coder-0.5B teaches SmolLM2-135M across
    tokenizers (auto -> aligned, teacher online), at tiny sizes; a cold generation cache."""
    from conftest import run_cli

    models = _model_dir("qwen2.5-coder-0.5b-instruct").parent
    _model_dir("smollm2-135m-instruct")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(models)  # the converted models; everything else cold
    run_dir = tmp_path / "run"
    p = run_cli(["experiment=demo", "method=kd", "method.filter=false", "dataset.train_size=2", "dataset.test_size=2",
                 "sampling.n=2", "sampling.max_new_tokens=48", "train.epochs=1", "train.checkpoint_every_n_epochs=1",
                 "eval.baseline=false", "eval.max_new_tokens=32", "logger=csv", f"hydra.run.dir={run_dir}"],
                cwd=tmp_path, env={"CODISTILL_CACHE": str(cache)})
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok" and m["kd/cross_tokenizer"] == "aligned" and m["kd/teacher_logits"] == "online"
    assert m["data/n_kept"] == 4 and m["kd/cross_positions"] > 0 and m["kd/shared_pieces"] > 20000
    assert m["train/final_kd_loss"] > 0 and m["train/steps"] == 1


@pytest.mark.parametrize("loss", ["uld", "aligned"])
def test_position_weights_scale_and_drop_positions(loss):
    """On-policy feedback weighs positions: weights 1 give the plain mean, weight 0 leaves a position
    out (the mean of the rest), an all-zero batch gives 0 with a graph."""
    g = torch.Generator().manual_seed(0)
    student = torch.randn(4, 12, generator=g, requires_grad=True)
    t_logp = torch.log_softmax(torch.randn(4, 10, generator=g), dim=-1)
    t2s = torch.tensor([0, 1, 2, 3, 4, -1, -1, 7, 8, -1])

    def f(s, t, w=None):
        if loss == "uld":
            return uld_loss(s, t, weights=w)
        return aligned_kd_loss(s, t, None, t2s, kind="jsd", beta=0.5, weights=w)

    torch.testing.assert_close(f(student, t_logp, torch.ones(4)), f(student, t_logp))
    torch.testing.assert_close(f(student, t_logp, torch.tensor([1.0, 0.0, 1.0, 0.0])),
                               f(student[[0, 2]], t_logp[[0, 2]]))
    zero = f(student, t_logp, torch.zeros(4))
    assert zero.item() == 0.0 and zero.requires_grad



# --------------------------------------------------------------------------- first-token projection
def test_projection_map_keeps_shared_pieces_and_maps_the_rest_to_their_first_student_token():
    from codistill.training.cross_tokenizer import projection_map

    assert projection_map(np.array([-1, 5, -1, 7]), [3, 9, -1, 2]).tolist() == [3, 5, -1, 7]


def test_tokenizer_projection_map_reaches_every_piece_of_another_vocabulary(tmp_path):
    from transformers import AutoTokenizer

    from codistill.training.cross_tokenizer import tokenizer_piece_map, tokenizer_projection_map

    s_tok, t_tok = AutoTokenizer.from_pretrained(str(TINY_TOK)), AutoTokenizer.from_pretrained(str(other_tokenizer(tmp_path)))
    vt = len(t_tok)
    pieces, proj = tokenizer_piece_map(t_tok, s_tok, vt), tokenizer_projection_map(t_tok, s_tok, vt)
    shared = pieces >= 0
    assert (proj[shared] == pieces[shared]).all()  # a shared piece maps to itself
    special = set(t_tok.all_special_ids) - {t_tok.eos_token_id}
    normal = [i for i in range(vt) if i not in special and t_tok.decode([i])]
    assert all(proj[i] >= 0 for i in normal)  # every other piece reaches the student
    for i in normal:  # ... at the student token its text begins with
        assert proj[i] == s_tok(t_tok.decode([i]), add_special_tokens=False).input_ids[0] or shared[i]


def test_projected_loss_vanishes_on_the_projected_teacher_and_cached_matches_dense():
    from codistill.training.losses import projected_kd_loss

    g = torch.Generator().manual_seed(0)
    t_logp = torch.log_softmax(torch.randn(5, 12, generator=g) * 2, dim=-1)  # teacher over 12 ids
    t2s = torch.tensor([0, 1, 2, 3, 0, 1, 4, 5, 6, 6, 7, 2])  # many teacher pieces share a student token
    q = torch.zeros(5, 9).scatter_add_(-1, t2s.expand(5, -1), t_logp.exp())  # student has 9 ids; 8 unreached
    same = q.clamp(min=1e-30).log()
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        assert projected_kd_loss(same, t_logp, None, t2s, kind=kind).item() == pytest.approx(0.0, abs=1e-5)
        other = torch.randn(5, 9, generator=g)
        loss = projected_kd_loss(other, t_logp, None, t2s, kind=kind)
        assert loss.item() > 1e-3 and torch.isfinite(loss)
        ids = torch.arange(12).expand(5, -1)  # the cached form with k = the whole vocabulary
        torch.testing.assert_close(projected_kd_loss(other, t_logp, ids, t2s, kind=kind), loss)
    # a top-k teacher: its tail is a rest bucket, compared with the student's mass outside the reached ids
    top = torch.topk(t_logp, 4, dim=-1)
    part = projected_kd_loss(same, top.values, top.indices, t2s)
    assert torch.isfinite(part) and part.item() < projected_kd_loss(torch.zeros(5, 9), top.values, top.indices, t2s).item()
