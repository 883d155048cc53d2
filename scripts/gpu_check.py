#!/usr/bin/env python
"""The GPU check (issue 20): everything a GPU machine must show, in one call, with one report.

    scripts/gpu_check.sh [--cpu] [--out DIR] [--only STEP,...]     # the wrapper sets up the wheels

Steps, each in its own process (a failing step is recorded with its error; the rest go on):

1. ``pipeline:*`` -- whole runs of ``experiment=smoke`` (``method=kd method.filter=false``, so the
   student really trains; ``logger=csv``): ``trainer=gpu`` (bf16-mixed), ``trainer=ddp
   trainer.devices=1`` (NCCL), ``trainer=fsdp trainer.devices=1``, and LoRA; each must leave a
   metrics.json with status ok and training steps.  ``--cpu``: ``trainer=cpu`` and LoRA on it.
2. ``train`` -- benchmarks/bench_train.py: a random-weight Qwen2.5-Coder-0.5B in bf16, 2048-token
   packed rows of 1-2K-token examples: codistill vs a bare loop vs TRL's SFTTrainer (when trl
   imports), tokens/s and MFU against the bf16 peak.
3. ``generation`` -- benchmarks/bench_generation.py: the hf backend at ``batch_size: auto`` vs plain
   batched ``model.generate`` (same batch, fixed output length), against the memory-bandwidth bound.
4. ``kd`` -- benchmarks/bench_kd.py: SFT vs KD with a cached top-k vs KD with an online teacher
   (random-weight Qwen2.5-Coder-1.5B teacher, 0.5B student).
5. ``on_policy`` -- a whole ``method=on_policy`` run, where that method exists.

``--cpu`` runs every step tiny (CI: tests/test_gpu_check.py); without CUDA the CUDA-only steps are
recorded as ``skipped: no CUDA``.  Under ``--out`` (the device tool's $OUT brings back at most 8
files): report.md, report.json and steps.log (every step's command and output); runs and caches
go to ``--work`` (a temporary directory by default).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
STUDENT_ARCH, TEACHER_ARCH = "random:qwen2.5-coder-0.5b", "random:qwen2.5-coder-1.5b"
TARGETS = {"train_mfu": 0.40, "train_vs_trl": 1.5, "train_vs_bare": 0.95, "kd_cached_vs_sft": 1.5}


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def versions() -> dict:
    """The versions the figures were measured with (the device's may differ from ours)."""
    out = {"python": platform.python_version()}
    for mod in ("torch", "transformers", "pytorch_lightning", "peft", "trl", "hydra", "omegaconf", "datasets",
                "accelerate"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            out[mod] = f"missing ({type(e).__name__})"
    import torch

    out["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{os.cpu_count()}"
    out["cuda"] = torch.version.cuda
    return out


class Runner:
    """Runs the steps' commands, appends their output to steps.log, and keeps the time budget."""

    def __init__(self, out: Path, work: Path, budget_s: float, inprocess: bool = False) -> None:
        self.out, self.work, self.inprocess = out, work, inprocess
        self.log = out / "steps.log"
        self.log.write_text("")
        self.deadline = time.monotonic() + budget_s
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
            WANDB_MODE="offline", WANDB_SILENT="true", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
            CODISTILL_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run_inprocess(self, name: str, script: Path, args: list[str]) -> subprocess.CompletedProcess:
        """``script``'s ``main(args)`` in this process (``--cpu``: one interpreter start instead of one
        per benchmark, which is most of a tiny step's time), its output captured like a command's."""
        import contextlib
        import importlib
        import io
        import traceback

        out, err = io.StringIO(), io.StringIO()
        t0 = time.monotonic()
        cwd = os.getcwd()
        sys.path.insert(0, str(script.parent))
        try:
            os.chdir(self.work)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = importlib.import_module(script.stem).main(args) or 0
        except BaseException:  # noqa: BLE001 - recorded as the step's error (SystemExit from argparse too)
            err.write(traceback.format_exc())
            rc = 1
        finally:
            os.chdir(cwd)
            sys.path.remove(str(script.parent))
        p = subprocess.CompletedProcess([str(script), *args], rc, out.getvalue(), err.getvalue())
        self._log(name, p, time.monotonic() - t0)
        return p

    def _log(self, name: str, p: subprocess.CompletedProcess, seconds: float) -> None:
        with self.log.open("a") as f:
            f.write(f"\n===== {name}: rc {p.returncode}, {seconds:.1f} s\n$ {shlex.join(p.args)}\n")
            f.write(p.stdout[-200_000:] + "\n--- stderr ---\n" + p.stderr[-200_000:] + "\n")

    def run(self, name: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        timeout = max(5.0, min(timeout, self.left()))
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            p = subprocess.CompletedProcess(argv, 124, _text(e.stdout),
                                            _text(e.stderr) + f"\ntimed out after {timeout:.0f} s")
        self._log(name, p, time.monotonic() - t0)
        return p


def _text(b) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def _error(p: subprocess.CompletedProcess) -> str:
    """The last meaningful line of a failed command's output (the exception, usually)."""
    lines = [ln for ln in (p.stderr + "\n" + p.stdout).splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln]
    errs = [ln for ln in lines if any(w in ln for w in ("Error", "error:", "Could not", "timed out"))]
    return (errs or lines or [f"exit status {p.returncode}"])[-1].strip()[:500]


# --------------------------------------------------------------------------- 1. pipeline
def pipeline_step(r: Runner, name: str, overrides: list[str], timeout: float) -> dict:
    run_dir = r.work / "runs" / name.replace(":", "_")
    argv = [sys.executable, "-m", "codistill", "experiment=smoke", "method=kd", "method.filter=false",
            "logger=csv", "eval.baseline=false", *overrides, f"hydra.run.dir={run_dir}"]
    p = r.run(name, argv, timeout)
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        return {"status": "failed", "error": _error(p), "command": shlex.join(argv[2:])}
    m = json.loads(metrics.read_text())
    keep = {k: m.get(k) for k in ("status", "train/steps", "train/tokens_per_s", "train/mfu", "train/final_loss",
                                  "train/peak_flops_source", "train/world_size", "train/trainable_params",
                                  "eval/pass@1", "time_s") if k in m}
    if m.get("status") != "ok":
        return {"status": "failed", "error": str(m.get("error", m.get("status")))[:500], "figures": keep}
    if not m.get("train/steps"):
        return {"status": "failed", "error": f"no training steps ({m.get('train/skipped', '?')})", "figures": keep}
    return {"status": "ok", "figures": keep, "command": shlex.join(argv[2:])}


def pipeline_steps(cpu: bool, cuda: bool) -> list[tuple[str, list[str], bool]]:
    """(name, overrides, needs CUDA)."""
    lora = ["student.lora.enabled=true", "student.lora.r=8"]
    if cpu:
        tiny = ["trainer=cpu", "sampling.n=2", "dataset.test_size=2", "eval.n_samples=1", "eval.k=[1]"]
        return [("pipeline:cpu", tiny, False), ("pipeline:lora", [*tiny, *lora], False),
                ("pipeline:gpu", ["trainer=gpu"], True), ("pipeline:ddp", ["trainer=ddp", "trainer.devices=1"], True),
                ("pipeline:fsdp", ["trainer=fsdp", "trainer.devices=1"], True)]
    return [("pipeline:gpu", ["trainer=gpu"], True),
            ("pipeline:ddp", ["trainer=ddp", "trainer.devices=1", "trainer.accelerator=gpu"], True),
            ("pipeline:fsdp", ["trainer=fsdp", "trainer.devices=1"], True),
            ("pipeline:lora", ["trainer=gpu", *lora], True)]


# --------------------------------------------------------------------------- 2-4. benchmarks
def bench(r: Runner, name: str, script: str, args: list[str], timeout: float) -> tuple[dict, dict | None]:
    """A benchmark with ``--json``: in its own process, or in this one under ``--cpu``."""
    out = r.work / f"{name}.json"
    out.unlink(missing_ok=True)
    argv = [sys.executable, str(BENCH / script), *args, "--json", str(out)]
    p = r.run_inprocess(name, BENCH / script, argv[2:]) if r.inprocess else r.run(name, argv, timeout)
    if p.returncode != 0 or not out.exists():
        return {"status": "failed", "error": _error(p), "command": shlex.join(argv[1:])}, None
    return {"status": "ok", "command": shlex.join(argv[1:])}, json.loads(out.read_text())


def train_step(r: Runner, cpu: bool, timeout: float) -> dict:
    trl = importlib.util.find_spec("trl") is not None and importlib.util.find_spec("datasets") is not None
    only = "codistill,bare,trl" if trl else "codistill,bare"
    args = (["--model", "random:tiny", "--steps", "3", "--warmup", "1", "--seq", "128", "--batch", "4"] if cpu else
            ["--model", STUDENT_ARCH, "--seq", "2048", "--lines", "60,120", "--batch", "8", "--steps", "20",
             "--warmup", "4"])
    res, fig = bench(r, "train", "bench_train.py", [*args, "--only", only], timeout)
    if fig:
        mfu = fig["mfu"].get("codistill", 0.0)
        ratios = fig.get("ratios", {})
        res["figures"] = fig
        res["targets"] = {
            "mfu >= 40%": _verdict(mfu >= TARGETS["train_mfu"], f"{mfu:.1%}"),
            ">= 1.5x TRL": _verdict(ratios["vs_trl"] >= TARGETS["train_vs_trl"], f"{ratios['vs_trl']:.2f}x")
            if "vs_trl" in ratios else ("trl missing" if not trl else f"trl {fig.get('trl')}"),
            ">= 0.95x bare": _verdict(ratios.get("vs_bare", 0) >= TARGETS["train_vs_bare"],
                                      f"{ratios.get('vs_bare', 0):.2f}x"),
        }
    return res


def profile_step(r: Runner, cpu: bool, timeout: float) -> dict:
    """codistill's training step under torch.profiler (issue 20: "if MFU is low, profile once"):
    the operators with the most device time, so the fix can target what dominates."""
    args = (["--model", "random:tiny", "--steps", "5", "--warmup", "1", "--seq", "128", "--batch", "4"] if cpu else
            ["--model", STUDENT_ARCH, "--seq", "2048", "--lines", "60,120", "--batch", "8", "--steps", "8",
             "--warmup", "3"])
    res, fig = bench(r, "train:profile", "bench_train.py", [*args, "--only", "codistill", "--profile"], timeout)
    if fig:
        res["figures"] = {"profile": fig.get("profile", []), "tokens_per_s (profiled)": fig["tokens_per_s"]}
    return res


def generation_step(r: Runner, cpu: bool, timeout: float) -> dict:
    args = (["--model", "random:tiny", "--prompts", "4", "--batch", "4", "--max-new-tokens", "8"] if cpu else
            ["--model", STUDENT_ARCH, "--prompts", "164", "--n", "4", "--batch", "auto", "--max-new-tokens", "256"])
    res, fig = bench(r, "generation", "bench_generation.py", [*args, "--fixed-length", "--skip-batch1"], timeout)
    if fig:
        res["figures"] = fig
    return res


def kd_step(r: Runner, cpu: bool, timeout: float) -> dict:
    args = (["--student", "random:tiny", "--teacher", "random:tiny", "--seq-len", "64", "--steps", "2",
             "--warmup", "1", "--batch", "2"] if cpu else
            ["--student", STUDENT_ARCH, "--teacher", TEACHER_ARCH, "--seq-len", "1024", "--batch", "8",
             "--steps", "6", "--warmup", "2"])
    res, fig = bench(r, "kd", "bench_kd.py", [*args, "--online"], timeout)
    if fig:
        res["figures"] = fig
        ratio = fig["vs_sft"]["KD cached"]
        res["targets"] = {"KD cached <= 1.5x SFT": _verdict(ratio <= TARGETS["kd_cached_vs_sft"], f"{ratio:.2f}x")}
    return res


# --------------------------------------------------------------------------- 5. on-policy
def on_policy_step(r: Runner, cpu: bool, cuda: bool, timeout: float) -> dict:
    argv = [sys.executable, "-m", "codistill", "experiment=smoke", "method=on_policy", "--cfg", "job"]
    p = r.run("on_policy:compose", argv, min(timeout, 120))
    if p.returncode != 0:
        return {"status": "skipped: not available (method=on_policy does not compose)", "error": _error(p)}
    run_dir = r.work / "runs" / "on_policy"
    argv = [sys.executable, "-m", "codistill", "experiment=smoke", "method=on_policy", "logger=csv",
            "eval.baseline=false", "trainer=cpu" if cpu or not cuda else "trainer=gpu", f"hydra.run.dir={run_dir}"]
    t0 = time.monotonic()
    p = r.run("on_policy", argv, timeout)
    wall = time.monotonic() - t0
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        return {"status": "failed", "error": _error(p), "command": shlex.join(argv[2:])}
    m = json.loads(metrics.read_text())
    figs = {k: v for k, v in m.items() if isinstance(v, (int, float, str)) and
            (k.startswith("train/") or "policy" in k or "rollout" in k or k in ("status", "time_s"))}
    steps = m.get("train/steps") or 0
    figs["wall_s"] = round(wall, 1)
    if steps:
        figs["wall_s_per_step (run incl. start-up)"] = round(wall / steps, 3)
    ok = m.get("status") == "ok"
    return {"status": "ok" if ok else "failed", "figures": figs, "command": shlex.join(argv[2:]),
            **({} if ok else {"error": str(m.get("error", m.get("status")))[:500]})}


def _mfu_missed(results: dict) -> bool:
    fig = results.get("train", {}).get("figures") or {}
    return fig.get("mfu", {}).get("codistill", 0.0) < TARGETS["train_mfu"]


def ceilings(cpu: bool) -> dict:
    """The two ceilings measured on this machine (device notes, METHOD.md): a bf16 matmul and a
    device-to-device copy (bytes read + written); the MFU itself uses the data-sheet peak."""
    import torch

    sys.path.insert(0, str(BENCH))
    import archs

    from codistill.training.speed import measure_cpu_peak, measure_matmul_flops

    if torch.cuda.is_available() and not cpu:
        flops = max(measure_matmul_flops(8192, repeat=10, dtype=torch.bfloat16, device="cuda") for _ in range(2))
        return {"bf16_matmul_tflops": flops / 1e12, "copy_tb_per_s": archs.measure_bandwidth("cuda", 4096) / 1e12}
    return {"bf16_matmul_tflops": measure_cpu_peak(torch.bfloat16) / 1e12,
            "copy_tb_per_s": archs.measure_bandwidth("cpu", 256) / 1e12}


def _verdict(met: bool, value: str) -> str:
    return f"{value} (met)" if met else f"{value} (NOT met)"


# --------------------------------------------------------------------------- report
def summary_rows(results: dict) -> list[tuple[str, str, str]]:
    """(step, status, the figures that matter) per step."""
    rows = []
    for name, res in results.items():
        f = res.get("figures") or {}
        if name.startswith("pipeline:") and f:
            tps, mfu = f.get("train/tokens_per_s"), f.get("train/mfu")
            text = f"{f.get('train/steps')} steps" + (f", {tps:.0f} tok/s" if tps else "") + \
                   (f", MFU {mfu:.1%}" if mfu else "")
        elif name == "train" and f:
            t = f["tokens_per_s"]
            text = ", ".join(f"{k} {v:.0f} tok/s" for k, v in t.items()) + "; " + \
                "; ".join(f"{k}: {v}" for k, v in res.get("targets", {}).items())
        elif name == "train:profile" and f:
            text = "top: " + ", ".join(f"{row['op']} {row['share']:.0%}" for row in f["profile"][:5])
        elif name == "generation" and f:
            text = ", ".join(f"{row['name']}: {row['tokens_per_s']:.0f} tok/s" for row in f["rows"]) + \
                f"; bound {f['bound_tokens_per_s']:.0f} tok/s (hf at {f['hf_fraction_of_bound']:.1%})"
        elif name == "kd" and f:
            text = ", ".join(f"{k} {v:.3f} s/step" for k, v in f["step_s"].items()) + "; " + \
                "; ".join(f"{k}: {v}" for k, v in res.get("targets", {}).items())
        elif name == "on_policy" and f:
            text = ", ".join(f"{k} {v}" for k, v in f.items() if k in ("train/steps", "train/tokens_per_s", "wall_s",
                                                                       "wall_s_per_step (run incl. start-up)"))
        else:
            text = res.get("error", "")
        rows.append((name, res["status"], text))
    return rows


def write_report(out: Path, report: dict) -> str:
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    rows = summary_rows(report["steps"])
    lines = [f"# GPU check ({report['mode']}), {report['date']}", "",
             "versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), "",
             "measured ceilings: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in report["ceilings"].items()), "",
             "| step | status | figures |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c.replace('|', '/')} |" for a, b, c in rows]
    lines += ["", f"total {report['seconds']:.0f} s; every step's command and output: steps.log; all figures: "
              "report.json"]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="every step tiny, on the CPU (CI)")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="report directory (default $OUT)")
    ap.add_argument("--work", default=None, help="runs and caches (default: a temporary directory)")
    ap.add_argument("--only", default=None, help="comma-separated steps or prefixes (pipeline, train, generation, "
                                                  "kd, on_policy)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for all steps (8 minutes on the H200)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    cuda = has_cuda()
    r = Runner(out, work, args.budget, inprocess=args.cpu)
    os.environ.update({k: v for k, v in r.env.items() if k != "PYTHONPATH"})
    t0 = time.monotonic()
    per_pipeline = 120 if args.cpu else 150
    plan: list[tuple[str, object]] = []
    for name, overrides, needs_cuda in pipeline_steps(args.cpu, cuda):
        plan.append((name, (lambda n=name, o=overrides, c=needs_cuda:
                            {"status": "skipped: no CUDA"} if c and not cuda else pipeline_step(r, n, o, per_pipeline))))
    plan += [("train", lambda: train_step(r, args.cpu, 240)),
             ("train:profile", lambda: profile_step(r, args.cpu, 150) if args.cpu or _mfu_missed(results)
              else {"status": "skipped: MFU target met"}),
             ("generation", lambda: generation_step(r, args.cpu, 180)),
             ("kd", lambda: kd_step(r, args.cpu, 180)),
             ("on_policy", lambda: on_policy_step(r, args.cpu, cuda, 150))]
    wanted = [w.strip() for w in args.only.split(",")] if args.only else None
    results: dict[str, dict] = {}
    for name, fn in plan:
        if wanted and not any(name == w or name.startswith(w + ":") for w in wanted):
            continue
        if r.left() < 10:
            results[name] = {"status": "skipped: time budget spent"}
            continue
        s0 = time.monotonic()
        try:
            results[name] = fn()
        except Exception as e:  # noqa: BLE001 - one broken step must not lose the others' figures
            results[name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:500]}
        results[name]["seconds"] = round(time.monotonic() - s0, 1)
        print(f"[gpu_check] {name}: {results[name]['status']} ({results[name]['seconds']} s)", flush=True)
    try:
        measured = ceilings(args.cpu)
    except Exception as e:  # noqa: BLE001
        measured = {"error": f"{type(e).__name__}: {e}"[:300]}
    report = {"mode": "cpu" if args.cpu else "gpu", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "versions": versions(), "ceilings": measured, "targets": TARGETS, "seconds": round(time.monotonic() - t0, 1),
              "work": str(work), "steps": results}
    print(write_report(out, report))
    failed = [n for n, res in results.items() if res["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
