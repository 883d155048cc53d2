"""Semantics of codistill.execution: statuses, values, ordering, isolation selection, pass@k."""
from __future__ import annotations

import ast
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from fractions import Fraction

import pytest

from codistill import execution
from codistill.execution import ExecResult, ExecutionPool, Program, isolation_info, pass_at_k, run_programs
from codistill.execution import api, bwrap, cleanup

BWRAP_OK = isolation_info("bwrap")["usable"]
LEVELS = ["process", pytest.param("bwrap", marks=pytest.mark.skipif(not BWRAP_OK, reason="bubblewrap unusable here: "
                                                                    + isolation_info("bwrap")["details"]))]


@pytest.fixture(scope="module", params=LEVELS)
def pool(request):
    with ExecutionPool(max_workers=2, isolation=request.param) as p:
        yield p


def run1(pool, source, **kw):
    entry = kw.pop("entry", None)
    stdin = kw.pop("stdin", "")
    return pool.run([Program(source, entry=entry, stdin=stdin)], **kw)[0]


# ----------------------------------------------------------------------------- statuses
def test_passed_and_output(pool):
    r = run1(pool, "print('hello'); import sys; print('warn', file=sys.stderr)")
    assert isinstance(r, ExecResult)
    assert (r.status, r.passed, r.value, r.error) == ("passed", True, None, None)
    assert r.stdout == "hello\n" and r.stderr == "warn\n"
    assert r.duration_s > 0


def test_exception_is_error(pool):
    r = run1(pool, "raise ValueError('boom')")
    assert (r.status, r.passed, r.error) == ("error", False, "ValueError: boom")
    assert "Traceback" in r.stderr
    r = run1(pool, "assert 1 == 2, 'nope'")
    assert (r.status, r.error) == ("error", "AssertionError: nope")
    r = run1(pool, "def f(:\n  pass")
    assert r.status == "error" and r.error.startswith("SyntaxError")


@pytest.mark.parametrize("src", [
    "import sys\nsys.exit(0)\nassert False",
    "raise SystemExit\nassert False",
    "import sys\nsys.exit(1)",
    "import os\nos._exit(0)\nassert False",
    "import os\nos.write(3, b'{\"status\": \"passed\", \"nonce\": \"guess\", \"value\": null}')\nos._exit(0)",
])
def test_early_exit_is_failed_never_passed(pool, src):
    r = run1(pool, src)
    assert r.status == "failed" and not r.passed, r


