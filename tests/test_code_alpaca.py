"""dataset=code_alpaca: which rows are kept, the loader, and the PERsD-style test-making
(parsing the teacher's proposed inputs, running the reference in the sandbox, dropping what
cannot be a test), with the tiny teacher through the real hook and with a packaged one."""

import json
from pathlib import Path

import pytest

from codistill.config import ConfigError, validate
from codistill.datasets.code_alpaca import CodeAlpacaConfig
from codistill.datasets.code_alpaca import (arity, load_code_alpaca, make_tests, parse_inputs, prepare,
                                            proposal_prompt, python_function)
from codistill.datasets.gsm8k import DataFileError
from codistill.execution import run_programs
from codistill.methods.base import RunContext
from codistill.models import default_cache_dir
from codistill.models.tiny import load_tiny_tokenizer
from codistill.tasks.base import Problem
from codistill.tasks.mbpp import MBPPTask

# Code Alpaca rows, as in the dataset: four Python function tasks, three that are not
ROWS = [
    {"instruction": "Create a function to calculate the sum of squares of a list of numbers.", "input": "",
     "output": "def sum_of_squares(nums):\n    return sum(x ** 2 for x in nums)\n\nprint(sum_of_squares([1, 2]))"},
    {"instruction": "Write a SQL query to select all rows from the table.", "input": "Table: users",
     "output": "SELECT * FROM users;"},
    {"instruction": "Write a function that reverses a string.", "input": "\"hello\"",
     "output": "def reverse_string(s):\n    return s[::-1]\n\nresult = reverse_string(\"hello\")\nprint(result)"},
    {"instruction": "Print the numbers from 1 to 10.", "input": "",
     "output": "for i in range(1, 11):\n    print(i)"},
    {"instruction": "Write a function to count the vowels in a string.", "input": "",
     "output": "def is_vowel(c):\n    return c.lower() in 'aeiou'\n\ndef count_vowels(text):\n"
               "    return sum(1 for c in text if is_vowel(c))"},
    {"instruction": "Write a program that reads a name and greets the user.", "input": "",
     "output": "def greet():\n    name = input('Name: ')\n    print('Hello', name)"},
    {"instruction": "Write a function that returns the larger of two numbers.", "input": "",
     "output": "def max_of_two(a, b):\n    if a > b:\n        return a\n    return b\n\n"
               "if __name__ == '__main__':\n    print(max_of_two(3, 4))"},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def cfg(**kw) -> CodeAlpacaConfig:
    return CodeAlpacaConfig(**{**dict(name="code_alpaca", task="mbpp", test_size=1, shuffle_seed=None), **kw})


def test_python_function_filter():
    assert python_function("SELECT * FROM users;") is None  # not Python
    assert python_function("for i in range(3):\n    print(i)") is None  # no function
    assert python_function("def hello():\n    return 'hi'") is None  # takes no argument
    assert python_function("def greet(x):\n    return input(x)") is None  # reads stdin
    entry, ref = python_function(ROWS[4]["output"])
    assert entry == "count_vowels" and "def is_vowel" in ref  # the helper comes with it
    entry, ref = python_function(ROWS[2]["output"])
    assert entry == "reverse_string" and "print" not in ref and "result" not in ref  # example code stripped
    entry, ref = python_function(ROWS[6]["output"])
    assert entry == "max_of_two" and "__main__" not in ref
    doc = 'def f(*xs):\n    """Doc."""\n    return xs'
    assert python_function(doc) == ("f", doc + "\n")
    assert arity("def f(a, b=1, *c):\n  pass", "f") == (1, None) and arity("def g(a, b=2):\n  pass", "g") == (1, 2)


def test_loader_keeps_function_tasks_and_carves_the_test_split(tmp_path):
    path = write_jsonl(tmp_path / "ca.jsonl", ROWS)
    train, test = load_code_alpaca(cfg(train_file=str(path), test_size=1))
    assert [p.id for p in test] == ["code_alpaca/1"]
    assert [p.id for p in train] == ["code_alpaca/3", "code_alpaca/5", "code_alpaca/7"]
    p = train[0]
    assert p.question == 'Write a function that reverses a string.\nInput: "hello"'
    assert p.meta["entry_point"] == "reverse_string" and p.meta["tests"] == []
    train2, test2 = load_code_alpaca(cfg(train_file=str(path), test_size=2, train_size=1, shuffle_seed=1))
    assert len(test2) == 2 and len(train2) == 1 and not {p.id for p in test2} & {p.id for p in train2}
    train3, test3 = load_code_alpaca(cfg(train_file=str(path), test_file=str(path), test_size=None))
    assert len(train3) == 4 and [p.id for p in test3][:1] == ["code_alpaca/test/1"]


def test_bad_line_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], "{not json", ROWS[2]])
    with pytest.raises(DataFileError, match=f"{path}:2: invalid JSON"):
        load_code_alpaca(cfg(train_file=str(path)))
    path = write_jsonl(tmp_path / "bad2.jsonl", [ROWS[0], {"instruction": "x", "input": ""}])
    with pytest.raises(DataFileError, match=f"{path}:2: missing or non-string field.*output"):
        load_code_alpaca(cfg(train_file=str(path)))


