"""Sequence packing: several examples per row and no attention across their boundaries.

The proof compares a real model (the tiny Llama, SDPA and eager attention) on packed rows
against the same examples run one by one."""

import pytest
import torch

from codistill.config import TinyConfig
from codistill.models.tiny import build_tiny_model, load_tiny_tokenizer
from codistill.training.data import (IGNORE, PairDataModule, collate, encode_example, join_row, model_inputs,
                                     pack_examples)

PAIRS = [("def add(a, b):", "\n    return a + b"),
         ("Question: Tom has 2 apples and buys 3. How many?", "\ndef solution():\n    return 2 + 3"),
         ("x", " = 1"),
         ("Write a function that reverses a string.", "\ndef rev(s):\n    return s[::-1]\n# done"),
         ("print", "('hello world')"),
         ("class A:", "\n    pass")]


@pytest.fixture(scope="module")
def tok():
    return load_tiny_tokenizer()


@pytest.fixture(scope="module")
def items(tok):
    return [encode_example(tok, p, c, max_len=64, mask_prompt=True) for p, c in PAIRS]


def test_pack_examples_places_every_example_once_within_the_row_length(items):
    rows = pack_examples(items, 64)
    assert sorted(id(x) for r in rows for x in r) == sorted(id(x) for x in items)
    assert all(sum(len(x["input_ids"]) for x in r) <= 64 for r in rows)
    assert len(rows) < len(items)  # they were packed
    assert pack_examples(items, 64) == rows  # deterministic


def test_join_row_restarts_positions_and_hides_the_boundary_label(items):
    row = join_row(items[:2])
    n0 = len(items[0]["input_ids"])
    assert row["input_ids"] == items[0]["input_ids"] + items[1]["input_ids"]
    assert row["position_ids"][:n0] == list(range(n0)) and row["position_ids"][n0] == 0
    assert row["labels"][0] == IGNORE and row["labels"][n0] == IGNORE  # never predicted across examples
    assert row["labels"][n0 + 1:] == items[1]["labels"][1:]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_and_loss_equal_the_examples_run_alone(tok, items, attn):
    model = build_tiny_model(TinyConfig(), tok, torch.float32).eval()
    model.config._attn_implementation = attn
    rows = pack_examples(items, 64)
    batch = collate([join_row(r) for r in rows], tok.pad_token_id)
    assert batch["position_ids"].shape == batch["input_ids"].shape
    with torch.no_grad():
        packed = model(**model_inputs(batch), labels=batch["labels"])
        # the same rows run naively (one causal sequence per row) must differ: the test can fail
        naive = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss_sum, n_tok, differs = 0.0, 0, False
        for r, row in enumerate(rows):
            off = 0
            for ex in row:
                n = len(ex["input_ids"])
                ids = torch.tensor([ex["input_ids"]])
                labels = torch.tensor([ex["labels"]])
                alone = model(input_ids=ids, labels=labels)
                torch.testing.assert_close(packed.logits[r, off:off + n], alone.logits[0], atol=1e-5, rtol=1e-4)
                if off > 0:
                    differs |= not torch.allclose(naive[r, off:off + n], alone.logits[0], atol=1e-3)
                k = int((labels[0, 1:] != IGNORE).sum())
                loss_sum += float(alone.loss) * k
                n_tok += k
                off += n
    assert differs, "without packing support the later examples would see the earlier ones"
    assert float(packed.loss) == pytest.approx(loss_sum / n_tok, rel=1e-5)


def test_datamodule_packs_rows_and_keeps_every_token(tok):
    pairs = [{"prompt": p, "completion": c} for p, c in PAIRS] * 4
    plain = PairDataModule(pairs, tok, batch_size=4, max_len=128, mask_prompt=False)
    packed = PairDataModule(pairs, tok, batch_size=4, max_len=128, mask_prompt=False, packing=True)
    assert packed.n_tokens == plain.n_tokens and packed.n_examples == len(pairs)
    assert len(packed.items) < len(plain.items) / 3
    batch = next(iter(packed.train_dataloader()))
    assert set(batch) == {"input_ids", "labels", "attention_mask", "position_ids"}
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()  # padding is never a target
