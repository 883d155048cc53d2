"""Multi-process runs, launched by codistill itself (``trainer.devices > 1`` / ``num_nodes > 1``).

Lightning's own launcher re-runs the command line for every extra rank; under a Hydra sweep
that makes stray output directories and W&B runs.  So :func:`start`, called by
``codistill.run.run`` once the config is valid, does it instead:

- not inside a rank yet: it writes the composed (resolved) config to a private scratch
  directory, starts ranks ``1 .. n-1`` of this node as ``python -m codistill.worker``
  subprocesses with ``MASTER_ADDR/MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, NODE_RANK``
  set, and becomes rank 0 (or local rank 0 of ``NODE_RANK``) itself;
- started by a cluster (SLURM ``srun`` with several tasks, ``torchrun``): the ranks come
  from the environment and nothing is launched.  Every task must then be given the same
  run directory (``hydra.run.dir=...``; submitit's launcher does this for you).

Every rank runs the whole pipeline on the same config, so Lightning sees ``LOCAL_RANK``
and launches nothing.  The process group (gloo on CPU, NCCL for CUDA tensors) is opened
here, before any stage, so generation can use it: :func:`generate_sharded` splits the
prompts across the ranks and gathers the completions.  Only rank 0 writes the run
directory's artifacts and creates loggers; the other ranks write into their scratch
directory, deleted when they end.  When any rank fails, rank 0 fails the run with that
rank's error in ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCRATCH_ENV = "CODISTILL_DIST_DIR"
_RANK_KEYS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK")


def processes_per_node(devices: Any, accelerator: str) -> int:
    """How many processes ``trainer.devices`` asks for on each node (pure apart from CUDA's count)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if devices in ("auto", -1):
        import torch

        return torch.cuda.device_count() if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else 1
    return int(devices)


def external_ranks() -> dict | None:
    """Ranks set by a cluster launcher (torchrun / SLURM srun with several tasks), else None."""
    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) > 1 and "RANK" in env and "LOCAL_RANK" in env:
        return {"rank": int(env["RANK"]), "world": int(env["WORLD_SIZE"]), "local_rank": int(env["LOCAL_RANK"]),
                "local_world": int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))}
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        per_node = env.get("SLURM_NTASKS_PER_NODE", "").split("(")[0]
        return {"rank": int(env["SLURM_PROCID"]), "world": int(env["SLURM_NTASKS"]),
                "local_rank": int(env.get("SLURM_LOCALID", "0")),
                "local_world": int(per_node) if per_node.isdigit() else int(env["SLURM_NTASKS"])}
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- state of this process
@dataclass
class Ranks:
    """This process's place in a run (world 1 when single-process)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    scratch: Path | None = None  # the launcher's scratch directory (rank 0 of a launched run)
    workers: list = field(default_factory=list)  # (global rank, Popen) started by this process
    saved_env: dict = field(default_factory=dict)
    owns_group: bool = False
    _done: threading.Event = field(default_factory=threading.Event)

    @property
    def is_zero(self) -> bool:
        return self.rank == 0

    def artifact_dir(self, run_dir: Path) -> Path:
        """Where this rank writes artifacts: the run directory on rank 0, else a scratch directory."""
        if self.is_zero:
            return run_dir
        root = Path(os.environ.get(SCRATCH_ENV) or tempfile.mkdtemp(prefix="codistill-rank"))
        d = root / f"rank{self.rank}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def stop(self, ok: bool) -> str | None:
        """End this process's part: wait for (or, after a failure, kill) the ranks it started,
        close the process group, restore the environment.  Returns the first error of another
        rank, if any."""
        self._done.set()
        errors = []
        for r, p in self.workers:
            try:
                p.wait(timeout=600 if ok else 10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.returncode != 0:
                errors.append(f"rank {r}: {_worker_error(self.scratch, r, p.returncode)}")
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        for k, v in self.saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if self.scratch is not None:  # the launcher's: the other ranks have ended
            shutil.rmtree(self.scratch, ignore_errors=True)
        global _current
        _current = Ranks()
        return errors[0] if errors else None


_current = Ranks()


def current() -> Ranks:
    return _current


def rank() -> int:
    return _current.rank


def world_size() -> int:
    return _current.world


def local_world_size() -> int:
    return _current.local_world


def is_rank_zero() -> bool:
    return _current.is_zero


def _worker_error(scratch: Path | None, r: int, rc: int) -> str:
    if scratch is not None:
        m = scratch / f"rank{r}" / "metrics.json"
        try:
            err = json.loads(m.read_text()).get("error")
            if err:
                return err
        except (OSError, ValueError):
            pass
        try:  # it failed before writing metrics: the end of its log
            lines = (scratch / f"rank{r}.log").read_text(errors="replace").strip().splitlines()
            return f"exited with code {rc}: " + " | ".join(lines[-8:])
        except OSError:
            pass
    return f"exited with code {rc}"


# --------------------------------------------------------------------------- start
def start(trainer_cfg, cfg, run_dir: Path) -> Ranks:
    """Become one rank of the run (see the module docstring); a no-op for one process."""
    global _current
    ext = external_ranks()
    accelerator = trainer_cfg.accelerator
    if ext is not None:
        _current = Ranks(rank=ext["rank"], world=ext["world"], local_rank=ext["local_rank"],
                         local_world=ext["local_world"])
        if os.environ.get(SCRATCH_ENV) is None and "SLURM_PROCID" in os.environ and "MASTER_ADDR" not in os.environ:
            from lightning_fabric.plugins.environments import SLURMEnvironment

            senv = SLURMEnvironment()
            _current.saved_env = {k: os.environ.get(k) for k in _RANK_KEYS}
            os.environ.update(MASTER_ADDR=senv.main_address, MASTER_PORT=str(senv.main_port),
                              RANK=str(ext["rank"]), WORLD_SIZE=str(ext["world"]),
                              LOCAL_RANK=str(ext["local_rank"]))
        _init_group(accelerator, _current)
        return _current
    per_node = processes_per_node(trainer_cfg.devices, accelerator)
    nodes = int(trainer_cfg.num_nodes)
    if per_node * nodes <= 1:
        _current = Ranks()
        return _current
    node_rank = int(os.environ.get("NODE_RANK", "0"))
    if nodes > 1 and "MASTER_ADDR" not in os.environ:
        raise RuntimeError(f"trainer.num_nodes={nodes}: start codistill on every node with MASTER_ADDR, "
                           f"MASTER_PORT and NODE_RANK set (or run under SLURM / submitit)")
    world = per_node * nodes
    scratch = Path(tempfile.mkdtemp(prefix="codistill-ranks-"))
    from omegaconf import OmegaConf

    (scratch / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    env = {"MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1"),
           "MASTER_PORT": os.environ.get("MASTER_PORT") if nodes > 1 else str(_free_port()),
           "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(per_node), "NODE_RANK": str(node_rank)}
    me = Ranks(rank=node_rank * per_node, world=world, local_rank=0, local_world=per_node, scratch=scratch)
    me.saved_env = {k: os.environ.get(k) for k in (*_RANK_KEYS, SCRATCH_ENV)}
    os.environ.update(env, RANK=str(me.rank), LOCAL_RANK="0", **{SCRATCH_ENV: str(scratch)})
    log.info("launching %d processes on this node (world size %d, %s)", per_node, world, env["MASTER_ADDR"])
    for local in range(1, per_node):
        r = node_rank * per_node + local
        wenv = dict(os.environ, RANK=str(r), LOCAL_RANK=str(local))
        out = open(scratch / f"rank{r}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "codistill.worker", str(scratch / "config.yaml"),
                              str(run_dir)], env=wenv, stdout=out, stderr=subprocess.STDOUT)
        me.workers.append((r, p))
    _current = me
    threading.Thread(target=_watch, args=(me, run_dir), daemon=True).start()
    try:
        _init_group(accelerator, me)
    except Exception:
        me.stop(ok=False)
        raise
    return me


def _init_group(accelerator: str, me: Ranks) -> None:
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    cuda = accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(me.local_rank)
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", rank=me.rank, world_size=me.world,
                            timeout=timedelta(minutes=30))
    me.owns_group = True


def _watch(me: Ranks, run_dir: Path, grace_s: float = 60.0) -> None:
    """Rank 0's watchdog: when another rank dies and rank 0 has not finished ``grace_s``
    later (stuck in a collective), record the failure in metrics.json and exit."""
    while not me._done.is_set():
        for r, p in me.workers:
            rc = p.poll()
            if rc not in (None, 0):
                if me._done.wait(grace_s):
                    return
                err = f"rank {r}: {_worker_error(me.scratch, r, rc)}"
                log.error("%s; rank 0 was still waiting for it: ending the run", err)
                path = run_dir / "metrics.json"
                try:
                    metrics = json.loads(path.read_text())
                except (OSError, ValueError):
                    metrics = {}
                metrics.update(status="failed", error=err)
                tmp = path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(metrics, indent=2, default=str, sort_keys=True))
                tmp.replace(path)
                for _, q in me.workers:
                    q.kill()
                os._exit(1)
        time.sleep(0.5)


def prepare_models(rc) -> None:
    """Rank 0 converts the run's packaged models (once per cache) while the others wait: a
    conversion is a transformers ``save_pretrained``, which writes files on rank 0 only."""
    if _current.world <= 1:
        return
    if _current.is_zero:
        from codistill.models import resolve_checkpoint

        for m in (rc.teacher, rc.student):
            if m.source == "packaged_gguf":
                resolve_checkpoint(m, rc.cache_dir)
    import torch.distributed as dist

    dist.barrier()


# --------------------------------------------------------------------------- collectives
def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself when single-process)."""
    if _current.world <= 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any) -> list:
    """Every rank's ``obj``, in rank order."""
    if _current.world <= 1:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * _current.world
    dist.all_gather_object(out, obj)
    return out


def generate_sharded(backend, todo: list[str], sampling, seed: int, on_batch=None) -> tuple[list[list[str]], int]:
    """Completions for ``todo`` (the same list on every rank), each rank generating every
    ``world``-th prompt; returns (completions in ``todo`` order, tokens generated by all ranks)."""
    mine = todo[_current.rank::_current.world]
    fresh = backend.generate(mine, sampling, seed, on_batch=on_batch) if mine else []
    parts = all_gather_object((fresh, getattr(backend, "last_tokens", 0)))
    out: list[list[str]] = [[] for _ in todo]
    for r, (comps, _) in enumerate(parts):
        for i, c in zip(range(r, len(todo), _current.world), comps):
            out[i] = c
    return out, sum(t for _, t in parts)
