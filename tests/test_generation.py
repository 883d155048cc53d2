
import pytest

from codistill.config import ModelConfig, SamplingConfig, TinyConfig
from codistill.generation import generate
from codistill.generation.cache import GenerationCache
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
    shared = HFBackend(model, tok, batch_size=9, share_prefill=True).generate(PROMPTS, s, seed=0)
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


def test_cache_reuses_and_skips_torn_lines(tiny, tmp_path):
    model, tok = tiny
    s = SamplingConfig(n=2, temperature=1.0, max_new_tokens=5)
    backend = HFBackend(model, tok, batch_size=2)
    first, st1 = generate(backend, PROMPTS, s, seed=0, model_id="tiny-x", cache_root=tmp_path)
    assert st1["generated_prompts"] == 3 and st1["cached_prompts"] == 0
    cache = GenerationCache(tmp_path, "tiny-x", {k: v for k, v in vars(s).items() if k != "n"}, 0)
    with cache.path.open("a") as f:
        f.write('{"k": "torn line from a kill')
    again, st2 = generate(backend, PROMPTS, s, seed=0, model_id="tiny-x", cache_root=tmp_path)
    assert again == first and st2["cached_prompts"] == 3 and st2["generated_prompts"] == 0
    other, st3 = generate(backend, PROMPTS, s, seed=1, model_id="tiny-x", cache_root=tmp_path)
    assert st3["generated_prompts"] == 3  # another seed is another key
    more, st4 = generate(backend, PROMPTS, SamplingConfig(n=3, temperature=1.0, max_new_tokens=5), seed=0,
                         model_id="tiny-x", cache_root=tmp_path)
    assert st4["generated_prompts"] == 3 and all(len(c) == 3 for c in more)  # fewer cached than asked: redo
