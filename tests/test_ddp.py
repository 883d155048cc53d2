"""Multi-process runs launched by codistill (trainer=ddp) on CPU with gloo: one run directory,
one metrics.json and one W&B run per job, generation split across the ranks."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from conftest import run_cli

PROMPTS = [f"def f{i}(x):\n    return" for i in range(7)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_backend():
    import torch

    from codistill.config import TinyConfig
    from codistill.generation.hf import HFBackend
    from codistill.models.tiny import build_tiny_model, load_tiny_tokenizer

    torch.set_num_threads(1)
    tok = load_tiny_tokenizer()
    return HFBackend(build_tiny_model(TinyConfig(), tok, torch.float32).eval(), tok, batch_size=4)


def _rank(r: int, world: int, port: int, cache: str, out: str) -> None:
    import torch.distributed as dist

    from codistill import distributed
    from codistill.config import SamplingConfig
    from codistill.generation import generate

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=r, world_size=world)
    distributed._current = distributed.Ranks(rank=r, world=world, local_rank=r, local_world=world)
    comps, stats = generate(_tiny_backend(), PROMPTS, SamplingConfig(n=1, temperature=0.0, max_new_tokens=8),
                            seed=0, model_id="tiny-test", cache_root=cache)
    Path(out, f"rank{r}.json").write_text(json.dumps({"comps": comps, "stats": stats}))
    dist.destroy_process_group()


def test_generation_is_split_across_ranks_and_gathered(tmp_path):
    from codistill.config import SamplingConfig
    from codistill.generation import generate

    single, _ = generate(_tiny_backend(), PROMPTS, SamplingConfig(n=1, temperature=0.0, max_new_tokens=8), seed=0,
                         model_id=None, cache_root=None)
    mp.start_processes(_rank, args=(2, _free_port(), str(tmp_path / "cache"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert got[0]["comps"] == got[1]["comps"] == single  # greedy: the same completions, in prompt order
    assert got[0]["stats"]["generated_prompts"] == len(PROMPTS) and got[0]["stats"]["tokens"] > 0
    # both ranks wrote their share into the shared cache; a second call finds everything there
    lines = [json.loads(x) for f in (tmp_path / "cache" / "generations").glob("*.jsonl")
             for x in f.read_text().splitlines()]
    assert len(lines) == len(PROMPTS)


def _wandb_runs(d: Path) -> list[Path]:
    return sorted(d.rglob("offline-run-*"))


@pytest.mark.slow
def test_ddp_run_has_one_directory_one_metrics_file_and_one_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    p = run_cli(["experiment=smoke", "trainer=ddp", "trainer.devices=2", "eval.baseline=false",
                 f"hydra.run.dir={run_dir}"], cwd=tmp_path, env={"CODISTILL_CACHE": str(tmp_path / "cache")},
                timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok", m.get("error")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["cache", "run"]  # no stray output directories
    assert [x.relative_to(tmp_path) for x in tmp_path.rglob("metrics.json")] == [Path("run/metrics.json")]
    assert len(_wandb_runs(tmp_path)) == 1
    assert "results (" in p.stdout and p.stdout.count("results (") == 1  # rank 0 alone reports


@pytest.mark.slow
def test_ddp_sweep_gives_one_directory_and_one_wandb_run_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    p = run_cli(["-m", "experiment=smoke", "trainer=ddp", "trainer.devices=2", "seed=0,1", "eval.baseline=false",
                 f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env={"CODISTILL_CACHE": str(tmp_path / "cache")},
                timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["cache", "sweep"]
    jobs = sorted(d for d in sweep.iterdir() if d.is_dir())
    assert len(jobs) == 2, jobs  # and nothing else: no stray per-rank directories
    assert len(list(sweep.rglob("metrics.json"))) == 2
    seeds = set()
    for d in jobs:
        m = json.loads((d / "metrics.json").read_text())
        assert m["status"] == "ok", m.get("error")
        seeds.add(m["seed"])
        assert len(_wandb_runs(d)) == 1
    assert seeds == {0, 1} and len(_wandb_runs(sweep)) == 2


EASY = [("Tom has 2 apples and buys 3 more. How many apples does he have?", 5),
        ("A box holds 6 pens. How many pens are in 4 boxes?", 24),
        ("Sara had 10 candies and ate 4. How many candies are left?", 6),
        ("There are 7 birds on a tree and 5 more arrive. How many birds are there now?", 12),
        ("A book costs 8 dollars. How much do 3 books cost?", 24),
        ("Ben has 20 marbles and gives away 9. How many marbles does he have left?", 11),
        ("Each car has 4 wheels. How many wheels do 5 cars have?", 20),
        ("Lily read 15 pages on Monday and 12 pages on Tuesday. How many pages did she read?", 27)]


@pytest.mark.slow
@pytest.mark.packaged_models
def test_ddp_trains_the_student_on_teacher_samples_drawn_by_both_ranks(tmp_path):
    """A real teacher (SmolLM2-135M) whose samples are split across 2 ranks, then DDP training
    with packing on what passed, then evaluation: one run, status ok."""
    for name, rows in (("train", EASY), ("test", EASY[:3])):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"question": q, "answer": f"So {a}.\n#### {a}"}) + "\n" for q, a in rows))
    run_dir = tmp_path / "run"
    p = run_cli(["experiment=smoke", "model@teacher=smollm2-135m-instruct", "dataset=gsm8k",
                 f"dataset.train_file={tmp_path}/train.jsonl", f"dataset.test_file={tmp_path}/test.jsonl",
                 "dataset.train_size=null", "dataset.test_size=null", "task.num_shots=2", "sampling.n=2",
                 "sampling.temperature=0.7", "sampling.max_new_tokens=64", "method.keep=unique",
                 "generation.batch_size=16", "train.epochs=2", "train.packing=true", "eval.baseline=false",
                 "trainer=ddp", "trainer.devices=2", "logger=csv", f"hydra.run.dir={run_dir}",
                 "decontamination.enabled=false"],  # the test set is 3 of the training problems, knowingly
                cwd=tmp_path, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok", m.get("error")
    assert m["data/n_samples"] == 16
    assert m["data/n_kept"] >= 1 and m["train/world_size"] == 2 and m["train/steps"] >= 1
    assert m["train/tokens_per_s"] > 0
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    gens = [json.loads(x) for x in (run_dir / "generations.jsonl").read_text().splitlines()]
    assert len(gens) == 16 and len({g["problem_id"] for g in gens}) == 8  # every prompt answered once
    assert os.path.getsize(run_dir / "train_set.jsonl") > 0


def test_a_failed_rank_s_error_is_reported_by_rank_zero(tmp_path):
    """Rank 0 collects the error another rank wrote (or the end of its log) when it exits non-zero."""
    import subprocess
    import sys

    from codistill import distributed

    (tmp_path / "rank1").mkdir()
    (tmp_path / "rank1" / "metrics.json").write_text(json.dumps({"status": "failed", "error": "OSError: disk full"}))
    (tmp_path / "rank2.log").write_text("loading\nTraceback ...\nImportError: no module named foo\n")
    ok = subprocess.Popen([sys.executable, "-c", "pass"])
    bad1 = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    bad2 = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    me = distributed.Ranks(rank=0, world=4, local_world=4, scratch=tmp_path,
                           workers=[(3, ok), (1, bad1), (2, bad2)])
    assert distributed._worker_error(tmp_path, 2, 3).endswith("ImportError: no module named foo")
    assert me.stop(ok=True) == "rank 1: OSError: disk full"
    assert not tmp_path.exists()  # the launcher's scratch directory is removed
    assert distributed.world_size() == 1


def test_ranks_from_the_environment(monkeypatch):
    from codistill import distributed

    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.external_ranks() is None
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    assert distributed.external_ranks() == {"rank": 5, "world": 8, "local_rank": 1, "local_world": 4}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.external_ranks() == {"rank": 1, "world": 2, "local_rank": 1, "local_world": 2}
    assert distributed.processes_per_node(2, "cpu") == 2 and distributed.processes_per_node([0, 1, 2], "gpu") == 3
    assert distributed.processes_per_node("auto", "cpu") == 1
