"""What a method is: something that turns a run's context into a training set."""

from __future__ import annotations

import gc
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from codistill.tasks.base import Problem, Task

log = logging.getLogger(__name__)


@dataclass
class TrainingPlan:
    """What the student is trained on, and how: ``examples`` are (prompt, completion) pairs;
    ``objective`` is None for SFT (cross-entropy), a :class:`codistill.training.kd.KDSpec` for
    token-level distillation, an :class:`codistill.training.on_policy.OnPolicySpec` for
    on-policy distillation; ``init`` a model to continue training (expert iteration's last
    round), else the base student.  :func:`codistill.training.train` trains it, for the run's
    training stage and for expert iteration's rounds alike."""

    examples: list[dict]
    objective: Any = None
    init: Any = None


@dataclass
class MethodResult:
    """What a method built: the training ``plan`` (None: do not train, e.g. ``method=none``)
    and the data figures for metrics.json."""

    plan: TrainingPlan | None
    metrics: dict = field(default_factory=dict)

    @property
    def pairs(self) -> list[dict] | None:
        """The plan's examples (None when nothing is to be trained)."""
        return None if self.plan is None else self.plan.examples


@dataclass
class RunContext:
    """Everything a method may use.  Models load lazily and are cached per role."""

    cfg: Any  # codistill.config.RunConfig
    run_dir: Path
    task: Task
    train: list[Problem]
    test: list[Problem]
    cache_dir: str
    _models: dict = field(default_factory=dict)
    _tokenizers: dict = field(default_factory=dict)

    def tokenizer(self, role: str):
        """The tokenizer of ``role`` in {"teacher", "student"} (no weights loaded)."""
        if role not in self._tokenizers:
            from codistill.models import load_tokenizer

            self._tokenizers[role] = load_tokenizer(getattr(self.cfg, role), self.cache_dir)
        return self._tokenizers[role]

    def load(self, role: str, *, for_training: bool = False):
        """(model, tokenizer, cache identity) for ``role``.  The identity keys the generation
        cache of sampling this model through transformers (its weights and, read from the loaded
        model, its numerics: see :func:`codistill.generation.backend_identity`); it is None when
        ``generation.use_cache`` is off."""
        import dataclasses

        from codistill.generation import backend_identity
        from codistill.models import load_model, model_identity

        key = (role, for_training)
        if key not in self._models:
            mcfg = getattr(self.cfg, role)
            model = load_model(mcfg, self.cache_dir, for_training=for_training)
            hf = dataclasses.replace(self.cfg.generation, backend="hf")  # a loaded model samples through hf
            ident = backend_identity(hf, mcfg, model_identity(mcfg), model=model) if hf.use_cache else None
            self._models[key] = (model, self.tokenizer(role), ident)
        return self._models[key]

    def backend(self, role: str, *, desc: str | None = None):
        """(generation backend, tokenizer, cache identity) for sampling from ``role``.

        Methods sample through this, never by building a backend themselves, so the
        ``generation`` config group decides how (transformers, vLLM, an API server)."""
        from codistill.generation import backend_class, backend_identity, build_backend

        gcfg, mcfg = self.cfg.generation, getattr(self.cfg, role)
        if mcfg.backend and mcfg.backend != gcfg.backend:  # this role alone (e.g. an API teacher)
            import dataclasses

            gcfg = dataclasses.replace(gcfg, backend=mcfg.backend)
        if backend_class(gcfg.backend).in_process:  # hf: over the weights loaded here
            model, tok, ident = self.load(role)
            return build_backend(gcfg, mcfg, cache_dir=self.cache_dir, model=model, tokenizer=tok,
                                 desc=desc or role), tok, ident
        # vllm / openai: no transformers weights here; the tokenizer still renders the prompts
        key = (role, gcfg.backend)
        if key not in self._models:
            from codistill.models import model_identity

            ident = model_identity(mcfg) if gcfg.use_cache else None
            self._models[key] = (build_backend(gcfg, mcfg, cache_dir=self.cache_dir, desc=desc or role),
                                 self.tokenizer(role), backend_identity(gcfg, mcfg, ident))
        return self._models[key]

    def sampling(self, **changes):
        """The run's ``sampling`` section, its stop strings defaulting to the task's."""
        import dataclasses

        s = self.cfg.sampling
        return dataclasses.replace(s, **{"stop": list(s.stop or self.task.stop), **changes})

    def rollout(self, role: str, problems: list[Problem], *, prompts: Callable | None = None, shots: int = 0,
                sampling=None, seed: int | None = None, desc: str | None = None, judge: bool = True,
                source: tuple | None = None):
        """Sample ``role`` on ``problems`` and judge the samples (:func:`codistill.rollout.roll`):
        the prompts are the task's (``shots`` exemplars, the role's chat setting) unless
        ``prompts(tokenizer)`` makes them; ``sampling`` defaults to :meth:`sampling`, ``seed`` to
        the data seed; the role's memory is released before the sandbox runs.  ``source``: a
        (backend, tokenizer, cache identity) to sample instead of the role's own (a model trained
        in this run).  Returns a :class:`codistill.rollout.Rollout`."""
        from codistill.rollout import roll

        backend, tok, ident = source or self.backend(role, desc=desc)
        chat = getattr(self.cfg, role).chat
        rendered = prompts(tok) if prompts else [self.task.render(p, tok, chat=chat, shots=shots) for p in problems]
        return roll(backend, rendered, sampling or self.sampling(), seed=self.cfg.data_seed if seed is None else seed,
                    model_id=ident, cache_root=self.cache_dir, task=self.task if judge else None, problems=problems,
                    timeout_s=self.cfg.task.timeout_s, memory_mb=self.cfg.task.memory_mb,
                    release=lambda: self.release(role), tokenizer=tok)

    def release(self, role: str) -> None:
        """Free a role's models (a teacher is not needed once its samples are drawn)."""
        for key in [k for k in self._models if k[0] == role]:
            del self._models[key]
        gc.collect()


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)


class Method(ABC):
    """A method: its ``Config`` (a :class:`codistill.config.MethodConfig` dataclass, in the same
    file) is the schema of ``cfg.method``; :meth:`build` makes the training set."""

    Config: type = None  # None: MethodConfig (no options of its own); found by codistill.plugins.schema_of

    def __init__(self, cfg) -> None:
        self.cfg = cfg  # this method's config (cfg.method)

    @property
    def name(self) -> str:
        return self.cfg.name

    def check(self, ctx: RunContext) -> None:
        """Cheap checks that need the run's context (e.g. tokenizers), before any weights load."""

    @abstractmethod
    def build(self, ctx: RunContext) -> MethodResult:
        """The training set (and data figures) this method makes from ``ctx``."""