def test_config_needs_a_test_split(compose):
    with pytest.raises(ConfigError, match="dataset.test_size"):
        validate(compose("dataset=code_alpaca", "dataset.test_size=null"))
    with pytest.raises(ConfigError, match="dataset.max_tests"):
        validate(compose("dataset=code_alpaca", "dataset.min_tests=5", "dataset.max_tests=4"))
    rc = validate(compose("dataset=code_alpaca"))
    assert rc.dataset.hub_id == "sahil2801/CodeAlpaca-20k" and rc.dataset.min_tests == 3


@pytest.mark.parametrize("completion, lo, hi, expected", [
    ("(1, 2), (3, 4)]\n```", 2, 2, [(1, 2), (3, 4)]),
    ("(1, 2), (3, 4)]\nThese inputs cover ...", 2, 2, [(1, 2), (3, 4)]),  # prose after the list
    ("(1, 2), (3, 4), (5, ", 2, 2, [(1, 2), (3, 4)]),  # cut short by max_new_tokens
    ("([1, 2],), ([],), ([1, 2],)]", 1, 1, [([1, 2],), ([],)]),  # a duplicate
    ("'abc', '', ('x',)]", 1, 1, [("abc",), ("",), ("x",)]),  # bare single arguments
    ("(1, 2), (3,), (1, 2, 3)]", 2, 2, [(1, 2)]),  # wrong arity dropped
    ("(1,), (1, 2)]", 1, 2, [(1,), (1, 2)]),  # a default argument
    ("(1, 2), (x, 3), (4, 5)]", 2, 2, [(1, 2), (4, 5)]),  # a name is not a literal
    ("__import__('os').system('true'),)]", 1, 1, []),
    ("I cannot help with that.", 1, 1, []),
    ("(1,), (2,), (3,), (4,)]", 1, 1, [(1,), (2,), (3,)]),  # the limit
])
def test_parse_inputs(completion, lo, hi, expected):
    assert parse_inputs(completion, lo, hi, limit=3) == expected


def _problem(output: str, pid: str = "p") -> Problem:
    entry, ref = python_function(output)
    return Problem(id=pid, question="q", meta={"entry_point": entry, "reference": ref, "tests": [], "setup": ""})


REFERENCE = """import random

def safe_div(a, b):
    if b == 7:
        while True:
            pass
    if b == 8:
        return random.random()
    if b == 9:
        return object()
    if b == 6:
        return None
    return a / b if b != 5 else (a, [b, {"k": b}])
"""


def test_reference_runs_in_the_sandbox_and_failing_inputs_are_dropped():
    p = _problem(REFERENCE, "div")
    inputs = [(6, 3), (1, 0), (1, 7), (1, 8), (1, 9), (1, 6), (2, 5), (1.5, 2)]
    [tests] = make_tests([p], [inputs], timeout_s=2.0, memory_mb=512)
    # (1, 0) raises, (1, 7) times out, (1, 8) is not deterministic, (1, 9) does not round-trip, (1, 6) is None
    assert tests == ["assert safe_div(6, 3) == 2.0", "assert safe_div(2, 5) == (2, [5, {'k': 5}])",
                     "assert safe_div(1.5, 2) == 0.75"]
    # the tests judge code through the task: the reference passes, a wrong one fails
    p.meta["tests"] = tests
    task = MBPPTask()
    good = task.check_program(p, p.meta["reference"])
    bad = task.check_program(p, "def safe_div(a, b):\n    return a // b\n")
    r_good, r_bad = run_programs([good, bad], timeout_s=5)
    assert task.judge(p, r_good) and not task.judge(p, r_bad)


