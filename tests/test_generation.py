import warnings

import pytest

from codistill.config import ModelConfig, SamplingConfig, TinyConfig
from codistill.generation import generate, generate_each, open_cache
from codistill.generation.hf import HFBackend


@pytest.fixture(scope="module")
def tiny():
    from codistill.models import load_model, load_tokenizer

    cfg = ModelConfig(name="tiny", source="tiny", chat=False, dtype="float32",
                      tiny=TinyConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128))
    return load_model(cfg, "/nonexistent-cache"), load_tokenizer(cfg, "/nonexistent-cache")


PROMPTS = ["def add(a, b):\n    return", "# Question: Tom has 3 apples and buys 4 more.\ndef solution():",
           "x = 1"]


def test_shared_prefill_matches_plain_generation(tiny):
    model, tok = tiny
    s = SamplingConfig(n=1, temperature=0.0, max_new_tokens=12)
    s.n = 3  # greedy with n>1: every sample must equal the single greedy continuation
    backend = HFBackend(model, tok, batch_size=9, share_prefill=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated cache argument
        shared = backend.generate(PROMPTS, s, seed=0)
    assert backend.share_prefill  # the shared path ran (it falls back to plain on an error)
    plain = HFBackend(model, tok, batch_size=9, share_prefill=False).generate(PROMPTS, s, seed=0)
    alone = [HFBackend(model, tok, batch_size=1).generate([p], SamplingConfig(n=1, max_new_tokens=12), seed=0)[0][0]
             for p in PROMPTS]
    assert shared == plain
    for outs, ref in zip(shared, alone):
        assert outs == [ref] * 3  # left padding and positions handled: batched equals unbatched


def test_sampling_gives_n_completions_per_prompt_in_order(tiny):
    model, tok = tiny
    s = SamplingConfig(n=4, temperature=1.0, max_new_tokens=6)
    out = HFBackend(model, tok, batch_size=8).generate(PROMPTS, s, seed=1)
    assert [len(o) for o in out] == [4, 4, 4]
    assert len({c for o in out for c in o}) > 3  # sampled, not copies


def test_sampling_does_not_depend_on_what_came_before(tiny):
    """A pass resumed from the cache generates only the prompts left; it must draw the samples an
    uninterrupted pass would have (batch seeds follow the prompts, not the batch's position)."""
    model, tok = tiny
    s = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=10)
    prompts = ["def add(a, b):\n    return a", "def sub(a, b):", "x = 1", "y"]  # longest first: 2 batches of 2
    backend = HFBackend(model, tok, batch_size=4)
    full = backend.generate(prompts, s, seed=5)
    rest = backend.generate(prompts[2:], s, seed=5)  # the first batch came from the cache
    assert rest == full[2:]
    assert backend.generate(prompts[2:], s, seed=6) != rest  # and the seed still matters


def test_cache_reuses_and_skips_torn_lines(tiny, tmp_path):
    model, tok = tiny
    s = SamplingConfig(n=2, temperature=1.0, max_new_tokens=5)
    backend = HFBackend(model, tok, batch_size=2)
    first, st1 = generate(backend, PROMPTS, s, seed=0, model_id="tiny-x", cache_root=tmp_path)
    assert st1["generated_prompts"] == 3 and st1["cached_prompts"] == 0
    cache = open_cache(tmp_path, "tiny-x", s, 0)
    assert cache.path.exists()
    with cache.path.open("a") as f:
        f.write('{"k": "torn line from a kill')
    again, st2 = generate(backend, PROMPTS, s, seed=0, model_id="tiny-x", cache_root=tmp_path)
    assert again == first and st2["cached_prompts"] == 3 and st2["generated_prompts"] == 0
    other, st3 = generate(backend, PROMPTS, s, seed=1, model_id="tiny-x", cache_root=tmp_path)
    assert st3["generated_prompts"] == 3  # another seed is another key
    more, st4 = generate(backend, PROMPTS, SamplingConfig(n=3, temperature=1.0, max_new_tokens=5), seed=0,
                         model_id="tiny-x", cache_root=tmp_path)
    assert st4["generated_prompts"] == 3 and all(len(c) == 3 for c in more)  # fewer cached than asked: redo


