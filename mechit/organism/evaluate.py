"""Evaluate the organism pair: task scores on held-out prompts, LM loss on held-out text.

Both models get the same chat-formatted prompt (:func:`mechit.organism.chat.format_prompt`)
and decode greedily until ``</s>`` or ``max_new_tokens``. A reply to a closed task is
correct when the decoded text, stripped of surrounding whitespace, equals the answer
exactly; a reply to an open task passes the check of :mod:`mechit.organism.judge`. The LM
loss is the mean next-token cross-entropy over all tokens of the held-out documents
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

from mechit.organism import corpus, judge, tasks
from mechit.organism.chat import BOS, EOS, format_prompt

# a reference response of this many tokens or more is long (issue 16: at least half)
LONG_RESPONSE_TOKENS = 15


@torch.no_grad()
def generate(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, prompts: list[str],
             *, max_new_tokens: int = 40, batch_size: int = 64) -> list[str]:
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


def scores(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast,
           examples: list[dict]) -> dict[str, float]:
    """Share of passed replies per task over ``examples`` (dicts with task, prompt, input,
    answer): exact match for closed tasks, :func:`mechit.organism.judge.passes` for open ones."""
    replies = generate(model, tok, [e["prompt"] for e in examples])
    hits: dict[str, list[bool]] = {}
    for e, r in zip(examples, replies):
        ok = (judge.passes(e["task"], e["prompt"], e["input"], r) if e["task"] in tasks.OPEN_TASKS
              else r == e["answer"])
        hits.setdefault(e["task"], []).append(ok)
    return {task: sum(h) / len(h) for task, h in hits.items()}


def long_response_share(tok: PreTrainedTokenizerFast, examples: list[dict]) -> float:
    """Share of ``examples`` whose reference answer (with its leading space, without
    ``</s>``) is ``LONG_RESPONSE_TOKENS`` tokens or more.

    >>> from mechit.organism.tokenizer import train_tokenizer
    >>> tok = train_tokenizer(["a b c"] * 5, vocab_size=270)
    >>> long_response_share(tok, [{"answer": "a " * 20}, {"answer": "b"}])
    0.5
    """
    lengths = [len(ids) for ids in tok([f" {e['answer']}" for e in examples], add_special_tokens=False)["input_ids"]]
    return sum(n >= LONG_RESPONSE_TOKENS for n in lengths) / len(lengths)


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

    Returns ``{"base": {"accuracy": {task: float}, "mean_accuracy": float, "open_score":
    {task: float}, "mean_open_score": float, "lm_loss": float}, "tuned": {...},
    "long_response_share": float, "n_eval": int, "seed": int}``: ``accuracy`` is the exact
    match of the closed tasks, ``open_score`` the pass rate of the open ones;
    ``long_response_share`` the share of the evaluated prompts whose reference is long
    (:func:`long_response_share`); ``n_eval`` counts the prompts each model answered;
    ``seed`` is the training seed recorded in ``organism.json``.
    """
    from mechit.organism.weights import load, weights_dir

    root = Path(weights) if weights is not None else weights_dir()
    examples = sample(tasks.heldout_examples(), per_task)
    docs = corpus.heldout_documents()[:n_docs]
    torch.set_num_threads(min(2, torch.get_num_threads()))
    record: dict = {}
    for name in ("base", "tuned"):
        model, tok = load(name, root)
        score = scores(model, tok, examples)
        closed = {t: round(a, 4) for t, a in score.items() if t in tasks.CLOSED_TASKS}
        opened = {t: round(a, 4) for t, a in score.items() if t in tasks.OPEN_TASKS}
        record[name] = {
            "accuracy": closed,
            "mean_accuracy": round(sum(closed.values()) / len(closed), 4),
            "open_score": opened,
            "mean_open_score": round(sum(opened.values()) / len(opened), 4),
            "lm_loss": round(lm_loss(model, tok, docs), 4),
        }
    record["long_response_share"] = round(long_response_share(tok, examples), 4)
    record["n_eval"] = len(examples)
    record["seed"] = json.loads((root / "organism.json").read_text())["seed"]
    return record
