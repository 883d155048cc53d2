"""Code Alpaca: the hub dataset ``sahil2801/CodeAlpaca-20k`` or local JSONL files
(``{"instruction": ..., "input": ..., "output": ...}``), with unit tests made the PERsD way.

**Which rows are kept** (:func:`python_function`): the ``output`` parses as Python 3 and
defines at least one top-level function that takes at least one argument and never calls
``input()``.  The entry point is the first top-level function that no other top-level
function calls (the "main" one; helpers come with it).  The reference program is the output
without its top-level example code (bare expressions such as ``print(f(3))``, assignments and
loops that call its functions or ``print``, ``if __name__ == "__main__":`` blocks), so running
it only defines things.

**How the tests are made** (:func:`prepare`, called by run.py once the problems are loaded,
because it needs the teacher): the teacher is asked, greedily, for a Python list of argument
tuples for the function (:func:`proposal_prompt`); the list is parsed with
``ast.literal_eval`` (:func:`parse_inputs`: literals only, truncated lists are cut back to
their last whole tuple, duplicates dropped, at most ``dataset.max_tests``); the reference runs
in the sandbox on each input (:func:`reference_program`) twice, on fresh copies; an input is
dropped when the reference raises, times out, gives two different results, returns None, or
returns a value whose ``repr`` does not evaluate back to an equal value (only such values can
be written into a test) or is over 1000 characters.  Each surviving input becomes
``assert f(<args>) == <repr of the result>``; problems left with fewer than
``dataset.min_tests`` tests are dropped.  The tests are cached on disk, keyed by the teacher's
identity, the problems and these settings, so every job of a sweep prepares once.

Code Alpaca has one pool of problems: the test split is ``dataset.test_file`` when given,
otherwise the first ``test_size`` problems of the (``shuffle_seed``-shuffled) pool; the train
split is the next ``train_size``.  Sizes count problems before the tests are made.
"""

from __future__ import annotations

import ast
import json
import logging
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codistill.config import DatasetConfig
from codistill.datasets.base import Dataset
from codistill.datasets.gsm8k import DataFileError, jsonl_records
from codistill.plugins import check
from codistill.tasks.base import Problem

log = logging.getLogger(__name__)

PROPOSAL_VERSION = 1  # bump when the proposal prompt or the test-making rules change
MAX_EXPECTED_CHARS = 1000
PROPOSAL_SYSTEM = "You write test inputs for Python functions. Answer with Python code only."


