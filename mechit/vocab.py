"""The one default vocabulary rule of the head and FFN analyses (``mechit compare``, ``mechit
heads``, ``mechit ffn``, the notebooks): which words, and how many per head dimension.

>>> len(default_words(model)) > len(vocabulary()), default_top_k(model, 689)
(True, 100)
"""

from __future__ import annotations

from pathlib import Path

from mechit.data.wordlists import (
    PAPER_VOCABULARY,
    finding_verbs,
    head_vocabulary,
    paper_top_k,
)
from mechit.models import ORGANISM_SPECS, organism_dir
from mechit.organism import vocabulary
from mechit.tokens import word_token_ids


def is_organism(model) -> bool:
    """Whether ``model`` is the embedded organism (loaded as "organism-base"/"organism-tuned" or
    from its weights folder).

    >>> is_organism(model), is_organism(tiny)
    (True, False)
    """
    weights = organism_dir("base").parent.resolve()
    source = Path(str(getattr(model.tokenizer, "name_or_path", "") or ".")).resolve()
    return getattr(model, "mechit_spec", None) in ORGANISM_SPECS or weights in source.parents


def default_words(model, n_words: int = PAPER_VOCABULARY) -> list[str]:
    """The one default word list of the head and FFN analyses (``mechit compare``, ``mechit
    heads``, ``mechit ffn``, the notebooks).

    For the embedded organism: its own vocabulary, then the verbs Finding 2 compares
    (:func:`mechit.data.wordlists.finding_verbs`) that its tokenizer holds as one token
    (a word it knows; its byte-level pieces would spell any other word). Otherwise
    :func:`mechit.data.wordlists.head_vocabulary` (``n_words`` frequent English words, default
    the paper's 26,500, with the 38 instruction verbs and the general verbs always added).
    Pair it with K = :func:`mechit.data.wordlists.paper_top_k` of its length.

    >>> words = default_words(model)
    >>> words[:len(vocabulary())] == vocabulary() and {"summarize", "classify", "run"} <= set(words)
    True
    """
    if is_organism(model):
        own = vocabulary()
        known = set(own)
        verbs = [v for v in finding_verbs() if v not in known]
        kept, ids, _ = word_token_ids(model.tokenizer, verbs)
        return own + [word for word, pieces in zip(kept, ids) if len(pieces) == 1]
    return head_vocabulary(n_words)


ORGANISM_TOP_K = 100


def default_top_k(model, n_words: int) -> int:
    """K words per head dimension and side for a vocabulary of ``n_words``: the paper's ratio
    (:func:`mechit.data.wordlists.paper_top_k`, K = 100 of 26,500), except for the organism,
    which keeps :data:`ORGANISM_TOP_K`: on its ~700 words the ratio gives K = 3, and then no
    instruction verb enters any head's knowledge (docs/heads.md).

    >>> default_top_k(tiny, 26_500), default_top_k(tiny, 10_000), default_top_k(model, 689)
    (100, 38, 100)
    """
    return ORGANISM_TOP_K if is_organism(model) else paper_top_k(n_words)
