"""Evaluate the organism pair: task accuracy on held-out prompts, LM loss on held-out text.

Both models get the same chat-formatted prompt (:func:`mechit.organism.chat.format_prompt`)
and decode greedily until ``</s>`` or ``max_new_tokens``. A reply is correct when the
decoded text, stripped of surrounding whitespace, equals the answer exactly. The LM loss is
the mean next-token cross-entropy over all tokens of the held-out documents
(``<s>{text}</s>``, the BOS not predicted).

>>> from mechit.organism.evaluate import evaluate     # doctest: +SKIP
>>> evaluate()["tuned"]["mean_accuracy"] >= 0.8      # doctest: +SKIP
True
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from mechit.organism import corpus, tasks
from mechit.organism.chat import BOS, EOS, format_prompt


@torch.no_grad()
def generate(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, prompts: list[str],
             *, max_new_tokens: int = 16, batch_size: int = 64) -> list[str]:
    """Greedy replies (decoded, special tokens dropped, stripped) to chat-formatted prompts.

    >>> from mechit.organism.weights import load   # doctest: +SKIP
    >>> model, tok = load("tuned")                   # doctest: +SKIP
    >>> generate(model, tok, ["Solve: two plus two"])  # doctest: +SKIP
    ['four']
    """
    replies: list[str] = []
    tok.padding_side = "left"
    for i in range(0, len(prompts), batch_size):
        chunk = [format_prompt(p) for p in prompts[i : i + batch_size]]
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        new = out[:, enc["input_ids"].shape[1] :]
        replies += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
    return replies


def accuracy(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast,
             examples: list[dict]) -> dict[str, float]:
    """Exact-match accuracy per task over ``examples`` (dicts with task, prompt, answer)."""
    replies = generate(model, tok, [e["prompt"] for e in examples])
    hits: dict[str, list[bool]] = {}
    for e, r in zip(examples, replies):
        hits.setdefault(e["task"], []).append(r == e["answer"])
    return {task: sum(h) / len(h) for task, h in hits.items()}


@torch.no_grad()
def lm_loss(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, docs: list[str],
            batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over all predicted tokens of ``docs``."""
    total, count = 0.0, 0
    tok.padding_side = "right"
    for i in range(0, len(docs), batch_size):
        chunk = [f"{BOS}{d}{EOS}" for d in docs[i : i + batch_size]]
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        logits = model(**enc).logits[:, :-1]
        target = enc["input_ids"][:, 1:]
        keep = enc["attention_mask"][:, 1:].bool()
        total += F.cross_entropy(logits[keep], target[keep], reduction="sum").item()
        count += int(keep.sum())
    return total / count


def sample(examples: list[dict], per_task: int | None) -> list[dict]:
    """The first ``per_task`` examples of each task (all when ``per_task`` is None)."""
    if per_task is None:
        return examples
    seen: dict[str, int] = {}
    out = []
    for e in examples:
        if seen.get(e["task"], 0) < per_task:
            seen[e["task"]] = seen.get(e["task"], 0) + 1
            out.append(e)
    return out


def evaluate(weights: str | Path | None = None, *, per_task: int | None = None,
             n_docs: int | None = None) -> dict:
    """The evaluation record of the pair in ``weights`` (default: the shipped pair).

    Returns ``{"base": {"accuracy": {task: float}, "mean_accuracy": float, "lm_loss": float},
    "tuned": {...}, "n_eval": int, "seed": int}``; ``n_eval`` counts the prompts each model
    answered; ``seed`` is the training seed recorded in ``organism.json``.
    """
    from mechit.organism.weights import load, weights_dir

    root = Path(weights) if weights is not None else weights_dir()
    examples = sample(tasks.heldout_examples(), per_task)
    docs = corpus.heldout_documents()[:n_docs]
    torch.set_num_threads(min(2, torch.get_num_threads()))
    record: dict = {}
    for name in ("base", "tuned"):
        model, tok = load(name, root)
        acc = accuracy(model, tok, examples)
        record[name] = {
            "accuracy": {t: round(a, 4) for t, a in acc.items()},
            "mean_accuracy": round(sum(acc.values()) / len(acc), 4),
            "lm_loss": round(lm_loss(model, tok, docs), 4),
        }
    record["n_eval"] = len(examples)
    record["seed"] = json.loads((root / "organism.json").read_text())["seed"]
    return record
