"""Tokenise (prompt, completion) pairs for causal-LM fine-tuning."""

from __future__ import annotations

import functools
import random

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

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


class PairDataset(Dataset):
    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def collate(batch: list[dict], pad_id: int) -> dict:
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[r, :n] = torch.tensor(b["input_ids"])
        labels[r, :n] = torch.tensor(b["labels"])
        mask[r, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class PairDataModule(pl.LightningDataModule):
    """Training pairs → padded batches (right padding; the loss ignores the padding)."""

    def __init__(self, pairs: list[dict], tokenizer, *, batch_size: int, max_len: int, mask_prompt: bool,
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.items = [encode_example(tokenizer, x["prompt"], x["completion"], max_len=max_len,
                                     mask_prompt=mask_prompt) for x in pairs]
        random.Random(seed).shuffle(self.items)

    @property
    def n_tokens(self) -> int:
        return sum(len(x["input_ids"]) for x in self.items)

    def train_dataloader(self) -> DataLoader:
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        return DataLoader(PairDataset(self.items), batch_size=self.batch_size, shuffle=True,
                          num_workers=self.num_workers, collate_fn=functools.partial(collate, pad_id=pad),
                          generator=torch.Generator().manual_seed(self.seed))
