"""Distillation across tokenizers: line two tokenizations of the same text up, map shared pieces.

A teacher and a student with different vocabularies see the same (prompt, completion)
*text*, each through its own tokenizer.  Their completion tokens are lined up through the
characters they cover (``method.cross_tokenizer``):

``uld``
    Universal Logit Distillation (Boizard et al. 2024): the i-th completion position of the
    student is paired with the i-th of the teacher, over the first ``min(n_S, n_T)`` positions
    (the paper truncates to the shorter answer); the loss compares sorted probability vectors,
    so no token needs to mean the same thing on both sides.
``aligned``
    span alignment (as GOLD / MinED-style alignment do): :func:`align_spans` cuts both token
    sequences where *both* end on the same character boundary, giving groups (student tokens,
    teacher tokens) that cover the same piece of text -- one token on each side for most of
    a completion between tokenizers of a family, merges and splits elsewhere.  Each group is
    distilled at its first position: there both models predict the same next text.  Their
    distributions are compared piece by piece where the two vocabularies share a piece
    (:func:`piece_map`: the same token string, plus the end-of-sequence tokens by role) and
    through ULD over the rest (:func:`codistill.training.losses.aligned_kd_loss`).  We follow
    the group-start variant (one distribution per group, as MinED's token mapping): GOLD
    instead merges a group's probabilities into one product; the start-of-group
    distribution needs no teacher re-scoring and keeps every group's loss a proper
    divergence.

``projected``
    the span alignment's positions, as ``aligned``; the teacher's whole distribution is carried
    onto the student's vocabulary by *first-token projection* (:func:`tokenizer_projection_map`):
    a piece both vocabularies share maps to itself, any other teacher piece to the student token
    its text begins with (Qwen's ``_cost`` -> SmolLM2's ``_``), and the probabilities of teacher
    pieces sharing a student token add up -- the teacher's probability that the next text begins
    with that student token.  The usual divergence then compares two distributions over the
    student's vocabulary (:func:`codistill.training.losses.projected_kd_loss`); no mass is left to
    ULD.  Measured on the EKT reproduction's data (Qwen2.5-Coder-0.5B -> SmolLM2-135M, 321 aligned
    positions): the teacher's top-1, mapped, is the student's next token at 61% of the positions
    with the piece map and 80% with the projection; 22% of the teacher's mass on average sits on
    pieces SmolLM2 lacks, which ``aligned`` hands to ULD -- and ULD, blind to token identity,
    pushes the student's largest unshared tokens up to match it.

Everything here is pure (tokenizers in, lists out) and tested on hand-made tokenizations.
Positions returned are *shifted* indices: index ``i`` is the logits row that predicts token
``i + 1`` (``logits[:, :-1]``), as the losses use them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("auto", "uld", "aligned", "projected", "refuse")

Span = tuple[int, int]


def clean_cuts(spans: list[Span]) -> dict[int, int]:
    """``{character offset: index of the last token ending there}`` at every offset where the
    text can be cut between tokens: token ``i`` ends at ``e`` and no later token starts before
    ``e``.  Byte-level tokenizers split a multi-byte character into tokens that share its
    span; no cut falls inside such a character."""
    cuts: dict[int, int] = {}
    for i, (_, end) in enumerate(spans):
        if all(s >= end for s, _ in spans[i + 1:i + 8]):  # overlaps are local (one character's bytes)
            cuts[end] = i
    return cuts


def align_spans(student: list[Span], teacher: list[Span]) -> list[tuple[list[int], list[int]]]:
    """Groups ``(student token indices, teacher token indices)`` covering the same characters.

    ``student`` / ``teacher``: each token's ``(start, end)`` character span in the one shared
    text (a tokenizer's ``offset_mapping``).  A group ends where both tokenizations can be
    cut at the same offset; groups are in text order and contiguous on both sides.  Tokens
    past the last common cut (one side truncated) belong to no group.
    """
    s_cuts, t_cuts = clean_cuts(student), clean_cuts(teacher)
    groups, i0, j0 = [], 0, 0
    for c in sorted(set(s_cuts) & set(t_cuts)):
        i, j = s_cuts[c], t_cuts[c]
        if i < i0 or j < j0:  # an empty-span token already grouped
            continue
        groups.append((list(range(i0, i + 1)), list(range(j0, j + 1))))
        i0, j0 = i + 1, j + 1
    return groups


def piece_map(teacher_vocab: dict[str, int], student_vocab: dict[str, int], teacher_size: int,
              same: list[tuple[int, int]] = ()) -> np.ndarray:
    """``t2s[teacher id] = student id`` of the same token string, else -1 (``[teacher_size]``).

    ``same``: extra ``(teacher id, student id)`` pairs that mean the same though spelt
    differently (the two end-of-sequence tokens).  A student id is used at most once."""
    t2s = np.full(teacher_size, -1, dtype=np.int64)
    used: set[int] = set()
    for t_id, s_id in same:
        if 0 <= t_id < teacher_size and t_id >= 0 and s_id >= 0 and s_id not in used:
            t2s[t_id] = s_id
            used.add(s_id)
    for piece, t_id in teacher_vocab.items():
        s_id = student_vocab.get(piece)
        if s_id is not None and t_id < teacher_size and t2s[t_id] < 0 and s_id not in used:
            t2s[t_id] = s_id
            used.add(s_id)
    return t2s


def projection_map(t2s: np.ndarray, first_student_ids: list[int]) -> np.ndarray:
    """``projected``'s map: every teacher id to a student id -- the piece map where the two
    vocabularies share the piece, else ``first_student_ids[teacher id]``, the student token its
    text begins with (-1: none, e.g. an empty piece).  Many teacher ids may share a student id
    (``_cost`` and ``_`` both -> ``_``): their probabilities add up (:func:`projected_kd_loss`)."""
    out = np.asarray(t2s, dtype=np.int64).copy()
    first = np.asarray(first_student_ids[:len(out)], dtype=np.int64)
    free = out < 0
    out[free] = first[free]
    return out


def tokenizer_projection_map(teacher_tok, student_tok, teacher_size: int) -> np.ndarray:
    """:func:`projection_map` of two tokenizers: each teacher piece's text (decoded alone) through
    the student's tokenizer; special tokens other than end-of-sequence map nowhere (-1)."""
    t2s = tokenizer_piece_map(teacher_tok, student_tok, teacher_size)
    special = set(teacher_tok.all_special_ids)
    texts = [teacher_tok.decode([i]) if i not in special else "" for i in range(teacher_size)]
    first = [ids[0] if ids else -1 for ids in student_tok(texts, add_special_tokens=False).input_ids]
    first = [-1 if i in special else f for i, f in enumerate(first)]
    return projection_map(t2s, first)


def tokenizer_piece_map(teacher_tok, student_tok, teacher_size: int) -> np.ndarray:
    """:func:`piece_map` of two tokenizers (end-of-sequence tokens paired by role)."""
    same = [(teacher_tok.eos_token_id, student_tok.eos_token_id)] \
        if teacher_tok.eos_token_id is not None and student_tok.eos_token_id is not None else []
    return piece_map(teacher_tok.get_vocab(), student_tok.get_vocab(), teacher_size, same)


def uld_positions(n_student: int, n_teacher: int) -> tuple[list[int], list[int]]:
    """ULD's pairing: the i-th completion token of each side, over the shorter completion."""
    n = min(n_student, n_teacher)
    return list(range(n)), list(range(n))


def aligned_positions(groups: list[tuple[list[int], list[int]]]) -> tuple[list[int], list[int]]:
    """The span alignment's pairing: the first token of every group, on each side."""
    return [g[0][0] for g in groups], [g[1][0] for g in groups]


@dataclass
class CrossItem:
    """One training example as both models see it, and the completion positions to compare."""

    student: dict  # encode_example's item (student tokenizer)
    teacher: dict  # the same text through the teacher's tokenizer
    s_pos: list[int]  # shifted positions in the student's row
    t_pos: list[int]  # the paired shifted positions in the teacher's row


def _completion(tok, completion: str) -> tuple[list[int], list[Span]]:
    enc = tok(completion, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc.input_ids), [tuple(o) for o in enc.offset_mapping]


def encode_cross(student_tok, teacher_tok, prompt: str, completion: str, *, max_len: int, mask_prompt: bool,
                 mode: str) -> CrossItem:
    """Encode one pair with both tokenizers (:func:`encode_example` on each) and pair the
    positions that predict completion tokens (``mode``: ``uld`` or ``aligned``).

    The completion's last token is each side's end-of-sequence token; in ``aligned`` mode
    it forms a group of its own when neither side was truncated."""
    from codistill.training.data import encode_example

    if mode not in ("uld", "aligned", "projected"):
        raise ValueError(f"mode: {mode!r} is not one of ['uld', 'aligned', 'projected']")
    s = encode_example(student_tok, prompt, completion, max_len=max_len, mask_prompt=mask_prompt)
    t = encode_example(teacher_tok, prompt, completion, max_len=max_len, mask_prompt=mask_prompt)
    s_ids, s_spans = _completion(student_tok, completion)
    t_ids, t_spans = _completion(teacher_tok, completion)
    # where each row's completion starts, and how many of its tokens survived truncation
    s_n = min(len(s_ids) + 1, len(s["input_ids"]))
    t_n = min(len(t_ids) + 1, len(t["input_ids"]))
    s0, t0 = len(s["input_ids"]) - s_n, len(t["input_ids"]) - t_n
    if mode == "uld":
        si, ti = uld_positions(s_n, t_n)
    else:  # aligned and projected: the span alignment's groups
        groups = [g for g in align_spans(s_spans, t_spans) if g[0][-1] < s_n and g[1][-1] < t_n]
        if s_n == len(s_ids) + 1 and t_n == len(t_ids) + 1:
            groups.append(([len(s_ids)], [len(t_ids)]))  # eos <-> eos
        si, ti = aligned_positions(groups)
    # the logits row predicting completion token k sits at (row offset + k - 1); the first
    # completion token of a row that starts with it has no predicting row
    pairs = [(s0 + a - 1, t0 + b - 1) for a, b in zip(si, ti) if s0 + a >= 1 and t0 + b >= 1]
    return CrossItem(s, t, [p for p, _ in pairs], [q for _, q in pairs])


def resolve_mode(mode: str, teacher_tok, student_tok, *, teacher_name: str = "teacher",
                 student_name: str = "student") -> tuple[str, int]:
    """``(mode, shared vocabulary size)`` for ``method.cross_tokenizer``.

    ``auto``: ``shared`` when the vocabularies match or one extends the other (the size of
    the shared prefix), else ``aligned``; ``refuse``: ``shared`` or the early
    :class:`~codistill.training.vocab.TokenizerMismatch`; ``uld`` / ``aligned``: as asked
    (shared size 0: each model keeps its own vocabulary)."""
    from codistill.training.vocab import TokenizerMismatch, shared_vocab_size

    if mode not in MODES:
        raise ValueError(f"cross_tokenizer: {mode!r} is not one of {list(MODES)}")
    if mode in ("uld", "aligned", "projected"):
        return mode, 0
    try:
        return "shared", shared_vocab_size(teacher_tok, student_tok, teacher_name=teacher_name,
                                           student_name=student_name)
    except TokenizerMismatch:
        if mode == "refuse":
            raise
        return "aligned", 0


__all__ = ["MODES", "CrossItem", "align_spans", "aligned_positions", "clean_cuts", "encode_cross", "piece_map",
           "projection_map", "resolve_mode", "tokenizer_piece_map", "tokenizer_projection_map", "uld_positions"]
