"""HumanEval+ / MBPP+ tasks: the humaneval and mbpp tasks, judged by EvalPlus's tests.

Prompts and program extraction are those of :class:`HumanEvalTask` / :class:`MBPPTask`; only the
check differs.  EvalPlus tests by *differential testing*: a test is an input, and the program
passes it when its output equals the reference's (``prompt + canonical_solution``), within
``atol`` for floats, with a few per-problem oracles.  Each program is checked on the original
tests (``base_input``) and on EvalPlus's (``plus_input``) in one sandbox run, and both verdicts
are kept: ``eval/pass@k`` counts the base verdict, ``eval/plus/pass@k`` the plus one, which as in
EvalPlus means passing base *and* plus tests.

Time limits, as EvalPlus's ``evaluate.py``: first the reference is run on every input in the
sandbox and timed (:meth:`EvalPlusChecks.prepare_checks`, once per problem and task object);
then each test of a candidate gets ``max(min_time_limit, gt_time_limit_factor * reference
time)`` seconds (EvalPlus's defaults 1.0 s and 4.0), enforced inside the sandboxed program with
``SIGALRM`` per call; a suite stops at its first failing test (EvalPlus's default fast check).
The sandbox's wall clock is a backstop: per suite ``min(60, sum of its limits) + 1`` s, as
EvalPlus's per-process timeout.

The expected outputs travel from the reference's run to the candidate's as a pickle inside the
sandboxed programs (types intact: tuples, sets, floats); the parent process only passes the
string on, and only ever reads plain JSON verdicts back.
"""

from __future__ import annotations

import base64
import pickle
from typing import TYPE_CHECKING

from codistill.tasks.base import Problem
from codistill.tasks.humaneval import HumanEvalTask
from codistill.tasks.mbpp import MBPPTask

if TYPE_CHECKING:
    from codistill.execution import ExecResult, Program

#: EvalPlus's defaults (evalplus/config.py)
DEFAULT_MIN_TIME_LIMIT = 1.0
DEFAULT_GT_TIME_LIMIT_FACTOR = 4.0
#: EvalPlus's cap on one suite's timeout (EVALPLUS_TIMEOUT_PER_TASK)
SUITE_TIMEOUT_CAP_S = 60.0
GT_TIMEOUT_S = 120.0
EXEC_LIMIT_S = 5.0  # the candidate's top-level code (definitions, imports)
SUITES = ("base", "plus")

# MBPP+ special oracles (EvalPlus's evalplus/eval/_special_oracle.py): entry points whose output is
# compared as a set, or only as "not None"
MBPP_OUTPUT_NOT_NONE_TASKS = ["check_str", "text_match_three", "text_starta_endb"]
MBPP_OUTPUT_SET_EQ_TASKS = ["similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
                            "larg_nnum", "intersection_array", "find_dissimilar", "Diff"]


def _pack(obj) -> str:
    return base64.b64encode(pickle.dumps(obj, protocol=4)).decode("ascii")


# The reference's run: outputs and per-input times (EvalPlus's trusted_exec, in the sandbox).
_GT_BODY = r'''
import base64 as _b64, copy as _copy, pickle as _pickle, time as _time
_D = _pickle.loads(_b64.b64decode(_DATA))
_ns = {}
exec(_D["code"], _ns)
_fn = _ns[_D["entry"]]
_out, _times = {}, {}
for _suite in ("base", "plus"):
    _out[_suite], _times[_suite] = [], []
    for _inp in _D["inputs"][_suite]:
        _inp = _copy.deepcopy(_inp)
        _t0 = _time.perf_counter()
        _r = _fn(*_inp)
        _times[_suite].append(_time.perf_counter() - _t0)
        _out[_suite].append((_r is not None) if _D["output_not_none"] else _r)
__evalplus_gt__ = {"times": _times, "expected": _b64.b64encode(_pickle.dumps(_out, protocol=4)).decode("ascii")}
'''

