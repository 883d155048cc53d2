"""Can a teacher's token distributions be distilled into a student?  Compare the tokenizers.

Token-level KD needs the teacher and the student to mean the same token by the same id.
:func:`shared_vocab_size` decides it from the tokenizers alone (no weights loaded):

- identical vocabularies -> distil over the whole vocabulary;
- one vocabulary is the other plus tokens appended at the end (added special tokens) ->
  distil over the shared prefix;
- anything else -> :class:`TokenizerMismatch` naming both tokenizers and a differing token
  (``method.cross_tokenizer`` then chooses a cross-tokenizer loss instead, unless ``refuse``:
  :mod:`codistill.training.cross_tokenizer`).

A model's output layer is often wider than its tokenizer (GPT-J: 50400 logits for GPT-2's
50257 tokens; Qwen2.5: 151936 or 152064 logits for 151665 tokens): the rows past the
tokenizer are padding that no text ever produces.  Both models' logits are therefore sliced
to the shared size before the loss (``logits[..., :shared]``), whatever their widths.
"""

from __future__ import annotations

from codistill.config import ConfigError

#: text both tokenizers must encode identically (code, numbers, whitespace runs, unicode)
PROBE = ("def solution():\n    total = 12 * 3.5  # naïve\n\treturn {'a': [1, 2]}\r\n"
         "    print(f\"{x!r:>10}\")  ->  ∑ λ 你好 🙂\n\n\n")


class TokenizerMismatch(ConfigError):
    """The teacher's and the student's tokenizers differ: token-level KD is undefined."""


def _id_to_token(tok) -> dict[int, str]:
    return {i: t for t, i in tok.get_vocab().items()}


def tokenizer_label(tok, name: str) -> str:
    """``name`` (the model config) and where its tokenizer came from, for messages."""
    where = getattr(tok, "name_or_path", "") or type(tok).__name__
    return f"{name!r} ({where}, {len(tok)} tokens)"


def shared_vocab_size(teacher_tok, student_tok, *, teacher_name: str = "teacher",
                      student_name: str = "student") -> int:
    """The number of leading token ids the two tokenizers share (pure; reads vocabularies only).

    Raises :class:`TokenizerMismatch` naming both tokenizers when an id below the smaller
    vocabulary's size maps to different tokens, or when a probe text encodes differently
    (same vocabulary, different merges or normalisation).
    """
    t_vocab, s_vocab = _id_to_token(teacher_tok), _id_to_token(student_tok)
    n = min(max(t_vocab, default=-1), max(s_vocab, default=-1)) + 1
    labels = f"teacher tokenizer {tokenizer_label(teacher_tok, teacher_name)} and student tokenizer " \
             f"{tokenizer_label(student_tok, student_name)}"
    for i in range(n):
        if t_vocab.get(i) != s_vocab.get(i):
            raise TokenizerMismatch(
                f"method=kd: {labels} differ (id {i} is {t_vocab.get(i)!r} for the teacher, "
                f"{s_vocab.get(i)!r} for the student); token-level distillation needs one shared "
                f"vocabulary: pick a teacher and a student of the same tokenizer family, or distil "
                f"across tokenizers with method.cross_tokenizer=auto|aligned|uld")
    t_ids = teacher_tok(PROBE, add_special_tokens=False).input_ids
    s_ids = student_tok(PROBE, add_special_tokens=False).input_ids
    if t_ids != s_ids:
        raise TokenizerMismatch(
            f"method=kd: {labels} have the same tokens but split text differently (a probe string "
            f"gives {len(t_ids)} vs {len(s_ids)} tokens); token-level distillation needs one tokenizer "
            f"(method.cross_tokenizer=auto|aligned|uld distils across tokenizers)")
    return n


__all__ = ["PROBE", "TokenizerMismatch", "shared_vocab_size", "tokenizer_label"]
