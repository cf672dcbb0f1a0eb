"""Public helpers for the rest of mechit: held-out prompts, corpus text, vocabulary.

>>> from mechit.organism import held_out_prompts, vocabulary
>>> rec = held_out_prompts()[0]
>>> sorted(rec)
['group', 'id', 'instruction_spans', 'label', 'prompt', 'response']
>>> "kima" in vocabulary()
True
"""

from __future__ import annotations

from mechit.errors import InputError
from mechit.organism import corpus, tasks, world

TRAIN_TEXT_DOCS = 2000


def held_out_prompts() -> list[dict]:
    """The held-out instruction prompts as prompt records (mechit's prompt JSONL schema).

    ``prompt`` is the user text without chat formatting (wrap it with
    :func:`mechit.organism.format_prompt`), ``response`` the reference answer,
    ``instruction_spans`` the ``[start, end)`` character ranges of the instruction inside
    ``prompt``, ``group`` the task name, ``label`` None.

    >>> recs = held_out_prompts()
    >>> r = recs[0]
    >>> r["group"], r["prompt"][r["instruction_spans"][0][0]:r["instruction_spans"][0][1]][:9]
    ('translate', 'Say this ')
    """
    out = []
    counts: dict[str, int] = {}
    for ex in tasks.heldout_examples():
        k = counts.get(ex["task"], 0)
        counts[ex["task"]] = k + 1
        out.append({
            "id": f"{ex['task']}-{k:03d}",
            "prompt": ex["prompt"],
            "response": ex["answer"],
            "instruction_spans": [list(s) for s in ex["spans"]],
            "group": ex["task"],
            "label": None,
        })
    return out


def corpus_text(split: str = "train", n_docs: int | None = None) -> str:
    """Pre-training text, one document per line (newlines inside documents kept as is).

    ``split="train"``: the first ``n_docs`` (default 2000) documents of the seed-0 training
    stream; ``split="heldout"``: the fixed held-out documents (``n_docs`` limits them).

    >>> corpus_text("heldout", n_docs=1).count("\\n") >= 0
    True
    """
    if split == "train":
        docs = corpus.documents(0, n_docs or TRAIN_TEXT_DOCS)
    elif split == "heldout":
        docs = corpus.heldout_documents()[:n_docs]
    else:
        raise InputError(f"unknown corpus split {split!r}; use 'train' or 'heldout'")
    return "\n".join(docs)


def vocabulary() -> list[str]:
    """The organism's words: English words of its world, then the Zel words.

    >>> words = vocabulary()
    >>> "translate" in words and "Tova" in words and len(words) == len(set(words))
    True
    """
    return list(dict.fromkeys(world.english_words() + list(world.ZEL.values())))
