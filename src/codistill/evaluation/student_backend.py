"""Which backend samples the *trained* student at evaluation.

The trained student lives in this process as a transformers model, so by default it is
evaluated with the hf backend over that object (CPU runs, tests).  Where the student is sampled
with vLLM (``generation=vllm``, or ``student.backend=vllm``), a GPU sweep should evaluate at
vLLM's speed: vLLM cannot take a model object, so it loads the student's saved checkpoint,
``<run>/student`` (written by ``train.save_student``, LoRA adapters already merged into plain
weights).  :func:`choose` decides (pure, unit-tested without vLLM); :func:`build` makes the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from codistill.config import ConfigError


@dataclass(frozen=True)
class EvalBackend:
    kind: str  # "hf" (the in-memory model) | "vllm" (the saved checkpoint)
    checkpoint: Path | None = None


def student_backend_name(rc) -> str:
    """The backend the student is sampled with: ``student.backend``, else ``generation.backend``."""
    return rc.student.backend or rc.generation.backend


def check(rc) -> None:
    """A config that evaluates a trained student with vLLM must save it (vLLM reads the checkpoint);
    raises ConfigError naming ``train.save_student``.  Runs before anything is loaded."""
    if student_backend_name(rc) == "vllm" and rc.method.name != "none" and rc.eval.enabled and not rc.train.save_student:
        raise ConfigError("train.save_student: the trained student is evaluated with vLLM (generation=vllm) from its "
                          "saved checkpoint <run>/student; set train.save_student=true, or use generation=hf")


def choose(rc, *, trained: bool, run_dir: Path) -> EvalBackend:
    """hf for an untrained student or any non-vLLM run; vLLM over ``run_dir/student`` for a trained
    student where the student is sampled with vLLM (pure but for the ConfigError of :func:`check`)."""
    if not trained or student_backend_name(rc) != "vllm":
        return EvalBackend("hf")
    check(rc)
    return EvalBackend("vllm", Path(run_dir) / "student")


def build(choice: EvalBackend, rc, model=None):
    """The backend for ``evaluate(..., backend=)``: None for hf (evaluate wraps the in-memory model);
    for vLLM the in-memory copy leaves the GPU first, then vLLM loads the saved checkpoint."""
    if choice.kind == "hf":
        return None
    from codistill.generation.vllm import VLLMBackend

    if not (choice.checkpoint / "config.json").exists():
        raise FileNotFoundError(f"{choice.checkpoint}: no saved student checkpoint for vLLM to load "
                                "(train.save_student writes it on rank 0)")
    if model is not None:
        model.to("cpu")
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return VLLMBackend(str(choice.checkpoint), rc.generation.vllm, max_context=rc.student.max_context,
                       trust_remote_code=bool(rc.student.trust_remote_code), desc="eval")