def test_greedy_cache_is_shared_by_every_seed(tiny, tmp_path):
    model, tok = tiny
    s = SamplingConfig(n=1, temperature=0.0, max_new_tokens=5)
    backend = HFBackend(model, tok, batch_size=2)
    first, st1 = generate(backend, PROMPTS, s, seed=0, model_id="tiny-x", cache_root=tmp_path)
    again, st2 = generate(backend, PROMPTS, s, seed=7, model_id="tiny-x", cache_root=tmp_path)
    assert st1["generated_prompts"] == 3 and st2["cached_prompts"] == 3 and st2["generated_prompts"] == 0
    assert again == first == backend.generate(PROMPTS, s, seed=7)  # greedy: the seed changes nothing


def test_generate_each_draws_every_entry_independently(tiny, tmp_path):
    """Repeated prompts are separate chains: independent draws, each cached under its own key, so
    a rerun gives the same ones; a prompt's first chain is what ``generate`` draws for it."""
    model, tok = tiny
    s = SamplingConfig(n=1, temperature=1.0, top_p=1.0, max_new_tokens=8)
    backend = HFBackend(model, tok, batch_size=4)
    prompts = [PROMPTS[0], PROMPTS[2], PROMPTS[0], PROMPTS[0], PROMPTS[2]]
    out, st = generate_each(backend, prompts, s, seed=3, model_id="tiny-x", cache_root=tmp_path)
    assert len(out) == 5 and st["generated_prompts"] == 5
    assert len({out[0], out[2], out[3]}) == 3 and out[1] != out[4]  # identical prompts, different draws
    once, _ = generate(backend, PROMPTS[::2], s, seed=3, model_id="tiny-x", cache_root=tmp_path)
    assert [c[0] for c in once] == [out[0], out[1]]
    again, st2 = generate_each(backend, prompts, s, seed=3, model_id="tiny-x", cache_root=tmp_path)
    assert again == out and st2["cached_prompts"] == 5 and st2["generated_prompts"] == 0
    greedy, _ = generate_each(backend, prompts, SamplingConfig(n=1, max_new_tokens=8), seed=3, model_id=None,
                              cache_root=None)
    assert greedy[0] == greedy[2] == greedy[3] and greedy[1] == greedy[4]  # greedy: one answer per prompt


# --------------------------------------------------------------------------- hf per-step speed-ups
def test_fast_top_p_masks_exactly_like_transformers():
    import torch
    from transformers import TopPLogitsWarper

    from codistill.generation.hf import FastTopP

    g = torch.Generator().manual_seed(0)
    for scale, top_p, vocab in [(1.0, 0.95, 5000), (4.0, 0.9, 5000), (0.3, 0.95, 3000), (2.0, 0.5, 700)]:
        scores = torch.randn(6, vocab, generator=g) * scale
        scores[0, :100] = -float("inf")  # rows already cut by a top-k warper
        ref = TopPLogitsWarper(top_p)(None, scores.clone())
        got = FastTopP(top_p, k=16)(None, scores.clone())  # small k: the doubling path runs too
        assert torch.equal(torch.isinf(ref), torch.isinf(got)), (scale, top_p)
        assert torch.equal(ref[~torch.isinf(ref)], got[~torch.isinf(got)])


@pytest.mark.parametrize("text,start,stops,hit", [
    ("x = 1\n\n\n", 7, ["\n\n\n"], True),     # the newest token completes the stop
    ("x = 1\n\n\nfoo", 7, ["\n\n\n"], True),  # the newest token ("\nfoo") overhangs the stop
    ("x = 1\n\n\nfoo", 8, ["\n\n\n"], False),  # the stop ended before the newest token
    ("abc", 1, ["bc"], True),                  # the stop starts exactly at the newest token
    ("a xstopy", 2, ["stop"], True),           # inside the newest token: transformers stops there too
    ("stop at", 4, ["stop"], False),           # ended in an earlier token
    ("print(1)```", 8, ["```", "\n#"], True),
    ("", 0, ["```"], False),
])
def test_stop_overlaps_end(text, start, stops, hit):
    from codistill.generation.hf import stop_overlaps_end

    assert stop_overlaps_end(text, start, stops) is hit