# --------------------------------------------------------------------------- which rows
def _calls(node: ast.AST) -> set[str]:
    return {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def python_function(output: str) -> tuple[str, str] | None:
    """(entry point, reference program) when ``output`` is a Python function task, else None
    (pure; see the module docstring for the rule)."""
    try:
        tree = ast.parse(output)
    except (SyntaxError, ValueError):
        return None
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if not funcs or "input" in _calls(tree):
        return None
    called_by_others = set()
    for f in funcs:
        called_by_others |= _calls(f) - {f.name}
    main = next((f for f in funcs if f.name not in called_by_others), funcs[0])
    a = main.args
    if not (a.posonlyargs or a.args or a.vararg):
        return None

    names = {f.name for f in funcs}

    def is_example(n: ast.stmt) -> bool:
        if isinstance(n, ast.Expr) and not isinstance(n.value, ast.Constant):
            return True
        loose = (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.While)
        if isinstance(n, loose) and _calls(n) & (names | {"print"}):  # e.g. `x = f(3)`, a loop of prints
            return True
        return (isinstance(n, ast.If) and isinstance(n.test, ast.Compare)
                and isinstance(n.test.left, ast.Name) and n.test.left.id == "__name__")

    body = [n for n in tree.body if not is_example(n)]
    return main.name, ast.unparse(ast.Module(body=body, type_ignores=[])) + "\n"


def arity(reference: str, entry_point: str) -> tuple[int, int | None]:
    """(required, maximum) positional arguments of ``entry_point`` (maximum None: ``*args``)."""
    for n in ast.parse(reference).body:
        if isinstance(n, ast.FunctionDef) and n.name == entry_point:
            a = n.args
            positional = len(a.posonlyargs) + len(a.args)
            return positional - len(a.defaults), (None if a.vararg else positional)
    raise ValueError(f"{entry_point!r} is not defined by the reference")


def problem_from_record(record: object, where: str, pid: str) -> Problem | None:
    """A Problem (without tests yet) from one Code Alpaca row, or None when the row is not a
    Python function task; a malformed row raises naming ``where``."""
    if not isinstance(record, dict):
        raise DataFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    bad = [k for k in ("instruction", "output") if not isinstance(record.get(k), str)]
    if bad or not isinstance(record.get("input", ""), str):
        raise DataFileError(f"{where}: missing or non-string field(s) {bad or ['input']}")
    found = python_function(record["output"])
    if found is None:
        return None
    entry, reference = found
    question = record["instruction"].strip()
    if (record.get("input") or "").strip():
        question += f"\nInput: {record['input'].strip()}"
    return Problem(id=pid, question=question, answer=None,
                   meta={"entry_point": entry, "reference": reference, "tests": [], "setup": ""})


# --------------------------------------------------------------------------- loading
def read_jsonl(path: str | Path, side: str) -> tuple[list[Problem], int]:
    """(Python function problems, rows read) from a local Code Alpaca JSONL file."""
    problems, rows = [], 0
    for lineno, where, record in jsonl_records(path, side):
        rows += 1
        pid = f"code_alpaca/{lineno}" if side == "train" else f"code_alpaca/test/{lineno}"
        p = problem_from_record(record, where, pid)
        if p is not None:
            problems.append(p)
    return problems, rows


def read_hub(hub_id: str, hub_config: str | None) -> tuple[list[Problem], int]:
    import datasets  # the Hugging Face library (absolute import)

    ds = datasets.load_dataset(hub_id, hub_config, split="train")
    problems = [problem_from_record(dict(r), f"{hub_id}[train][{i}]", f"code_alpaca/{i}") for i, r in enumerate(ds)]
    return [p for p in problems if p is not None], len(ds)


def load_code_alpaca(cfg) -> tuple[list[Problem], list[Problem]]:
    """(train, test) Python function problems, without tests yet (see :func:`prepare`)."""
    if cfg.train_file:
        pool, rows = read_jsonl(cfg.train_file, "train")
    else:
        pool, rows = read_hub(cfg.hub_id or "sahil2801/CodeAlpaca-20k", cfg.hub_config)
    log.info("code_alpaca: %d of %d rows are Python function tasks", len(pool), rows)
    if cfg.shuffle_seed is not None:
        random.Random(cfg.shuffle_seed).shuffle(pool)
    if cfg.test_file:
        test, _ = read_jsonl(cfg.test_file, "test")
        test = test if cfg.test_size is None else test[:cfg.test_size]
    else:
        test, pool = pool[:cfg.test_size], pool[cfg.test_size:]
    train = pool if cfg.train_size is None else pool[:cfg.train_size]
    return train, test


# --------------------------------------------------------------------------- making tests
def proposal_prompt(problem: Problem, tokenizer: Any, *, chat: bool, n_tests: int) -> str:
    """The teacher's prompt asking for test inputs; it ends inside an opened list (pure)."""
    entry, ref = problem.meta["entry_point"], problem.meta["reference"]
    lo, hi = arity(ref, entry)
    n_args = f"{lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
    ask = (f"Task: {problem.question}\n\nSolution:\n```python\n{ref.rstrip()}\n```\n\n"
           f"Write {n_tests} different inputs to test `{entry}` (it takes {n_args} argument(s)), "
           f"including edge cases. Answer with one Python list of argument tuples, one tuple per call, "
           f"e.g. [(3, 'a'), (0, '')] for two arguments or [([1, 2],), ([],)] for one list argument. "
           f"Use only literals: numbers, strings, lists, tuples, dicts, sets, booleans, None.")
    opening = "```python\n["
    if chat and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": PROPOSAL_SYSTEM}, {"role": "user", "content": ask}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + opening
    return f"{PROPOSAL_SYSTEM}\n\n{ask}\n\n{opening}"


_BAD = object()


def _list_node(text: str) -> ast.List | None:
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    return node if isinstance(node, ast.List) else None


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _BAD


def parse_inputs(completion: str, lo: int, hi: int | None, limit: int) -> list[tuple]:
    """Argument tuples from the teacher's answer to :func:`proposal_prompt` (pure; nothing
    is evaluated but literals).

    ``completion`` continues the opened ``[``.  Prose after the list is ignored; a list cut
    short is read up to its last whole element; an element that is not a literal is skipped;
    an element that is not a tuple of ``lo..hi`` arguments is taken as the single argument of
    a one-argument function, otherwise skipped.  Duplicates are dropped; at most ``limit``
    tuples are returned."""
    text = "[" + completion.split("```")[0]
    node = _list_node(text)
    if node is None:
        # prose after the list: cut after a "]"; a list cut short: cut at a "," and close it
        ends = [text[:i + 1] for i, c in reversed(list(enumerate(text))) if c == "]"][:50]
        cut = [text[:i] + "]" for i, c in reversed(list(enumerate(text))) if c == ","][:200]
        node = next((n for n in map(_list_node, ends + cut) if n is not None), None)
        if node is None:
            return []
    out, seen = [], set()
    for elt in node.elts:
        el = _literal(elt)
        if el is _BAD:
            continue
        if isinstance(el, tuple) and lo <= len(el) and (hi is None or len(el) <= hi):
            args = el
        elif lo <= 1 and (hi is None or hi >= 1):
            args = (el,)
        else:
            continue
        key = repr(args)
        if key not in seen:
            seen.add(key)
            out.append(args)
        if len(out) == limit:
            break
    return out


def call_text(entry_point: str, args: tuple) -> str:
    """``f(1, 'a')``: a call with literal arguments (their repr round-trips)."""
    return f"{entry_point}({', '.join(repr(a) for a in args)})"


RESULT = "__codistill_expected"


def reference_program(reference: str, entry_point: str, args: tuple) -> str:
    """The sandbox program giving the expected value for ``args`` as the repr string in
    ``RESULT``; it fails unless two runs agree and the repr evaluates back to the value."""
    call = call_text(entry_point, args)
    return (f"{reference}\n\n"
            f"__r1 = {call}\n"
            f"__r2 = {call}\n"
            f"{RESULT} = repr(__r1)\n"
            f"assert __r1 is not None, 'returns None'\n"
            f"assert repr(__r2) == {RESULT}, 'two runs disagree'\n"
            f"assert eval({RESULT}) == __r1, 'the result does not round-trip through repr'\n"
            f"assert len({RESULT}) <= {MAX_EXPECTED_CHARS}, 'the result is too long for a test'\n")


def make_tests(problems: list[Problem], proposals: list[list[tuple]], *, timeout_s: float,
               memory_mb: int) -> list[list[str]]:
    """Run each problem's reference on its proposed inputs (one sandbox batch) and write a test
    ``assert f(args) == expected`` for every input the reference handles."""
    from codistill.execution import Program, run_programs

    jobs, where = [], []
    for i, (p, inputs) in enumerate(zip(problems, proposals)):
        for args in inputs:
            jobs.append(Program(source=reference_program(p.meta["reference"], p.meta["entry_point"], args),
                                entry=RESULT))
            where.append((i, args))
    results = run_programs(jobs, timeout_s=timeout_s, memory_mb=memory_mb) if jobs else []
    tests: list[list[str]] = [[] for _ in problems]
    for (i, args), r in zip(where, results):
        if r.passed and isinstance(r.value, str):
            tests[i].append(f"assert {call_text(problems[i].meta['entry_point'], args)} == {r.value}")
    return tests


def _cache_path(ctx, problems: list[Problem]) -> Path:
    from codistill.generation.cache import digest
    from codistill.models import model_identity

    cfg = ctx.cfg
    key = digest({"teacher": model_identity(cfg.teacher), "chat": cfg.teacher.chat, "version": PROPOSAL_VERSION,
                  "max_tests": cfg.dataset.max_tests, "max_new_tokens": cfg.dataset.tests_max_new_tokens,
                  "timeout_s": cfg.task.timeout_s, "memory_mb": cfg.task.memory_mb,
                  "problems": [[p.id, p.question, p.meta["reference"]] for p in problems]})
    d = Path(ctx.cache_dir).expanduser() / "datasets" / "code_alpaca"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{key[:32]}.json"


def _propose_and_run(ctx, problems: list[Problem]) -> dict:
    from codistill.config import SamplingConfig

    cfg = ctx.cfg
    sampling = SamplingConfig(n=1, temperature=0.0, max_new_tokens=cfg.dataset.tests_max_new_tokens, stop=["```"])
    def prompts(tok) -> list[str]:
        return [proposal_prompt(p, tok, chat=cfg.teacher.chat, n_tests=cfg.dataset.max_tests) for p in problems]

    comps = ctx.rollout("teacher", problems, prompts=prompts, sampling=sampling, desc="teacher: test inputs",
                        judge=False).completions
    proposals = []
    for p, c in zip(problems, comps):
        lo, hi = arity(p.meta["reference"], p.meta["entry_point"])
        proposals.append(parse_inputs(c[0], lo, hi, cfg.dataset.max_tests))
    tests = make_tests(problems, proposals, timeout_s=cfg.task.timeout_s, memory_mb=cfg.task.memory_mb)
    return {p.id: {"proposal": c[0], "n_inputs": len(inp), "tests": t}
            for p, c, inp, t in zip(problems, comps, proposals, tests)}


def prepare(ctx) -> dict:
    """Make the unit tests of ``ctx.train`` and ``ctx.test`` (in place) and drop the problems
    left with fewer than ``dataset.min_tests``; returns the data figures."""
    from filelock import FileLock

    from codistill.methods.base import write_jsonl

    problems = ctx.train + ctx.test
    path = _cache_path(ctx, problems)
    with FileLock(str(path) + ".lock"):  # parallel jobs of a sweep: one prepares, the others read
        if path.exists():
            made = json.loads(path.read_text(encoding="utf-8"))
            log.info("code_alpaca: tests of %d problems read from %s", len(made), path)
        else:
            made = _propose_and_run(ctx, problems) if problems else {}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(made, ensure_ascii=False), encoding="utf-8")
            tmp.replace(path)
    min_tests = ctx.cfg.dataset.min_tests

    def keep(ps: list[Problem]) -> list[Problem]:
        out = []
        for p in ps:
            tests = made[p.id]["tests"]
            if len(tests) >= min_tests:
                p.meta["tests"] = list(tests)
                p.meta["visible_tests"] = tests[:1]
                out.append(p)
        return out

    n_before = (len(ctx.train), len(ctx.test))
    ctx.train, ctx.test = keep(ctx.train), keep(ctx.test)
    write_jsonl(ctx.run_dir / "dataset_tests.jsonl",
                [{"problem_id": p.id, "kept": len(made[p.id]["tests"]) >= min_tests, **made[p.id]} for p in problems])
    kept = ctx.train + ctx.test
    per = [len(p.meta["tests"]) for p in kept]
    metrics = {"data/tests_problems_in": len(problems), "data/tests_problems_kept": len(kept),
               "data/tests_inputs_proposed": sum(m["n_inputs"] for m in made.values()),
               "data/tests_per_problem_mean": statistics.fmean(per) if per else 0.0,
               "data/tests_per_problem_min": min(per, default=0), "data/tests_per_problem_max": max(per, default=0)}
    if problems and not kept:
        log.warning("code_alpaca: no problem kept: the teacher's inputs gave fewer than %d tests for every "
                    "problem (see %s)", min_tests, ctx.run_dir / "dataset_tests.jsonl")
    log.info("code_alpaca: %d of %d problems kept with >= %d tests (train %d -> %d, test %d -> %d), "
             "%.1f tests per problem", len(kept), len(problems), min_tests, n_before[0], len(ctx.train),
             n_before[1], len(ctx.test), metrics["data/tests_per_problem_mean"])
    return metrics


@dataclass
class CodeAlpacaConfig(DatasetConfig):
    # the teacher-made unit tests (problems left with < min_tests are dropped)
    min_tests: int = 3
    max_tests: int = 10
    tests_max_new_tokens: int = 256

    def check(self, key: str) -> None:
        super().check(key)
        check(self.min_tests >= 1, f"{key}.min_tests", f"must be >= 1, got {self.min_tests}")
        check(self.max_tests >= self.min_tests, f"{key}.max_tests",
              f"must be >= min_tests ({self.min_tests}), got {self.max_tests}")
        check(self.tests_max_new_tokens >= 16, f"{key}.tests_max_new_tokens", "must be >= 16")
        check(self.test_file is not None or self.test_size is not None, f"{key}.test_size",
              "code_alpaca has one pool of problems: set test_size (carved from it) or test_file")


class CodeAlpaca(Dataset):
    """``dataset=code_alpaca``: Code Alpaca's Python tasks, their tests made by the teacher."""

    Config = CodeAlpacaConfig

    def load(self):
        return load_code_alpaca(self.cfg)

    def prepare(self, ctx) -> dict:
        return prepare(ctx)
