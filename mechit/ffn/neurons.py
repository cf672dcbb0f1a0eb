"""Neuron tokens (Geva et al. 2022; PAPER §3.4): the words each MLP neuron writes.

Neuron ``n`` of a layer writes the row ``W_out[n]`` into the residual stream; it promotes
the tokens with the largest ``W_out[n] · W_U`` and suppresses those with the smallest.
The maths is in pure tensor functions (:func:`top_tokens`, :func:`neuron_token_table`);
:func:`neuron_tokens` reads one model's weights through :mod:`mechit.arch.weights`. Both
models of a pair: ``pair.run(neuron_tokens, ...)`` (neuron indices are shared, so neuron
``n`` is the same neuron before and after tuning).

>>> table = neuron_tokens(model, 0, [3], k=2)
>>> table[["layer", "neuron", "direction", "rank"]].values.tolist()
[[0, 3, 'top', 0], [0, 3, 'top', 1], [0, 3, 'bottom', 0], [0, 3, 'bottom', 1]]
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

import mechit.arch.weights as weight_views
from mechit.errors import InputError

COLUMNS = ["layer", "neuron", "direction", "rank", "word", "score", "token_ids"]


def top_tokens(
    vectors: Float[Tensor, "n d_model"],
    w_u: Float[Tensor, "d_model vocab"],
    m: int,
    *,
    largest: bool = True,
    chunk: int = 256,
) -> tuple[Float[Tensor, "n m"], Int[Tensor, "n m"]]:
    """The ``m`` tokens with the largest (or smallest) ``vectors[i] · W_U``, sorted.

    >>> w_u = torch.tensor([[1., -1., 0.5]])
    >>> top_tokens(torch.tensor([[2.]]), w_u, 2)
    (tensor([[2., 1.]]), tensor([[0, 2]]))
    """
    m = min(m, w_u.shape[1])
    vals, idx = [], []
    for start in range(0, vectors.shape[0], chunk):
        logits = vectors[start : start + chunk] @ w_u  # [c, vocab]
        top = logits.topk(m, dim=-1, largest=largest)
        vals.append(top.values)
        idx.append(top.indices)
    return torch.cat(vals), torch.cat(idx)


def word_key(text: str) -> str:
    """The word a decoded token stands for: surrounding whitespace stripped.

    Tokens that decode to the same key (``" the"``, ``"the"``) are one word. A token that
    is only whitespace keeps a visible form.

    >>> word_key(" the"), word_key("\\n"), word_key("  ")
    ('the', '\\\\n', '␣␣')
    """
    stripped = text.strip()
    return stripped if stripped else text.encode("unicode_escape").decode("ascii").replace(" ", "␣")


def group_ranked_tokens(
    token_ids: Sequence[int], scores: Sequence[float], vocab: Sequence[str], k: int
) -> list[tuple[str, float, list[int]]]:
    """Merge a ranked token list into at most ``k`` words, keeping the first (best) score.

    >>> group_ranked_tokens([5, 1, 2], [3.0, 2.0, 1.0], {5: " cat", 1: "cat", 2: "dog"}, 2)
    [('cat', 3.0, [5, 1]), ('dog', 1.0, [2])]
    """
    words: dict[str, tuple[float, list[int]]] = {}
    for tok, score in zip(token_ids, scores):
        key = word_key(vocab[tok])
        if key in words:
            words[key][1].append(int(tok))
        elif len(words) < k:
            words[key] = (float(score), [int(tok)])
    return [(w, s, toks) for w, (s, toks) in words.items()]


def neuron_token_table(
    w_out: Float[Tensor, "d_mlp d_model"],
    w_u: Float[Tensor, "d_model vocab"],
    vocab: Sequence[str],
    neurons: Sequence[int],
    k: int,
    *,
    layer: int = 0,
) -> pd.DataFrame:
    """Top and bottom ``k`` words of ``w_out[n] · w_u`` for each neuron (pure tensors).

    Tokens decoding to the same word are merged; the word keeps its best score. Columns:
    layer, neuron, direction ("top"/"bottom"), rank (0 = strongest), word, score,
    token_ids.

    >>> w_out = torch.tensor([[1., 0.]])
    >>> w_u = torch.tensor([[2., -1., 0.], [0., 0., 1.]])
    >>> neuron_token_table(w_out, w_u, ["a", "b", "c"], [0], 1)[["direction", "word", "score"]]
      direction word  score
    0       top    a    2.0
    1    bottom    b   -1.0
    """
    rows: list[dict[str, Any]] = []
    vecs = w_out[list(neurons)]
    for direction, largest in (("top", True), ("bottom", False)):
        m = min(4 * k, w_u.shape[1])
        while True:  # widen the search until every neuron has k distinct words
            vals, idx = top_tokens(vecs, w_u, m, largest=largest)
            grouped = [
                group_ranked_tokens(i.tolist(), v.tolist(), vocab, k) for i, v in zip(idx, vals)
            ]
            if m >= w_u.shape[1] or all(len(g) >= k for g in grouped):
                break
            m = min(4 * m, w_u.shape[1])
        for neuron, words in zip(neurons, grouped):
            for rank, (word, score, toks) in enumerate(words):
                rows.append(
                    dict(layer=layer, neuron=int(neuron), direction=direction, rank=rank,
                         word=word, score=score, token_ids=toks)
                )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values(["layer", "neuron", "direction", "rank"], ascending=[True, True, False, True],
                             ignore_index=True)


@functools.lru_cache(maxsize=4)
def vocab_strings(tokenizer: Any) -> tuple[str, ...]:
    """Every token id decoded on its own (cached per tokenizer).

    A token that does not decode to text alone (a byte fragment, shown as U+FFFD) keeps
    its raw token string (``<0xE2>``, ``âĢ``), so distinct fragments stay distinct words.

    >>> len(vocab_strings(model.tokenizer)) == len(model.tokenizer)
    True
    """
    n = len(tokenizer)
    decoded = tokenizer.batch_decode([[i] for i in range(n)])
    raw = tokenizer.convert_ids_to_tokens(list(range(n)))
    return tuple(r if "\ufffd" in d and r is not None else d for d, r in zip(decoded, raw))


def padded_vocab(model: Any, size: int) -> tuple[str, ...]:
    """:func:`vocab_strings` of the model's tokenizer, named ``<padN>`` up to ``size`` rows.

    The unembedding may have more columns than the tokenizer has tokens (padded rows).

    >>> padded_vocab(model, len(model.tokenizer) + 1)[-1] == f"<pad{len(model.tokenizer)}>"
    True
    """
    vocab = vocab_strings(model.tokenizer)
    return vocab + tuple(f"<pad{i}>" for i in range(len(vocab), size))


def neuron_tokens(
    model: Any,
    layer: int | Iterable[int],
    neurons: Sequence[int] | None = None,
    *,
    k: int = 20,
) -> pd.DataFrame:
    """The tokens each MLP neuron of one model promotes (top) and suppresses (bottom), as words.

    Scores are ``W_out[n] · W_U`` (final-norm scale folded into ``W_U``). Tokens decoding
    to the same word (``" the"``, ``"the"``) are merged and the word keeps its best score.
    ``layer`` is one index or several (negative counts from the end); ``neurons=None``
    means every neuron of the layer. Both models of a pair: ``pair.run(neuron_tokens, ...)``
    (a first column ``model``, "base" or "tuned").

    Returns columns layer, neuron, direction ("top"/"bottom"), rank (0 = strongest), word,
    score, token_ids.

    >>> table = neuron_tokens(model, -1, [10, 11], k=3)
    >>> table.groupby(["neuron", "direction"]).size().tolist()
    [3, 3, 3, 3]
    >>> pair.run(neuron_tokens, 0, [10], k=1)[["model", "direction", "rank"]].values.tolist()
    [['base', 'top', 0], ['base', 'bottom', 0], ['tuned', 'top', 0], ['tuned', 'bottom', 0]]
    """
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if neurons is not None and len(neurons) == 0:
        raise InputError("neurons is empty: pass neuron indices, or None for every neuron")
    layers = weight_views.select_indices("layer", layer, int(model.cfg.n_layers), from_end=True)
    w_u = weight_views.unembedding(model)
    vocab = padded_vocab(model, w_u.shape[1])
    frames = []
    for index in layers:
        w_out = weight_views.mlp_out_weights(model, index)
        chosen = range(w_out.shape[0]) if neurons is None else list(neurons)
        bad = [n for n in chosen if not 0 <= n < w_out.shape[0]]
        if bad:
            raise InputError(f"neuron {bad[0]} is out of range: layer {index} has {w_out.shape[0]} neurons")
        frames.append(neuron_token_table(w_out, w_u, vocab, chosen, k, layer=index))
    return pd.concat(frames, ignore_index=True)