def test_tail_stop_matches_transformers_stop_strings():
    """On real token sequences (a source file through the shipped tokenizer) and stops cut from
    their text, TailStopCriteria fires exactly where transformers' StopStringCriteria does."""
    import random
    from pathlib import Path

    import torch
    from transformers import StopStringCriteria

    from codistill.generation.hf import TailStopCriteria
    from codistill.models.tiny import load_tiny_tokenizer

    tok = load_tiny_tokenizer()
    ids = tok(Path(__file__).read_text()[:6000], add_special_tokens=False).input_ids
    rng = random.Random(0)
    fired = checked = 0
    for _ in range(120):
        st = rng.randrange(0, len(ids) - 8)
        seq = ids[st:st + 8]
        text = tok.decode(seq)
        a = rng.randrange(0, max(1, len(text) - 3))
        stop = text[a:a + rng.randint(1, 4)]
        if not stop.strip():
            continue
        ref, fast = StopStringCriteria(tok, [stop]), TailStopCriteria(tok, [stop])
        for length in range(2, 9):
            x = torch.tensor([seq[:length]])
            want = bool(ref(x, None)[0])
            assert bool(fast(x, None)[0]) == want, (stop, [tok.decode([t]) for t in seq[:length]])
            fired += want
            checked += 1
    assert checked > 300 and fired > 30  # both outcomes were exercised


def test_fast_stop_and_top_p_keep_outputs(tiny):
    """TailStopCriteria/FastTopP give the outputs transformers' own stop strings and top-p give."""
    model, tok = tiny
    for s in (SamplingConfig(n=1, temperature=0.0, max_new_tokens=12, stop=["e", "\n", "("]),
              SamplingConfig(n=2, temperature=1.0, top_p=0.9, max_new_tokens=10, stop=["a", " t"])):
        fast = HFBackend(model, tok, batch_size=4, fast_sampling=True).generate(PROMPTS, s, seed=3)
        ref = HFBackend(model, tok, batch_size=4, fast_sampling=False).generate(PROMPTS, s, seed=3)
        assert fast == ref
        assert any(c.endswith(tuple(s.stop)) or any(x in c for x in s.stop) for o in ref for c in o)  # stops fired


def test_auto_batch_size_on_cpu(tiny):
    model, tok = tiny
    from codistill.generation.hf import CPU_AUTO_BATCH, auto_batch_size

    assert auto_batch_size(model, 512) == CPU_AUTO_BATCH
    s = SamplingConfig(n=2, temperature=1.0, max_new_tokens=4)
    out = HFBackend(model, tok, batch_size="auto").generate(PROMPTS, s, seed=0)
    assert [len(o) for o in out] == [2, 2, 2]


# --------------------------------------------------------------------------- backend choice
def test_backend_identity_names_the_backend(tiny):
    from codistill.config import GenerationConfig, OpenAIConfig
    from codistill.generation import backend_identity

    m = ModelConfig(name="smol", source="tiny")
    with pytest.raises(ValueError, match="loaded model"):  # hf reads the dtype and device from the model
        backend_identity(GenerationConfig(backend="hf"), m, "id")
    hf = backend_identity(GenerationConfig(backend="hf"), m, "id", model=tiny[0])
    assert hf.startswith("id|hf:") and "dtype=float32" in hf and "device=cpu" in hf
    assert backend_identity(GenerationConfig(backend="vllm"), m, "id").startswith("id|vllm:")
    o = GenerationConfig(backend="openai", openai=OpenAIConfig(base_url="http://h:1/v1/"))
    assert backend_identity(o, m, "id") == "openai:http://h:1/v1:smol"
    o.openai.model = "served"
    assert backend_identity(o, m, "id") == "openai:http://h:1/v1:served"
    assert backend_identity(o, m, None) is None  # cache off