# The candidate's check (EvalPlus's unsafe_execute, fast check): both suites, both verdicts.
_CHECK_BODY = r'''
import base64 as _b64, io as _io, math as _math, pickle as _pickle, signal as _signal, sys as _sys
_D = _pickle.loads(_b64.b64decode(_DATA))
_D["expected"] = _pickle.loads(_b64.b64decode(_D["expected"]))


class _TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise _TestTimeout("per-test time limit")


def _is_floats(x):
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    try:
        import numpy as _np
    except ImportError:
        return False
    return isinstance(x, _np.ndarray) and x.dtype in (_np.float64, _np.float32)


def _poly(xs, x):
    return sum([c * _math.pow(x, i) for i, c in enumerate(xs)])


def _surface_Area(base_edge, height):
    slant = _math.sqrt((base_edge / 2) ** 2 + height ** 2)
    return round(base_edge ** 2 + 4 * (base_edge * slant) / 2)


def _digit_distance_nums(n1, n2):
    s1, s2 = str(n1), str(n2)
    m = max(len(s1), len(s2))
    return sum(abs(int(a) - int(b)) for a, b in zip(s1.zfill(m), s2.zfill(m)))


def _same(out, exp, inp, atol):
    entry, flavour = _D["entry"], _D["flavour"]
    exact = out == exp
    if flavour == "mbpp":
        if entry == "are_equivalent":
            exact = True
        elif entry == "sum_div":
            exact = exact or out == 0
        elif entry == "surface_Area":
            exact = exact or abs(out - _surface_Area(*inp)) <= atol
        elif entry == "digit_distance_nums":
            exact = exact or out == _digit_distance_nums(*inp)
        elif entry in _D["set_eq"]:
            exact = set(out) == set(exp)
        elif entry in _D["not_none"]:
            exact = (out == exp) if isinstance(out, bool) else (exp == (out is not None))
    if flavour == "humaneval" and entry == "find_zero":
        return abs(_poly(*inp, out)) <= atol
    if atol == 0 and _is_floats(exp):
        atol = 1e-6
    if not exact and atol != 0:
        import numpy as _np
        if type(out) != type(exp):
            return False
        if isinstance(exp, (list, tuple)) and len(out) != len(exp):
            return False
        return bool(_np.allclose(out, exp, rtol=1e-07, atol=atol))
    return bool(exact)


def _suite(fn, suite):
    inputs, expected, limits = _D["inputs"][suite], _D["expected"][suite], _D["limits"][suite]
    for i, inp in enumerate(inputs):
        try:
            _signal.setitimer(_signal.ITIMER_REAL, limits[i])
            _old = _sys.stdout, _sys.stderr
            _sys.stdout = _sys.stderr = _io.StringIO()
            try:
                out = fn(*inp)
            finally:
                _signal.setitimer(_signal.ITIMER_REAL, 0)
                _sys.stdout, _sys.stderr = _old
            if not _same(out, expected[i], inp, _D["atol"]):
                return "fail", i
        except BaseException as e:
            return ("timeout" if isinstance(e, _TestTimeout) else "fail"), i
    return "pass", len(inputs)


def _check():
    _signal.signal(_signal.SIGALRM, _alarm)
    ns = {}
    _old = _sys.stdout, _sys.stderr
    _sys.stdout = _sys.stderr = _io.StringIO()
    try:
        _signal.setitimer(_signal.ITIMER_REAL, _D["exec_limit"])
        exec(_SOLUTION, ns)
        _signal.setitimer(_signal.ITIMER_REAL, 0)
        fn = ns[_D["entry"]]
    except BaseException as e:
        _signal.setitimer(_signal.ITIMER_REAL, 0)
        return {"base": False, "plus": False, "base_status": "fail", "plus_status": "fail",
                "error": type(e).__name__}
    finally:
        _sys.stdout, _sys.stderr = _old
    res = {}
    for suite in ("base", "plus"):
        status, at = _suite(fn, suite)
        res[suite], res[suite + "_status"], res[suite + "_tests_run"] = status == "pass", status, at
    return res


__evalplus__ = _check()
'''


def time_limits(times: list[float], min_time_limit: float, factor: float) -> list[float]:
    """EvalPlus's per-test limits: ``max(min_time_limit, factor * reference time)`` (pure)."""
    return [max(min_time_limit, factor * t) for t in times]


def suite_budget(limits: list[float]) -> float:
    """EvalPlus's wall timeout of one suite's process: ``min(60, sum(limits)) + 1`` (pure)."""
    return min(SUITE_TIMEOUT_CAP_S, sum(limits)) + 1.0


