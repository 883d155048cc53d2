from codistill.methods.ekt import select_kept
from codistill.tasks.judge import Judged
from codistill.training.data import IGNORE, collate, encode_example
from codistill.training.module import warmup_linear


class CharTok:
    """A character tokenizer: enough to test masking and truncation exactly."""
    eos_token_id = 0
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        class R:
            input_ids = [ord(c) for c in text]
        return R()


def test_encode_masks_prompt_and_appends_eos():
    ex = encode_example(CharTok(), "ab", "cd", max_len=16, mask_prompt=True)
    assert ex["input_ids"] == [97, 98, 99, 100, 0]
    assert ex["labels"] == [IGNORE, IGNORE, 99, 100, 0]
    ex = encode_example(CharTok(), "ab", "cd", max_len=16, mask_prompt=False)
    assert ex["labels"] == [97, 98, 99, 100, 0]


def test_encode_truncates_prompt_start_not_completion():
    ex = encode_example(CharTok(), "abcdef", "xy", max_len=5, mask_prompt=True)
    assert ex["input_ids"] == [ord("e"), ord("f"), ord("x"), ord("y"), 0]


def test_collate_pads_right_and_ignores_padding():
    b = collate([{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8], "labels": [IGNORE]}], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["labels"].tolist() == [[5, 6, 7], [IGNORE, IGNORE, IGNORE]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_warmup_then_linear_decay():
    assert warmup_linear(0, 4, 20) == 0.25
    assert warmup_linear(3, 4, 20) == 1.0
    assert warmup_linear(12, 4, 20) == 0.5
    assert warmup_linear(20, 4, 20) == 0.0
    assert warmup_linear(5, 0, 10) == 0.5


def _j(program, passed):
    return Judged(completion=program, program=program, passed=passed, status="passed" if passed else "failed",
                  value=None, error=None)


def test_keep_policies():
    js = [_j("def solution():\n    return 1", False), _j("def solution():\n    return 2", True),
          _j("def solution():\n    return 2  # same", True), _j("def solution():\n    return 1+1", True)]
    assert [j.program for j in select_kept(js, "first")] == ["def solution():\n    return 2"]
    assert len(select_kept(js, "unique")) == 2
    assert len(select_kept(js, "unique", max_per_problem=1)) == 1
    assert select_kept([_j("x", False)], "first") == []
