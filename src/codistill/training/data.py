"""Tokenise (prompt, completion) pairs for causal-LM fine-tuning."""

from __future__ import annotations

import functools
import random

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from codistill.training.resume import ResumableLoader

IGNORE = -100


def encode_example(tokenizer, prompt: str, completion: str, *, max_len: int, mask_prompt: bool) -> dict:
    """input_ids = prompt + completion + eos; labels = input_ids with the prompt set to
    IGNORE when ``mask_prompt``.  Over-long examples lose the start of the prompt, never
    the completion's end (the part the student must learn)."""
    p = tokenizer(prompt, add_special_tokens=False).input_ids
    c = tokenizer(completion, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    if len(c) >= max_len:
        p, c = [], c[:max_len]
    elif len(p) + len(c) > max_len:
        p = p[len(p) + len(c) - max_len:]
    ids = p + c
    labels = ([IGNORE] * len(p) if mask_prompt else list(p)) + c
    return {"input_ids": ids, "labels": labels}


def pack_examples(items: list[dict], max_len: int) -> list[list[dict]]:
    """Group encoded examples into rows of at most ``max_len`` tokens (first-fit, longest first).

    Deterministic; every example lands in exactly one row and keeps its own tokens.  Rows
    are returned in the order they were opened (shuffle them for training).
    """
    order = sorted(range(len(items)), key=lambda i: (-len(items[i]["input_ids"]), i))
    rows: list[list[dict]] = []
    room: list[int] = []
    for i in order:
        n = len(items[i]["input_ids"])
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(items[i])
                room[r] -= n
                break
        else:
            rows.append([items[i]])
            room.append(max_len - n)
    return rows


def join_row(examples: list[dict]) -> dict:
    """One packed row: the examples' tokens end to end, ``position_ids`` restarting at 0 for
    each, and the first label of each example set to IGNORE (it would be predicted from the
    previous example's last token)."""
    ids, labels, pos = [], [], []
    for ex in examples:
        ids += ex["input_ids"]
        labels += [IGNORE] + list(ex["labels"][1:])
        pos += list(range(len(ex["input_ids"])))
    return {"input_ids": ids, "labels": labels, "position_ids": pos}


class PairDataset(Dataset):
    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def collate(batch: list[dict], pad_id: int) -> dict:
    """Right-padded tensors.  Packed rows (with ``position_ids``) also get ``position_ids``;
    their padding continues as a segment of its own (positions from 0), labels IGNORE."""
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    packed = "position_ids" in batch[0]
    pos = torch.zeros((len(batch), width), dtype=torch.long) if packed else None
    for r, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[r, :n] = torch.tensor(b["input_ids"])
        labels[r, :n] = torch.tensor(b["labels"])
        mask[r, :n] = 1
        if packed:
            pos[r, :n] = torch.tensor(b["position_ids"])
            pos[r, n:] = torch.arange(width - n)
    out = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    if packed:
        out["position_ids"] = pos
    return out


def model_inputs(batch: dict) -> dict:
    """The keyword arguments of the model's forward for a batch from :func:`collate`.

    Unpacked: ``input_ids`` + the 2-D padding ``attention_mask``.  Packed (the batch has
    ``position_ids``): ``input_ids`` + ``position_ids`` and *no* attention mask, with the KV
    cache off: transformers (>= 4.53, masking_utils) then finds the examples from the
    restarting positions and builds a block-diagonal causal mask (SDPA, eager and flex), so
    no token attends across an example boundary (tests/test_packing.py proves it against
    the examples run one by one).  ``batch["attention_mask"]`` still marks the real tokens.
    """
    if "position_ids" in batch:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}


class PairDataModule(pl.LightningDataModule):
    """Training pairs → padded batches (right padding; the loss ignores the padding).

    ``packing``: examples are packed into rows of up to ``max_len`` tokens (see
    :func:`pack_examples`, :func:`model_inputs`); a batch is ``batch_size`` such rows.
    """

    def __init__(self, pairs: list[dict], tokenizer, *, batch_size: int, max_len: int, mask_prompt: bool,
                 seed: int = 0, num_workers: int = 0, packing: bool = False) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.items = [encode_example(tokenizer, x["prompt"], x["completion"], max_len=max_len,
                                     mask_prompt=mask_prompt) for x in pairs]
        self.n_examples = len(self.items)
        if packing:
            self.items = [join_row(row) for row in pack_examples(self.items, max_len)]
        random.Random(seed).shuffle(self.items)

    @property
    def n_tokens(self) -> int:
        return sum(len(x["input_ids"]) for x in self.items)

    @property
    def longest(self) -> int:
        """Tokens in the longest row (a batch is padded to its longest row)."""
        return max((len(x["input_ids"]) for x in self.items), default=1)

    def train_dataloader(self) -> DataLoader:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        # checkpointed by Lightning: a run resumed mid-epoch skips the batches already trained on
        return ResumableLoader(PairDataset(self.items), batch_size=self.batch_size, shuffle=True,
                          num_workers=self.num_workers, collate_fn=functools.partial(collate, pad_id=pad),
                          generator=torch.Generator().manual_seed(self.seed))