def test_proposal_prompt_names_the_function_and_opens_a_list():
    p = _problem(ROWS[6]["output"])
    tok = load_tiny_tokenizer()
    chat = proposal_prompt(p, tok, chat=True, n_tests=5)
    plain = proposal_prompt(p, tok, chat=False, n_tests=5)
    for text in (chat, plain):
        assert "`max_of_two` (it takes 2 argument(s))" in text and "Write 5 different inputs" in text
        assert p.meta["reference"].strip() in text and text.endswith("```python\n[")
    assert chat != plain


@pytest.fixture
def tiny_ctx(compose, tmp_path):
    path = write_jsonl(tmp_path / "ca.jsonl", ROWS)

    def make():
        rc = validate(compose("experiment=smoke", "dataset=code_alpaca", f"dataset.train_file={path}",
                              "dataset.test_size=1", "dataset.max_tests=4", "dataset.min_tests=1",
                              "dataset.tests_max_new_tokens=16", "dataset.shuffle_seed=null"))
        train, test = load_code_alpaca(rc.dataset)
        run_dir = tmp_path / "run"
        run_dir.mkdir(exist_ok=True)
        return RunContext(cfg=rc, run_dir=run_dir, task=MBPPTask(), train=train, test=test,
                          cache_dir=str(tmp_path / "cache"))
    return make


def test_prepare_with_the_tiny_teacher_is_cached_on_disk(tiny_ctx, tmp_path):
    """The whole hook with a real (random-weight) teacher: prompts, generation, parsing,
    sandbox; a second run reads the cache and never loads the teacher."""
    ctx = tiny_ctx()
    m = prepare(ctx)
    assert m["data/tests_problems_in"] == 4
    rows = [json.loads(line) for line in (ctx.run_dir / "dataset_tests.jsonl").read_text().splitlines()]
    assert [r["problem_id"] for r in rows] == ["code_alpaca/3", "code_alpaca/5", "code_alpaca/7", "code_alpaca/1"]
    assert all(isinstance(r["proposal"], str) and r["kept"] == (len(r["tests"]) >= 1) for r in rows)
    assert m["data/tests_problems_kept"] == len(ctx.train) + len(ctx.test) == sum(r["kept"] for r in rows)
    [cached] = list((tmp_path / "cache" / "datasets" / "code_alpaca").glob("*.json"))
    again = tiny_ctx()
    assert prepare(again) == m and again._models == {}  # read from disk: no teacher loaded
    # a cache made earlier (e.g. by a better teacher) is used as it stands: the hook applies it
    made = json.loads(cached.read_text())
    made["code_alpaca/7"]["tests"] = ["assert max_of_two(3, 4) == 4", "assert max_of_two(5, 1) == 5"]
    cached.write_text(json.dumps(made))
    third = tiny_ctx()
    prepare(third)
    [p] = [p for p in third.train if p.id == "code_alpaca/7"]
    assert p.meta["tests"] == made["code_alpaca/7"]["tests"]
    assert p.meta["visible_tests"] == made["code_alpaca/7"]["tests"][:1]


FACTORIAL = {"instruction": "Write a function to compute the factorial of a number.", "input": "",
             "output": "def factorial(n):\n    if n <= 1:\n        return 1\n    return n * factorial(n - 1)"}