def test_self_kill_is_killed(pool):
    r = run1(pool, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\nprint('unreachable')")
    assert r.status == "killed" and "SIGKILL" in r.error


def test_stdin(pool):
    r = run1(pool, "import sys\nx = sys.stdin.read().split()\nprint(sum(map(int, x)))", stdin="1 2 3\n4\n")
    assert r.status == "passed" and r.stdout == "10\n"
    r = run1(pool, "print(len(input()))", stdin="é" * 100_000 + "\n")  # bigger than a pipe buffer
    assert r.status == "passed" and r.stdout == "100000\n"


def test_timeout(pool):
    t = time.monotonic()
    r = run1(pool, "while True:\n    pass", timeout_s=1.0)
    assert r.status == "timeout" and "timeout" in r.error
    assert time.monotonic() - t < 5


def test_memory_limit_is_killed(pool):
    r = run1(pool, "x = bytearray(10**10)", memory_mb=256)
    assert r.status == "killed" and "MemoryError" in r.error


def test_output_cap(pool):
    r = run1(pool, "print('y' * 50_000)", output_limit_bytes=1000)
    assert r.status == "killed" and "output limit" in r.error
    assert len(r.stdout) < 1200


def test_main_module_semantics(pool):
    src = ("from dataclasses import dataclass\n@dataclass\nclass P:\n    x: int\n"
           "if __name__ == '__main__':\n    print(P(3))\n")
    r = run1(pool, src)
    assert r.status == "passed" and r.stdout == "P(x=3)\n"


def test_cwd_and_home_are_private_temp_dir(pool):
    r = run1(pool, "import os\nopen('f.txt','w').write('x')\nprint(os.getcwd() == os.environ['HOME'], os.listdir('.'))")
    assert r.status == "passed" and r.stdout == "True ['f.txt']\n"


def test_fresh_temp_dirs_and_none_left_after_the_batch(pool):
    # each program starts in a new empty dir; the worker may remove a finished program's dir
    # while the next one runs, but never later than the batch's last answer
    src = ("import os\nassert os.listdir('.') == [], os.listdir('.')\nos.makedirs('d/e')\n"
           "open('d/e/f.txt', 'w').write('x')\nopen('g.txt', 'w').write('y')\nprint(os.getcwd())")
    res = pool.run([src] * 12 + ["print(__import__('os').getcwd())"] * 12)
    assert [r.status for r in res] == ["passed"] * 24, [(r.status, r.error) for r in res]
    cwds = [r.stdout.strip() for r in res]
    assert len(set(cwds)) == 24
    if pool.level == "process":  # the bwrap level's dirs live in each sandbox's private /tmp
        for d in os.listdir(pool.tmp_root):
            assert os.listdir(os.path.join(pool.tmp_root, d)) == []
        assert not any(os.path.exists(c) for c in cwds)
    else:
        # the private /tmp holds this program's dir, plus the read-only binds of a checkout or venv
        # that itself lives under /tmp (e.g. a CI clone in /tmp/clean)
        bound = {x.split("/")[2] for x in sys.path if x.startswith("/tmp/")}
        r = pool.run(["import os\nprint(sorted(set(os.listdir('/tmp')) - {os.path.basename(os.getcwd())}))"] * 4)
        assert all(set(ast.literal_eval(x.stdout)) <= bound for x in r), ([x.stdout for x in r], bound)


def test_common_modules_importable(pool):
    r = run1(pool, "import math, re, json, collections, hashlib, numpy, email.mime.text, xml.etree.ElementTree\nprint('ok')")
    assert r.status == "passed", r


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("expr,expected", [
    ("42", 42), ("'s'", "s"), ("None", None), ("True", True), ("2.5", 2.5),
    ("(1, [2, (3,)])", [1, [2, [3]]]), ("{'a': [1, 2.0]}", {"a": [1, 2.0]}),
    ("__import__('fractions').Fraction(1, 4)", 0.25), ("__import__('decimal').Decimal('1.5')", 1.5),
    ("__import__('numpy').float64(0.5)", 0.5), ("__import__('numpy').int64(7)", 7),
    ("__import__('numpy').bool_(True)", True), ("__import__('collections').OrderedDict(a=1)", {"a": 1}),
])
def test_entry_values_are_plain(pool, expr, expected):
    r = run1(pool, f"def solution():\n    return {expr}\n", entry="solution")
    assert r.status == "passed", r
    assert r.value == expected and type(r.value) is type(expected)


def test_entry_non_callable_global(pool):
    r = run1(pool, "answer = [1, 2]", entry="answer")
    assert r.status == "passed" and r.value == [1, 2]


@pytest.mark.parametrize("expr,tname", [("{1, 2}", "set"), ("object()", "object"), ("1j", "complex"),
                                        ("b'x'", "bytes"), ("__import__('numpy').arange(3)", "ndarray")])
def test_entry_rejects_non_json_values(pool, expr, tname):
    r = run1(pool, f"def solution():\n    return {expr}\n", entry="solution")
    assert r.status == "error" and not r.passed and r.value is None
    assert r.error == f"entry returned non-JSON-safe value of type {tname}"


def test_entry_rejects_non_str_keys_and_cycles(pool):
    r = run1(pool, "def solution():\n    return {1: 2}\n", entry="solution")
    assert r.status == "error" and "non-str key" in r.error
    r = run1(pool, "x = []\nx.append(x)\ndef solution():\n    return x\n", entry="solution")
    assert r.status == "error" and "nested too deeply" in r.error


def test_entry_missing_or_raising(pool):
    r = run1(pool, "x = 1", entry="solution")
    assert r.status == "error" and r.error.startswith("NameError")
    r = run1(pool, "def solution():\n    raise KeyError('k')", entry="solution")
    assert r.status == "error" and r.error == "KeyError: 'k'"
    r = run1(pool, "def solution():\n    raise SystemExit(0)", entry="solution")
    assert r.status == "failed"


def test_rigged_eq_cannot_become_correct(pool):
    src = ("class Evil(int):\n    def __eq__(s, o): return True\n    def __ne__(s, o): return False\n"
           "    def __index__(s): return 999\n    def __int__(s): return 999\n    def __repr__(s): return '999'\n"
           "    __hash__ = int.__hash__\n"
           "class EvilF(float):\n    def __eq__(s, o): return True\n    def __float__(s): return 999.0\n"
           "    __hash__ = float.__hash__\n"
           "def solution():\n    return Evil(3)\n"
           "def sol_f():\n    return EvilF(1.5)\n"
           "def sol_list():\n    return [Evil(4), {'k': Evil(5)}]\n")
    r = pool.run([Program(src, entry="solution"), Program(src, entry="sol_f"), Program(src, entry="sol_list")])
    assert [x.status for x in r] == ["passed"] * 3
    assert type(r[0].value) is int and r[0].value == 3 and r[0].value != 42
    assert type(r[1].value) is float and r[1].value == 1.5 and r[1].value != 999.0
    assert r[2].value == [4, {"k": 5}] and type(r[2].value[0]) is int and type(r[2].value[1]["k"]) is int


# ----------------------------------------------------------------------------- ordering, pool, robustness
def test_results_in_input_order(pool):
    rnd = random.Random(0)
    progs = [Program(f"import time\ntime.sleep({rnd.random() * 0.05:.3f})\ndef f():\n    return {i}\n", entry="f")
             for i in range(40)]
    progs.insert(5, "raise RuntimeError('x')")
    res = pool.run(progs)
    assert len(res) == 41
    assert res[5].status == "error"
    assert [r.value for i, r in enumerate(res) if i != 5] == list(range(40))


def test_plain_strings_and_empty_batch(pool):
    assert pool.run([]) == []
    assert [r.status for r in pool.run(["pass", "1/0"])] == ["passed", "error"]


def test_worker_killed_from_outside_is_replaced(pool):
    progs = ["import time\ntime.sleep(0.3)"] * 6 + ["print(1)"] * 4
    pids = pool.worker_pids()
    assert pids
    restarts = pool.restarts
    t = threading.Timer(0.15, lambda: os.killpg(pids[0], signal.SIGKILL))
    t.start()
    res = pool.run(progs)
    t.join()
    assert len(res) == 10 and all(isinstance(r, ExecResult) for r in res)
    assert pool.restarts == restarts + 1
    assert sum(r.status == "killed" for r in res) <= 1
    assert all(r.passed for r in res if r.status != "killed")
    assert [r.status for r in pool.run(["print(2)"] * 3)] == ["passed"] * 3


def test_run_programs_shared_pool_and_shutdown():
    res = run_programs(["print(1)", Program("def f(): return 'x'", entry="f")], isolation="process", max_workers=1)
    assert [(r.status, r.value) for r in res] == [("passed", None), ("passed", "x")]
    assert ("process", 1) in api._pools
    execution.shutdown()
    assert not api._pools


def test_keyboard_interrupt_leaves_nothing(tmp_path):
    pool = ExecutionPool(max_workers=2, isolation="process")
    pool.start()
    tmp_root, uids, workers = pool.tmp_root, pool.sandbox_uids, pool.worker_pids()
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        with pytest.raises(KeyboardInterrupt):
            pool.run(["import os\nos.posix_spawn('/bin/sleep', ['sleep', '997'], {}, setsid=True)\nwhile True: pass"] * 2,
                     timeout_s=30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert pool._closed
    assert not os.path.exists(tmp_root)
    time.sleep(0.2)
    leftovers = [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline(pid) == "sleep 997"]
    assert leftovers == []
    assert not any(os.path.exists(f"/proc/{w}") for w in workers)
    assert not set(_descendants(os.getpid())) & set(workers)
    assert _processes_of_uids(uids) == []


def _processes_of_uids(uids) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    uid_line = next(line for line in f if line.startswith("Uid:"))
                if {int(x) for x in uid_line.split()[1:]} & set(uids):
                    out.append(int(name))
            except (OSError, StopIteration, ValueError):
                pass
    return out


def _cmdline(pid) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        st = cleanup.proc_stat(name) if name.isdigit() else None
        if st is not None and st[0] != b"Z":
            kids.setdefault(st[1], []).append(int(name))
    out, stack = [], [root]
    while stack:
        for k in kids.get(stack.pop(), []):
            out.append(k)
            stack.append(k)
    return out


# ----------------------------------------------------------------------------- isolation selection
def test_worker_stays_lean_and_public_names_resolve():
    # every module the worker imports enlarges each per-program fork: the caller's side (api and
    # what it pulls in) must stay out of it
    import subprocess
    import sys
    code = ("import sys, codistill.execution.worker\n"
            "bad = [m for m in ('codistill.execution.api', 'subprocess', 'threading', 'logging', 'argparse',"
            " 'tempfile', 'decimal', 'fractions', 'shutil') if m in sys.modules]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
    assert execution.run_programs is run_programs and execution.api is api
    assert set(execution.__all__) <= set(dir(execution))
    with pytest.raises(AttributeError):
        execution.no_such_name


def test_isolation_info_shape():
    for lvl in ("auto", "process", "bwrap"):
        info = isolation_info(lvl)
        assert {"level", "usable", "uid_drop", "network", "details"} <= set(info)
    p = isolation_info("process")
    assert p["level"] == "process" and p["network"] == "host" and p["uid_drop"] == (os.geteuid() == 0)
    if BWRAP_OK:
        b = isolation_info("bwrap")
        assert b["level"] == "bwrap" and b["network"] == "none" and b["uid_drop"] is True
        assert isolation_info("auto")["level"] in ("bwrap", "process")
    with pytest.raises(ValueError):
        isolation_info("docker")


def test_bwrap_unusable_raises_and_auto_warns_once(monkeypatch, caplog, capsys):
    monkeypatch.setattr(bwrap, "probe", lambda force=False: (False, "simulated: no user namespaces"))
    monkeypatch.setattr(api, "_warned", False)
    monkeypatch.delenv(api.ISOLATION_ENV, raising=False)
    with pytest.raises(RuntimeError, match="bubblewrap is unusable"):
        run_programs(["print(1)"], isolation="bwrap")
    info = isolation_info("bwrap")
    assert info["usable"] is False and "simulated" in info["details"]
    assert isolation_info("auto")["level"] == "process"
    with caplog.at_level(logging.WARNING, logger="codistill.execution"):
        assert api.resolve_isolation("auto") == "process"
        assert api.resolve_isolation("auto") == "process"
    warnings = [r for r in caplog.records if "NETWORK IS NOT ISOLATED" in r.getMessage()]
    assert len(warnings) == 1
    assert capsys.readouterr().err.count("NETWORK IS NOT ISOLATED") == 1


def test_env_var_forces_auto(monkeypatch):
    monkeypatch.setenv(api.ISOLATION_ENV, "process")
    assert api.resolve_isolation("auto") == "process"
    assert isolation_info("auto")["level"] == "process"


# ----------------------------------------------------------------------------- pass@k
def _exact(n, c, k):
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def test_pass_at_k_matches_exact_formula():
    for n in range(1, 41):
        for c in range(0, n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(_exact(n, c, k), rel=1e-12, abs=1e-12), (n, c, k)


def test_pass_at_k_edges():
    assert pass_at_k(1, 0, 1) == 0.0 and pass_at_k(1, 1, 1) == 1.0
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 6, 5) == 1.0          # n - c < k
    assert pass_at_k(5, 2, 10) == 1.0 and pass_at_k(5, 0, 10) == 0.0   # k > n: documented saturation
    for bad in [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 1, 0)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)
    with pytest.raises(TypeError):
        pass_at_k(5.0, 1, 1)


def test_pass_at_k_large_n_stable():
    for c, k in [(1, 1), (1, 100), (37, 10), (500, 1000), (9000, 100), (3, 5000)]:
        got = pass_at_k(10_000, c, k)
        exact = 1.0 - Fraction(math.comb(10_000 - c, k), math.comb(10_000, k)) if 10_000 - c >= k else 1.0
        assert got == pytest.approx(float(exact), rel=1e-10, abs=1e-15)
        assert 0.0 <= got <= 1.0
    assert pass_at_k(10_000, 1, 1) == pytest.approx(1e-4, rel=1e-12)
    assert pass_at_k(100_000, 5, 1) == pytest.approx(5e-5, rel=1e-12)


def test_caller_with_tmp_on_sys_path_keeps_private_tmp(tmp_path):
    """A script run from /tmp puts /tmp on sys.path; the sandbox must still get a private,
    writable /tmp (regression: the host /tmp was bound read-only over it and nothing ran)."""
    import subprocess
    import sys

    script = tmp_path / "caller.py"
    script.write_text(
        "import sys\nsys.path.insert(0, '/tmp')\n"
        "from codistill.execution import run_programs, Program\n"
        "r = run_programs([Program(\"import os\\nopen('/tmp/x', 'w').write('1')\\nv = sorted(os.listdir('/tmp'))\","
        " entry='v')], timeout_s=10)[0]\n"
        "print(r.status, r.value)\n")
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    status, _, rest = p.stdout.strip().partition(" ")
    assert status == "passed", p.stdout + p.stderr
    if rest.startswith("["):
        assert "caller.py" not in rest  # the host's /tmp is not what the program sees
