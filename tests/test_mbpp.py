"""dataset=mbpp: the loader (both formats, splits, bad lines), the task's prompt and verdict,
and a whole run on local files."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import run_cli

from codistill.config import ConfigError, validate
from codistill.datasets.mbpp import MBPPConfig
from codistill.datasets.gsm8k import DataFileError
from codistill.datasets.mbpp import SPLITS, find_entry_point, load_mbpp, read_jsonl, split_of
from codistill.execution import run_programs
from codistill.models.tiny import load_tiny_tokenizer
from codistill.tasks.base import Problem
from codistill.tasks.mbpp import MBPPTask, load_exemplars

# real MBPP rows (full format): two of the test split, one of validation with setup code,
# three of the train split, one of the prompt split
ROWS = [
    {"task_id": 2, "text": "Write a function to find the similar elements from the given two tuple lists.",
     "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n"
             "  return (res) ",
     "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 11, "text": "Write a python function to remove first and last occurrence of a given character "
                            "from the string.",
     "code": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n        if (s[i] == ch): \r\n"
             "            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    for i in range(len(s) - 1,-1,-1):  \r\n"
             "        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    return s ",
     "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"',
                   'assert remove_Occ("PHP","P") == "H"'],
     "test_setup_code": "", "challenge_test_list": ['assert remove_Occ("hellolloll","l") == "helollol"']},
    {"task_id": 12, "text": "Write a function to sort a given matrix in ascending order according to the sum of "
                            "its rows.",
     "code": "def sort_matrix(M):\r\n    result = sorted(M, key=sum)\r\n    return result",
     "test_list": ["assert sort_matrix([[1, 2, 3], [2, 4, 5], [1, 1, 1]])==[[1, 1, 1], [1, 2, 3], [2, 4, 5]]",
                   "assert sort_matrix([[1, 2, 3], [-2, 4, -5], [1, -1, 1]])==[[-2, 4, -5], [1, -1, 1], [1, 2, 3]]",
                   "assert sort_matrix([[5,8,9],[6,4,3],[2,1,4]])==[[2, 1, 4], [6, 4, 3], [5, 8, 9]]"],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 511, "text": "Write a function to find the area of a circle.",
     "code": "def circle_area(r):\n    return math.pi * r * r",
     "test_list": ["assert math.isclose(circle_area(2), 12.566, rel_tol=0.001)",
                   "assert circle_area(0) == 0"],
     "test_setup_code": "import math", "challenge_test_list": []},
    {"task_id": 602, "text": "Write a python function to find the first repeated character in a given string.",
     "code": "def first_repeated_char(str1):\r\n  for index,c in enumerate(str1):\r\n"
             "    if str1[:index+1].count(c) > 1:\r\n      return c \r\n  return \"None\"",
     "test_list": ['assert first_repeated_char("abcabc") == "a"', 'assert first_repeated_char("abc") == "None"',
                   'assert first_repeated_char("123123") == "1"'],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 604, "text": "Write a function to reverse words in a given string.",
     "code": "def reverse_words(s):\r\n        return ' '.join(reversed(s.split()))",
     "test_list": ['assert reverse_words("python program")==("program python")',
                   'assert reverse_words("java language")==("language java")',
                   'assert reverse_words("indian man")==("man indian")'],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 606, "text": "Write a function to convert degrees to radians.",
     "code": "import math\r\ndef radian_degree(degree):\r\n radian = degree*(math.pi/180)\r\n return radian",
     "test_list": ["assert radian_degree(90)==1.5707963267948966",
                   "assert radian_degree(60)==1.0471975511965976",
                   "assert radian_degree(120)==2.0943951023931953"],
     "test_setup_code": "", "challenge_test_list": []},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def cfg(**kw) -> MBPPConfig:
    base = dict(name="mbpp", task="mbpp", train_split="train", test_split="test")
    return MBPPConfig(**{**base, **kw})


@pytest.fixture
def mbpp_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "mbpp.jsonl", ROWS)


def test_one_file_is_split_by_task_id(mbpp_file):
    train, test = load_mbpp(cfg(train_file=str(mbpp_file), test_file=str(mbpp_file)))
    assert [p.id for p in test] == ["mbpp/11", "mbpp/12"]
    assert [p.id for p in train] == ["mbpp/602", "mbpp/604", "mbpp/606"]
    assert {split_of(r["task_id"]) for r in ROWS} == set(SPLITS)
    _, val = load_mbpp(cfg(test_file=str(mbpp_file), test_split="validation", train_size=0))
    assert [p.id for p in val] == ["mbpp/511"] and val[0].meta["setup"] == "import math"
    everything, _ = load_mbpp(cfg(train_file=str(mbpp_file), train_split=None, test_size=0))
    assert len(everything) == len(ROWS)


def test_sizes_and_seeded_shuffle(mbpp_file):
    c = cfg(train_file=str(mbpp_file), test_file=str(mbpp_file), train_size=2, test_size=1, shuffle_seed=3)
    a, b = load_mbpp(c), load_mbpp(c)
    assert len(a[0]) == 2 and len(a[1]) == 1
    assert [p.id for p in a[0]] == [p.id for p in b[0]]
    orders = {tuple(p.id for p in load_mbpp(cfg(train_file=str(mbpp_file), test_size=0, shuffle_seed=s))[0])
              for s in range(6)}
    assert len(orders) > 1  # the seed does shuffle


def test_problem_meta_follows_the_code_task_contract(mbpp_file):
    p = {q.id: q for q in read_jsonl(mbpp_file, "train")}["mbpp/11"]
    assert p.question.startswith("Write a python function to remove first")
    assert p.meta["entry_point"] == "remove_Occ"
    assert p.meta["tests"] == ROWS[1]["test_list"] and p.meta["visible_tests"] == ROWS[1]["test_list"][:1]
    assert p.meta["challenge_tests"] == ROWS[1]["challenge_test_list"] and p.meta["setup"] == ""


def test_sanitized_format(tmp_path):
    row = {"source_file": "Benchmark Questions Verification V2.ipynb", "task_id": 17,
           "prompt": "Write a function that returns the perimeter of a square given its side length as input.",
           "code": "def square_perimeter(a):\n  perimeter=4*a\n  return perimeter",
           "test_imports": ["import math"], "test_list": ["assert square_perimeter(10)==40",
                                                          "assert square_perimeter(5)==20"]}
    [p] = read_jsonl(write_jsonl(tmp_path / "sanitized.jsonl", [row]), "test")
    assert p.question.startswith("Write a function that returns the perimeter")
    assert p.meta["setup"] == "import math" and p.meta["entry_point"] == "square_perimeter"


def test_entry_point_is_the_function_the_test_calls():
    assert find_entry_point("def helper(x):\n  pass\ndef f(x):\n  pass",
                            ["assert set(f([1])) == set(helper(1))"]) == "f"
    assert find_entry_point("def f(:", ["assert math.isclose(vol(2), 1.0)"]) == "vol"  # code does not parse
    assert find_entry_point("x = 1", ["assert len([]) == 0"]) is None


@pytest.mark.parametrize("bad, message", [
    ('{"task_id": 13, "text": "t", "code": "def f(): pass"', "invalid JSON"),
    ({"task_id": 13, "text": "t", "code": "def f(): pass"}, "'test_list' must be a non-empty list"),
    ({"task_id": "13", "text": "t", "code": "def f(): pass", "test_list": ["assert f() == 1"]}, "'task_id'"),
    ({"task_id": 13, "code": "def f(): pass", "test_list": ["assert f() == 1"]}, "'text'"),
    ({"task_id": 13, "text": "t", "code": "def f(): pass", "test_list": ["assert f( == 1"]}, "not valid Python"),
    ({"task_id": 12, "text": "t", "code": "def f(): pass", "test_list": ["assert f() == 1"]}, "repeats line 2"),
    ({"task_id": 13, "text": "t", "code": "x = 1", "test_list": ["assert 1 == 1"]}, "which function"),
])
def test_bad_line_names_file_and_line(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[1], ROWS[2], "", bad])
    with pytest.raises(DataFileError) as e:
        read_jsonl(path, "train")
    assert f"{path}:4:" in str(e.value) and message in str(e.value)


def test_no_problem_in_the_split_is_an_error_naming_the_key(tmp_path):
    path = write_jsonl(tmp_path / "test_only.jsonl", ROWS[1:3])
    with pytest.raises(DataFileError, match="dataset.train_split"):
        load_mbpp(cfg(train_file=str(path), test_size=0))
    with pytest.raises(FileNotFoundError, match="dataset.test_file"):
        load_mbpp(cfg(test_file=str(tmp_path / "missing.jsonl"), train_size=0))


def test_bad_split_name_is_a_config_error(compose):
    with pytest.raises(ConfigError, match="dataset.test_split"):
        validate(compose("dataset=mbpp", "dataset.test_split=dev"))
    rc = validate(compose("dataset=mbpp"))
    assert (rc.dataset.hub_id, rc.dataset.hub_config, rc.dataset.train_split, rc.dataset.test_split) == (
        "google-research-datasets/mbpp", "full", "train", "test")


def test_prompt_shows_the_first_test_only_and_is_chat_templated(mbpp_file):
    task, tok = MBPPTask(), load_tiny_tokenizer()
    p = {q.id: q for q in read_jsonl(mbpp_file, "train")}["mbpp/12"]
    for chat in (True, False):
        prompt = task.render(p, tok, chat=chat, shots=0)
        assert p.question in prompt.text and p.meta["tests"][0] in prompt.text
        assert p.meta["tests"][1] not in prompt.text and p.meta["tests"][2] not in prompt.text
        assert prompt.text.endswith("```python\n") and prompt.fenced
    messages = [{"role": "system", "content": load_exemplars()["instruction"]},
                {"role": "user", "content": f"{p.question}\nYour code should pass this test:\n\n{p.meta['tests'][0]}"}]
    head = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert task.render(p, tok, chat=True, shots=0).text == head + "```python\n"
    assert not task.render(p, tok, chat=False, shots=0).text.startswith(head[:20])
    few = task.render(p, tok, chat=True, shots=2).text
    assert "similar_elements" in few and "is_not_prime" in few and "heap_queue_largest" not in few


def test_reference_code_passes_and_wrong_code_fails(mbpp_file):
    task, tok = MBPPTask(), load_tiny_tokenizer()
    problems = read_jsonl(mbpp_file, "train")
    good, bad = [], []
    for p in problems:
        prompt = task.render(p, tok, chat=True, shots=0)
        completion = p.meta["reference"] + "\n```\nThis function ..."
        program = task.extract_program(prompt, completion)
        assert "```" not in program and "This function" not in program
        good.append(task.check_program(p, program))
        wrong = f"def {p.meta['entry_point']}(*args):\n    return args[0]\n"
        bad.append(task.check_program(p, task.extract_program(prompt, wrong)))
    results = run_programs(good + bad, timeout_s=10)
    verdicts = [task.judge(p, r) for p, r in zip(problems + problems, results)]
    n = len(problems)
    assert verdicts[:n] == [True] * n, [(p.id, r.error) for p, r in zip(problems, results[:n])]
    assert verdicts[n:] == [False] * n


def test_only_one_failing_assert_fails_the_problem(mbpp_file):
    task = MBPPTask()
    p = {q.id: q for q in read_jsonl(mbpp_file, "train")}["mbpp/604"]
    # right on the visible test, wrong on the hidden ones
    program = "def reverse_words(s):\n    return 'program python'\n"
    [r] = run_programs([task.check_program(p, program)], timeout_s=10)
    assert not task.judge(p, r) and r.status == "error" and "AssertionError" in r.error


def test_completion_stops_at_top_level_test_code():
    task = MBPPTask()
    completion = "def f(x):\n    assert x\n    print(x)\n    return x\n\nassert f(1) == 1\nprint(f(2))"
    assert task.extract_program(task.render(
        _problem(), load_tiny_tokenizer(), chat=False, shots=0), completion) == (
        "def f(x):\n    assert x\n    print(x)\n    return x\n")


def _problem():
    return Problem(id="x", question="Write f.", meta={"tests": ["assert f(1) == 1"], "entry_point": "f"})


def test_the_few_shot_exemplars_pass_their_own_tests():
    task = MBPPTask()
    exemplars = load_exemplars()["exemplars"]
    programs = [task.check_program(Problem(id=str(i), question=e["question"], meta={"tests": e["tests"]}),
                                   e["program"]) for i, e in enumerate(exemplars)]
    assert [r.passed for r in run_programs(programs, timeout_s=10)] == [True] * len(exemplars)


@pytest.mark.slow
def test_smoke_run_on_local_mbpp_files(tmp_path, mbpp_file):
    run_dir = tmp_path / "run"
    p = run_cli(["experiment=smoke", "dataset=mbpp", f"dataset.train_file={mbpp_file}",
                 f"dataset.test_file={mbpp_file}", "method=none", "logger=csv", "eval.n_samples=0", "eval.k=[1]",
                 f"hydra.run.dir={run_dir}"], cwd=tmp_path, env={"CODISTILL_CACHE": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "ok" and m["dataset"] == "mbpp"
    assert (m["data/n_train_problems"], m["data/n_test_problems"]) == (3, 2)
    rows = [json.loads(line) for line in (run_dir / "eval_samples.jsonl").read_text().splitlines()]
    assert [r["problem_id"] for r in rows] == ["mbpp/11", "mbpp/12"]
    assert all(s["passed"] is False for r in rows for s in r["samples"])  # random weights
    cfg_ = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert cfg_.dataset.name == "mbpp" and cfg_.dataset.train_size == 6  # smoke's sizes, mbpp's loader


def test_hub_code_path_on_a_local_dataset_repo(tmp_path, monkeypatch):
    """The real ``datasets.load_dataset`` path, on a directory laid out like the hub repo
    (one config per folder, named splits), in both formats."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    repo = tmp_path / "mbpp_repo"
    sanitized = [{"source_file": "x.ipynb", "task_id": r["task_id"], "prompt": r["text"], "code": r["code"],
                  "test_imports": ["import math"] if r["test_setup_code"] else [], "test_list": r["test_list"]}
                 for r in ROWS]
    features = {"full": [("task_id", "int32"), ("text", "string"), ("code", "string"), ("test_list", None),
                         ("test_setup_code", "string"), ("challenge_test_list", None)],
                "sanitized": [("source_file", "string"), ("task_id", "int32"), ("prompt", "string"),
                              ("code", "string"), ("test_imports", None), ("test_list", None)]}
    card = ["---", "dataset_info:"]
    for config, feats in features.items():  # the hub card's schema (lists of strings: `sequence`)
        card += [f"- config_name: {config}", "  features:"]
        card += [f"  - name: {n}\n    " + (f"dtype: {t}" if t else "sequence: string") for n, t in feats]
    card += ["configs:"]
    for config, rows in (("full", ROWS), ("sanitized", sanitized)):
        (repo / config).mkdir(parents=True)
        card += [f"- config_name: {config}", "  data_files:"]
        for split in ("train", "test", "validation", "prompt"):
            write_jsonl(repo / config / f"{split}.jsonl", [r for r in rows if split_of(r["task_id"]) == split])
            card += [f"  - split: {split}", f"    path: {config}/{split}.jsonl"]
    (repo / "README.md").write_text("\n".join(card + ["---", ""]))
    train, test = load_mbpp(cfg(hub_id=str(repo), hub_config="full"))
    assert [p.id for p in test] == ["mbpp/11", "mbpp/12"]
    assert [p.id for p in train] == ["mbpp/602", "mbpp/604", "mbpp/606"]
    _, val = load_mbpp(cfg(hub_id=str(repo), hub_config="sanitized", test_split="validation", train_size=0))
    assert [p.id for p in val] == ["mbpp/511"] and val[0].meta["setup"] == "import math"
    assert val[0].question == ROWS[3]["text"] and val[0].meta["tests"] == ROWS[3]["test_list"]