@pytest.mark.slow
@pytest.mark.packaged_models
def test_a_real_teacher_makes_tests_the_reference_passes(compose, tmp_path):
    """smollm2-135m-instruct proposes inputs for two function tasks (one over an int, one over
    a list); at least one problem gets >= min_tests tests, every test made passes on the
    reference and a wrong function fails them; problems below min_tests are dropped."""
    path = write_jsonl(tmp_path / "ca.jsonl", [ROWS[0], FACTORIAL])
    rc = validate(compose("experiment=smoke", "model@teacher=smollm2-135m-instruct", "dataset=code_alpaca",
                          f"dataset.train_file={path}", "dataset.test_size=0", "dataset.min_tests=2",
                          "dataset.max_tests=4", "dataset.tests_max_new_tokens=48"))
    train, test = load_code_alpaca(rc.dataset)
    cache = tmp_path / "cache"  # fresh generations and tests; the converted models (and their locks) are shared
    cache.mkdir()
    for sub in ("models", "gguf", "locks"):
        (default_cache_dir() / sub).mkdir(parents=True, exist_ok=True)
        (cache / sub).symlink_to(default_cache_dir() / sub, target_is_directory=True)
    ctx = RunContext(cfg=rc, run_dir=tmp_path, task=MBPPTask(), train=train, test=test, cache_dir=str(cache))
    m = prepare(ctx)
    rows = [json.loads(line) for line in (tmp_path / "dataset_tests.jsonl").read_text().splitlines()]
    print("\nproposals:", *[(r["problem_id"], r["n_inputs"], len(r["tests"]), r["proposal"][:120]) for r in rows],
          "\nfigures:", m, sep="\n")
    assert m["data/tests_problems_in"] == 2 and m["data/tests_problems_kept"] >= 1
    assert [r["kept"] for r in rows] == [len(r["tests"]) >= 2 for r in rows]
    assert {p.id for p in ctx.train} == {r["problem_id"] for r in rows if r["kept"]}
    task = MBPPTask()
    good = [task.check_program(p, p.meta["reference"]) for p in ctx.train]
    bad = [task.check_program(p, f"def {p.meta['entry_point']}(*args):\n    return -1\n") for p in ctx.train]
    results = run_programs(good + bad, timeout_s=5)
    assert [r.passed for r in results] == [True] * len(good) + [False] * len(bad)


@pytest.mark.slow
def test_run_uses_the_prepared_tests(tmp_path, compose):
    """The hook in run.py: a whole run (tiny models, method=none) takes the prepared tests from
    the disk cache (as a second job of a sweep would), drops problems below min_tests, and
    evaluates the student against the kept problems' tests."""
    from conftest import run_cli

    from codistill.datasets.code_alpaca import _cache_path

    path = write_jsonl(tmp_path / "ca.jsonl", ROWS)
    overrides = ["experiment=smoke", "method=none", "dataset=code_alpaca", f"dataset.train_file={path}",
                 "dataset.test_size=2", "dataset.shuffle_seed=null", "dataset.min_tests=2"]
    rc = validate(compose(*overrides))
    train, test = load_code_alpaca(rc.dataset)
    assert [p.id for p in test] == ["code_alpaca/1", "code_alpaca/3"]
    cache = tmp_path / "cache"
    made = {p.id: {"proposal": "", "n_inputs": 2, "tests": []} for p in train + test}
    made["code_alpaca/1"]["tests"] = ["assert sum_of_squares([1, 2]) == 5", "assert sum_of_squares([]) == 0"]
    made["code_alpaca/3"]["tests"] = ["assert reverse_string('ab') == 'ba'"]  # one test < min_tests: dropped
    made["code_alpaca/5"]["tests"] = ["assert count_vowels('aXe') == 2", "assert count_vowels('') == 0"]
    ctx = RunContext(cfg=rc, run_dir=tmp_path, task=MBPPTask(), train=train, test=test, cache_dir=str(cache))
    _cache_path(ctx, train + test).write_text(json.dumps(made))
    run_dir = tmp_path / "run"
    p = run_cli([*overrides, "logger=csv", "eval.n_samples=0", "eval.k=[1]", f"hydra.run.dir={run_dir}"],
                cwd=tmp_path, env={"CODISTILL_CACHE": str(cache)})
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok" and m["dataset"] == "code_alpaca"
    assert (m["data/tests_problems_in"], m["data/tests_problems_kept"]) == (4, 2)
    assert (m["data/n_train_problems"], m["data/n_test_problems"]) == (1, 1)
    rows = [json.loads(line) for line in (run_dir / "eval_samples.jsonl").read_text().splitlines()]
    assert [r["problem_id"] for r in rows] == ["code_alpaca/1"]
    assert rows[0]["samples"][0]["passed"] is False  # random weights


def test_hub_code_path_on_a_local_dataset_repo(tmp_path, monkeypatch):
    """The real ``datasets.load_dataset`` path on a directory laid out like the hub repo (one
    JSON file, a single train split)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    repo = tmp_path / "CodeAlpaca-20k"
    repo.mkdir()
    (repo / "code_alpaca_20k.json").write_text(json.dumps(ROWS))
    train, test = load_code_alpaca(cfg(hub_id=str(repo), test_size=1))
    assert [p.id for p in test] == ["code_alpaca/0"] and [p.id for p in train] == [
        "code_alpaca/2", "code_alpaca/4", "code_alpaca/6"]
    assert train[1].meta["entry_point"] == "count_vowels"
