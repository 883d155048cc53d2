import json

import pytest

from codistill.datasets.gsm8k import DataFileError, gold_from_solution, read_jsonl
from codistill.execution import run_programs
from codistill.tasks.base import Problem, Prompt
from codistill.tasks.base import normalize_program
from codistill.tasks.gsm import GSMTask, answers_match, clean_question, parse_number


@pytest.mark.parametrize("raw,expected", [
    (72, 72.0), (3.5, 3.5), ("1,234", 1234.0), ("$5.50", 5.5), ("12%", 12.0), (" -7 ", -7.0),
    (True, None), (None, None), ("twelve", None), (float("nan"), None), ([1], None),
])
def test_parse_number(raw, expected):
    assert parse_number(raw) == expected


def test_answers_match_tolerances():
    assert answers_match(18.000000001, 18)
    assert answers_match("18", 18.0)
    assert not answers_match(18.01, 18)
    assert answers_match(18.01, 18, abs_tol=0.02)
    assert answers_match(1e9 + 1, 1e9, abs_tol=0, rel_tol=1e-6)
    assert not answers_match(True, 1)  # a bool is not an answer


def test_gold_from_gsm8k_answer():
    assert gold_from_solution("She has 3+4=7 apples.\n#### 1,007") == 1007.0
    assert gold_from_solution("no final marker") is None


def test_gsm8k_jsonl_reports_bad_line(tmp_path):
    f = tmp_path / "train.jsonl"
    good = {"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}
    f.write_text(json.dumps(good) + "\n" + "{not json\n")
    with pytest.raises(DataFileError, match=r"train.jsonl:2: invalid JSON"):
        read_jsonl(f, "train")
    f.write_text(json.dumps(good) + "\n\n" + json.dumps({"question": "q", "answer": "no marker"}) + "\n")
    with pytest.raises(DataFileError, match=r"train.jsonl:3: 'answer' does not end in"):
        read_jsonl(f, "train")
    f.write_text(json.dumps(good) + "\n" + json.dumps({"question": 5, "answer": "#### 1"}) + "\n")
    with pytest.raises(DataFileError, match=r"train.jsonl:2: missing or non-string field\(s\) \['question'\]"):
        read_jsonl(f, "train")
    with pytest.raises(FileNotFoundError, match="dataset.train_file"):
        read_jsonl(tmp_path / "absent.jsonl", "train")


def test_gsm8k_jsonl_parses(tmp_path):
    f = tmp_path / "test.jsonl"
    f.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": f"x\n#### {i},000"}) for i in range(3)))
    probs = read_jsonl(f, "test")
    assert [p.answer for p in probs] == [0.0, 1000.0, 2000.0]
    assert probs[1].id == "gsm8k/test/2"


def test_clean_question_strips_format_instruction():
    q = "How many? Give the result as your final answer. Do not include units."
    assert clean_question(q) == "How many?"


class _NoChatTok:
    chat_template = None


def test_pal_prompt_pins_entry_and_extracts_program():
    task = GSMTask("pal")
    prob = Problem(id="p", question="Ann has 3 apples and buys 4. How many?", answer=7)
    prompt = task.render(prob, _NoChatTok(), chat=False, shots=2)
    assert prompt.text.endswith("# Question: Ann has 3 apples and buys 4. How many?\ndef solution():")
    assert prompt.text.count("# Question:") == 3
    completion = "\n    a = 3\n    b = 4\n    return a + b\n\n# Question: next one\ndef solution():\n    return 0"
    program = task.extract_program(prompt, completion)
    assert program == "def solution():\n    a = 3\n    b = 4\n    return a + b\n"
    assert task.target(prompt, program) == "\n    a = 3\n    b = 4\n    return a + b"


def test_extract_trims_trailing_chatter():
    task = GSMTask("pal")
    prompt = Prompt(text="...def solution():", prefix="def solution():")
    program = task.extract_program(prompt, "\n    return 2 * 21\nThis returns the answer.")
    assert program == "def solution():\n    return 2 * 21\n"


def test_normalize_program_ignores_comments_and_spacing():
    a = "def solution():\n    x = 1  # one\n    return x+1\n"
    b = "def solution():\n\n    x   = 1\n    return x + 1\n"
    assert normalize_program(a) == normalize_program(b)


def test_judge_runs_in_sandbox_and_compares_in_parent():
    task = GSMTask("pal")
    prob = Problem(id="p", question="q", answer=42)
    programs = [
        "def solution():\n    return 6 * 7\n",
        "def solution():\n    return 41\n",
        "class Evil(int):\n    def __eq__(self, o): return True\n\ndef solution():\n    return Evil(5)\n",
        "import sys\ndef solution():\n    sys.exit(0)\n",
        "def solution():\n    return '42'\n",
    ]
    results = run_programs([task.check_program(prob, p) for p in programs], timeout_s=5)
    verdicts = [task.judge(prob, r) for r in results]
    assert verdicts == [True, False, False, False, True]


def test_mathqa_style_reads_answer_variable():
    task = GSMTask("mathqa")
    prob = Problem(id="p", question="q", answer=12)
    prompt = task.render(prob, _NoChatTok(), chat=False, shots=1)
    assert "answer =" in prompt.text and prompt.prefix == ""
    program = task.extract_program(prompt, "n0 = 3\nn1 = 4\nanswer = n0 * n1\n\n# Question: x")
    [res] = run_programs([task.check_program(prob, program)], timeout_s=5)
    assert task.judge(prob, res)
