"""A job directory under retries and concurrent sweeps (issues 15.6, 15.7) and what it stores
of an error (15.8: no secrets).  Real CLI processes, real Hydra, real W&B offline files."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, LoopbackServer, run_cli
from wandb_records import offline_runs

FAST = ["experiment=smoke", "method=none", "eval.baseline=false", "dataset.train_size=2", "dataset.test_size=2",
        "sampling.n=2", "sampling.max_new_tokens=8", "eval.n_samples=0", "eval.k=[1]", "eval.max_new_tokens=8",
        "task.num_shots=0"]

HOLD = """
import sys
from codistill.joblock import job_lock
with job_lock(sys.argv[1], "fail"):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


def _hold(d: Path) -> subprocess.Popen:
    """Another process holding ``d``'s job lock until its stdin is closed."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(d)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert p.stdout.readline().strip() == "held"
    return p


def _release(p: subprocess.Popen) -> None:
    p.stdin.close()
    p.wait(timeout=30)


def test_a_retried_job_resumes_its_one_wandb_run(tmp_path):
    d = tmp_path / "job"
    env = {"CODISTILL_CACHE": str(tmp_path / "cache")}
    first = run_cli([*FAST, "student.source=local", "student.path=/nonexistent", f"hydra.run.dir={d}"],
                    cwd=tmp_path, env=env)  # fails after its W&B run started
    failed = json.loads((d / "metrics.json").read_text())
    assert first.returncode == 1 and failed["status"] == "failed" and "/nonexistent" in failed["error"]
    second = run_cli([*FAST, f"hydra.run.dir={d}"], cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    runs = [r for _, r in offline_runs(d)]
    run_id = json.loads((d / "wandb_run_id.json").read_text())["id"]
    assert len(runs) == 2 and {r.run_id for r in runs} == {run_id}  # one job, one W&B run id
    assert runs[-1].summary.get("status") == "ok"


def test_a_single_run_into_a_running_jobs_directory_fails_naming_both(tmp_path):
    d = tmp_path / "job"
    holder = _hold(d)
    try:
        p = run_cli([*FAST, f"hydra.run.dir={d}"], cwd=tmp_path, env={"CODISTILL_CACHE": str(tmp_path / "cache")})
    finally:
        _release(holder)
    out = p.stdout + p.stderr
    assert p.returncode == 1 and "JobLockedError" in out and f"{d} is in use" in out and f"pid {holder.pid}" in out
    assert not (d / "metrics.json").exists() and not (d / "wandb").exists()  # it touched nothing


def test_a_sweep_skips_or_waits_for_a_job_another_sweep_runs(tmp_path):
    sweep = tmp_path / "sweep"
    job = sweep / "job"
    env = {"CODISTILL_CACHE": str(tmp_path / "cache")}
    args = ["-m", *FAST, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job"]
    holder = _hold(job)
    try:
        skip = run_cli([*args, "sweep_lock=skip"], cwd=tmp_path, env=env)
        assert skip.returncode == 0, skip.stderr[-3000:]
        out = skip.stdout + skip.stderr
        assert f"skipped ({job})" in out and f"in use by pid {holder.pid}" in out
        assert not (job / "metrics.json").exists() and not (job / "wandb").exists()
        # wait: the job starts only once the other one lets go of the directory
        log = (tmp_path / "wait.out").open("w")
        waiting = subprocess.Popen([sys.executable, "-m", "codistill", *args], cwd=tmp_path, stdout=log,
                                   stderr=subprocess.STDOUT, env={**__import__("os").environ, **env})
        deadline = time.time() + 120
        while f"in use by pid {holder.pid}" not in (tmp_path / "wait.out").read_text():
            assert waiting.poll() is None and time.time() < deadline, (tmp_path / "wait.out").read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(1.0)
        assert not (job / "metrics.json").exists()  # still waiting
    finally:
        _release(holder)
    assert waiting.wait(timeout=300) == 0, (tmp_path / "wait.out").read_text()[-3000:]
    assert json.loads((job / "metrics.json").read_text())["status"] == "ok"
    assert "waiting for it to finish" in (job / "run.log").read_text()
    assert len(offline_runs(job)) == 1


class EchoKeyServer(LoopbackServer):
    """An OpenAI-compatible endpoint that rejects every request echoing the key it was sent,
    as api.openai.com does ("Incorrect API key provided: sk-...")."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                body = json.dumps({"error": {"message": f"Incorrect API key provided: {key}. "
                                                        f"You sent 'Authorization: Bearer {key}'",
                                             "type": "invalid_request_error", "code": "invalid_api_key"}})
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

        self.start(Handler)


def test_an_echoed_api_key_is_stored_nowhere(tmp_path):
    secret = "sk-codistill-test-7f3a9c1e5b2d4068"
    server = EchoKeyServer()
    job = tmp_path / "sweep" / "job"
    try:
        p = run_cli(["-m", *FAST, "method=ekt", "teacher.backend=openai", f"generation.openai.base_url={server.url}",
                     "generation.openai.max_retries=0", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                     "hydra.sweep.subdir=job"], cwd=tmp_path,
                    env={"CODISTILL_CACHE": str(tmp_path / "cache"), "OPENAI_API_KEY": secret})
    finally:
        server.close()
    assert p.returncode == 1, p.stderr[-3000:]
    m = json.loads((job / "metrics.json").read_text())
    assert m["status"] == "failed" and "Incorrect API key provided: ***" in m["error"] and "traceback" in m
    assert "Incorrect API key provided: ***" in (job / "run.log").read_text()
    stored = [f for f in job.rglob("*") if f.is_file()]
    assert any(f.suffix == ".wandb" for f in stored)
    leaks = [str(f) for f in stored if secret.encode() in f.read_bytes()]
    assert not leaks and secret not in p.stdout + p.stderr, leaks


def test_redact_masks_keys_bearer_tokens_and_url_passwords(monkeypatch):
    from codistill.redact import redact, register_secret_env, strip_url_credentials

    monkeypatch.setenv("MY_SERVER_KEY", "local-secret-value")
    register_secret_env("MY_SERVER_KEY")
    text = ("POST https://bob:hunter22@api.example.com/v1 failed: Authorization: Bearer abc.def-123 "
            "key local-secret-value rejected; sk-ABCDEFGHIJKLMNOPQRSTUV")
    clean = redact(text)
    for s in ("hunter22", "abc.def-123", "local-secret-value", "sk-ABCDEFGHIJKLMNOPQRSTUV"):
        assert s not in clean
    assert "https://bob:***@api.example.com/v1" in clean and "Bearer ***" in clean
    assert strip_url_credentials("https://bob:hunter22@h:1/v1") == "https://h:1/v1"
