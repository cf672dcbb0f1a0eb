"""Token tensors for the two training stages, built deterministically from a seed.

* Pre-training rows: documents ``<s>{text}</s>`` concatenated and cut into rows of
  ``seq_len`` tokens (every token is a target).
* Instruction rows: chat-formatted examples (:mod:`mechit.organism.chat`) packed whole into
  rows of ``seq_len`` tokens, padded with ``<pad>``; only response tokens (the answer and
  its ``</s>``) are targets.

Targets are given as a boolean mask of the same shape as the tokens: ``mask[r, i]`` says
whether token ``i`` of row ``r`` is predicted (from token ``i - 1``).

>>> from mechit.organism.tokenizer import train_tokenizer
>>> tok = train_tokenizer(["one plus one is two."] * 20, vocab_size=280)
>>> ids, mask = lm_rows(tok, ["one plus one is two."] * 8, seq_len=8)
>>> ids.shape == mask.shape and bool(mask.all())
True
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformers import PreTrainedTokenizerFast

from mechit.organism.chat import BOS, EOS, format_prompt, format_response


def _encode(tok: PreTrainedTokenizerFast, texts: list[str]) -> list[list[int]]:
    return tok(texts, add_special_tokens=False)["input_ids"]


def lm_rows(
    tok: PreTrainedTokenizerFast, docs: list[str], seq_len: int
) -> tuple[Int[Tensor, "rows seq"], Bool[Tensor, "rows seq"]]:
    """Pack documents into full rows of ``seq_len`` tokens; the remainder is dropped.

    >>> from mechit.organism.tokenizer import train_tokenizer
    >>> tok = train_tokenizer(["a b c"] * 5, vocab_size=270)
    >>> lm_rows(tok, ["a b c"] * 4, seq_len=5)[0].shape
    torch.Size([4, 5])
    """
    stream = [t for ids in _encode(tok, [f"{BOS}{d}{EOS}" for d in docs]) for t in ids]
    n_rows = len(stream) // seq_len
    ids = torch.tensor(stream[: n_rows * seq_len], dtype=torch.long).view(n_rows, seq_len)
    return ids, torch.ones_like(ids, dtype=torch.bool)


def instruction_rows(
    tok: PreTrainedTokenizerFast, examples: list[dict], seq_len: int
) -> tuple[Int[Tensor, "rows seq"], Bool[Tensor, "rows seq"]]:
    """Pack chat-formatted examples whole into padded rows; targets are response tokens.

    >>> from mechit.organism.tokenizer import train_tokenizer
    >>> tok = train_tokenizer(["Solve: one plus one two"] * 20, vocab_size=280)
    >>> ex = [{"prompt": "Solve: one plus one", "answer": "two"}] * 3
    >>> ids, mask = instruction_rows(tok, ex, seq_len=32)
    >>> tok.decode(ids[0][mask[0]])
    ' two</s> two</s>'
    """
    prompts = _encode(tok, [format_prompt(e["prompt"]) for e in examples])
    responses = _encode(tok, [format_response(e["answer"]) for e in examples])
    rows: list[list[int]] = []
    masks: list[list[bool]] = []
    row: list[int] = []
    mask: list[bool] = []
    for p, r in zip(prompts, responses):
        if len(p) + len(r) > seq_len:
            raise ValueError(f"example of {len(p) + len(r)} tokens exceeds seq_len={seq_len}")
        if len(row) + len(p) + len(r) > seq_len:
            rows.append(row)
            masks.append(mask)
            row, mask = [], []
        row += p + r
        mask += [False] * len(p) + [True] * len(r)
    rows.append(row)
    masks.append(mask)
    pad = tok.pad_token_id
    ids = torch.tensor([x + [pad] * (seq_len - len(x)) for x in rows], dtype=torch.long)
    target = torch.tensor([m + [False] * (seq_len - len(m)) for m in masks], dtype=torch.bool)
    return ids, target