class EvalPlusChecks:
    """The EvalPlus check, mixed into a task whose problems carry ``base_input``/``plus_input``."""

    plus_tests = True  # evaluation reports eval/plus/pass@k beside eval/pass@k

    def __init__(self, *args, min_time_limit: float = DEFAULT_MIN_TIME_LIMIT,
                 gt_time_limit_factor: float = DEFAULT_GT_TIME_LIMIT_FACTOR, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.min_time_limit = float(min_time_limit)
        self.gt_time_limit_factor = float(gt_time_limit_factor)
        self.ground_truth: dict[str, dict] = {}  # problem id -> {"expected": str, "limits": {...}}

    def _data(self, problem: Problem) -> dict:
        m = problem.meta
        return {"entry": m["entry_point"], "flavour": m["evalplus"],
                "inputs": {"base": m["base_input"], "plus": m["plus_input"]}}

    def prepare_checks(self, problems: list[Problem], *, timeout_s: float, memory_mb: int) -> float:
        """Run and time the reference of every problem not timed yet (one sandbox batch); return
        the wall timeout for a batch of these problems' checks (at least ``timeout_s``)."""
        from codistill.datasets.gsm8k import DataFileError
        from codistill.execution import Program, run_programs

        todo = list({p.id: p for p in problems if p.id not in self.ground_truth}.values())
        if todo:
            progs = []
            for p in todo:
                d = self._data(p)
                d.update(code=p.meta["prompt"] + p.meta["canonical_solution"],
                         output_not_none=p.meta["evalplus"] == "mbpp" and d["entry"] in MBPP_OUTPUT_NOT_NONE_TASKS)
                progs.append(Program(source=f"_DATA = {_pack(d)!r}\n{_GT_BODY}", entry="__evalplus_gt__"))
            results = run_programs(progs, timeout_s=max(GT_TIMEOUT_S, timeout_s), memory_mb=memory_mb)
            for p, r in zip(todo, results):
                if not r.passed:
                    raise DataFileError(f"{p.id}: the reference solution (prompt + canonical_solution) failed on "
                                        f"its own inputs in the sandbox ({r.status}: {r.error})")
                limits = {s: time_limits(r.value["times"][s], self.min_time_limit, self.gt_time_limit_factor)
                          for s in SUITES}
                self.ground_truth[p.id] = {"expected": r.value["expected"], "limits": limits,
                                           "times": r.value["times"]}
        return max([timeout_s] + [self.wall_timeout_s(p) for p in problems])

    def wall_timeout_s(self, problem: Problem) -> float:
        """The sandbox's backstop for one check: both suites' EvalPlus budgets, plus the program's
        own start (its top-level code gets ``EXEC_LIMIT_S``)."""
        lim = self.ground_truth[problem.id]["limits"]
        return sum(suite_budget(lim[s]) for s in SUITES) + EXEC_LIMIT_S + 1.0

    def check_program(self, problem: Problem, program: str) -> Program:
        from codistill.execution import Program

        if problem.id not in self.ground_truth:
            raise RuntimeError(f"{problem.id}: prepare_checks was not run (the reference has not been timed)")
        gt = self.ground_truth[problem.id]
        d = self._data(problem)
        d.update(expected=gt["expected"], limits=gt["limits"],  # unpickled in the sandbox only
                 atol=problem.meta["atol"], exec_limit=EXEC_LIMIT_S,
                 set_eq=MBPP_OUTPUT_SET_EQ_TASKS, not_none=MBPP_OUTPUT_NOT_NONE_TASKS)
        return Program(source=f"_DATA = {_pack(d)!r}\n_SOLUTION = {program!r}\n{_CHECK_BODY}", entry="__evalplus__")

    def judge(self, problem: Problem, result: ExecResult) -> bool:
        """The base verdict (the original benchmark's tests); the plus one is in ``result.value``."""
        return bool(result.passed and isinstance(result.value, dict) and result.value.get("base"))


def plus_passed(judged) -> bool:
    """EvalPlus's plus verdict of one Judged: base and plus tests both pass."""
    v = judged.value if isinstance(judged.value, dict) else {}
    return bool(judged.passed and v.get("base") and v.get("plus"))


class HumanEvalPlusTask(EvalPlusChecks, HumanEvalTask):
    name = "humaneval_plus"


class MBPPPlusTask(EvalPlusChecks, MBPPTask):
    name = "mbpp_plus"
