"""Attention heads read as word-word relations (PAPER §2).

:func:`head_pairs` runs one method on every selected head of a model and returns a tidy
frame; the math lives in pure functions of weight-derived tensors (:func:`qk_dim_pairs`,
:func:`qk_pairs`, :func:`ov_pairs`), so the model-reading part is thin.

Methods
-------
``"qk-dims"`` (the paper, §2.2–2.5). Word vectors ``V`` (mean of sub-token input-embedding
rows, leading space); ``H_q = V W_Q``, ``H_k = V W_K`` with the layer's input-norm scale
folded into ``W_Q``/``W_K`` and, under grouped-query attention, the key head the query head
reads. The ``d_head`` dimensions are ranked by energy ``sum_words H_q[:,r]^2 + H_k[:,r]^2``.
Per dimension ``r``: the top ``K`` words by ``|H_q[:,r]|`` (query side) and by ``|H_k[:,r]|``
(key side); a pair (query word a, key word b) is kept when ``H_q[a,r] H_k[b,r] > 0`` (it
raises the attention logit) and ``sim(a,b)`` exceeds both words' thresholds (mean + 1.96
std of their similarity to the 3000 most frequent words; :mod:`mechit.heads.similarity`). A word
paired with itself is not a relation and is skipped. Kept pairs are ranked by similarity
within the dimension. *Head knowledge*: an ordered pair (a, b) kept in more than one
dimension of the head, flagged in the ``knowledge`` column; :func:`head_knowledge` lists
each such pair once.

``"qk"`` (Dar et al. 2022): the ``top_k`` largest entries of ``H_q H_k^T`` (words x words).
``"ov"``: the ``top_k`` largest entries of ``V W_V W_O W_U`` (source word x output token):
reading word a makes the head promote token b. Both are taken blockwise, never building a
words x words or words x vocabulary matrix; no context constraint, self-pairs allowed.

Frame columns: method, layer, head, dim (qk-dims: the d_head index; else <NA>), dim_rank
(position of the dimension in energy order), rank (0 = first within the dimension, or
within the head for qk/ov), word_a, word_b ("a=b": query/key word, or source word/output
token), score (qk-dims: ``H_q[a,r] H_k[b,r]``; qk: ``H_q[a] . H_k[b]``; ov: logit), similarity
(float; NaN for qk/ov), knowledge (bool). word_a (and word_b except for ov) are pandas
categoricals over the word list, compact for the millions of rows of a 20k-word run.

The fast exact path is :mod:`mechit.heads.kernels`; the paper's loops, the reference it
is tested against, are :mod:`mechit.heads.reference`.

>>> pairs = head_pairs(model, layers=[0], heads=[1], similarity="embedding", progress=False)
>>> list(pairs.columns) == COLUMNS, set(pairs["method"])
(True, {'qk-dims'})
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechit import tokens, vocab
from mechit.arch import weights as weight_views
from mechit.errors import InputError
from mechit.heads.kernels import blockwise_topk, compact_rows, qk_dim_pairs_group
from mechit.heads.similarity import (
    EmbeddingSimilarity,
    get_similarity,
    similarity_identity,
    unit_rows,
    word_thresholds,
)
from mechit.runtime import upcast

log = logging.getLogger(__name__)

METHODS = ("qk-dims", "qk", "ov")
COLUMNS = ["method", "layer", "head", "dim", "dim_rank", "rank", "word_a", "word_b", "score", "similarity", "knowledge"]


# ------------------------------------------------------ words and their projections (§2.2)


def words_and_vectors(model, words: Sequence[str] | None) -> tuple[list[str], Float[Tensor, "n d_model"]]:
    """The kept words and their input word vectors (:func:`mechit.tokens.word_vectors`);
    ``None`` -> :func:`mechit.vocab.default_words`. Degenerate words are dropped and counted in the log;
    an empty list, or one with no usable word, is an InputError.

    >>> words, vectors = words_and_vectors(tiny, ["cat", "dog"])
    >>> words, vectors.shape
    (['cat', 'dog'], torch.Size([2, 64]))
    """
    words = vocab.default_words(model) if words is None else list(words)
    if not words:
        raise InputError("the word list is empty: give at least one word (or words=None for the default list)")
    found = tokens.word_vectors(model, words, side="input")
    if found.dropped:
        log.info("head_pairs: dropped %d of %d words with degenerate tokenisation (e.g. %s)",
                 len(found.dropped), len(words), ", ".join(map(repr, list(found.dropped)[:5])))
    if not found.words:
        raise InputError(f"all {len(words)} words have degenerate tokenisation (empty or only special tokens) "
                         "for this model's tokenizer: check the word list")
    return list(found.words), upcast(found.vectors)


def head_projections(
    vectors: Float[Tensor, "words d_model"], w: Float[Tensor, "heads d_model d_head"]
) -> Float[Tensor, "words heads d_head"]:
    """``vectors @ w[h]`` for every head in one matrix product (bitwise equal to the per-head
    products on CPU; one large product is faster than one per head).

    >>> head_projections(torch.ones(2, 3), torch.ones(4, 3, 5)).shape
    torch.Size([2, 4, 5])
    """
    stacked = rearrange(w, "h d e -> d (h e)")  # (d_model, heads*d_head)
    return rearrange(vectors @ stacked, "n (h e) -> n h e", h=w.shape[0])


# ----------------------------------------------------- the per-dimension method (§2.3-2.5)


def energy_order(h_q: Float[Tensor, "words d_head"], h_k: Float[Tensor, "words d_head"]) -> Tensor:
    """The d_head dimensions sorted by energy ``sum_words (H_q^2 + H_k^2)``, highest first
    (ties by index).

    >>> energy_order(torch.tensor([[1.0, 3.0], [0.0, 1.0]]), torch.zeros(2, 2))
    tensor([1, 0])
    """
    q, k = upcast(h_q.detach()).cpu().numpy(), upcast(h_k.detach()).cpu().numpy()
    energy = np.square(q).sum(0) + np.square(k).sum(0)  # numpy: single-threaded, cheap
    return torch.from_numpy(np.argsort(-energy, kind="stable"))


def qk_dim_pairs(
    h_q: Float[Tensor, "words d_head"],
    h_k: Float[Tensor, "words d_head"],
    unit: Float[Tensor, "words dim"],
    thresholds: Float[Tensor, "words"],
    top_k: int = 100,
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """The paper's per-dimension pairs of one head. For each dimension ``r`` in energy order
    (:func:`energy_order`): the top ``K`` query words by ``|H_q[:, r]|`` and key words by
    ``|H_k[:, r]|``; a pair (a, b) of them is kept when ``H_q[a, r] H_k[b, r] > 0`` (it raises
    the attention logit), ``a != b``, and ``sim(a, b)`` exceeds both words' thresholds; kept
    pairs are ranked by similarity. Computed by the fast exact path
    (:func:`mechit.heads.kernels.qk_dim_pairs_group`).

    ``unit``: the words' similarity vectors from :func:`mechit.heads.similarity.unit_rows` (their dot
    products are exact cosines; an exact float16 copy, ``unit.half()``, gathers faster);
    ``thresholds``: each word's relatedness threshold
    (:func:`mechit.heads.similarity.word_thresholds`). Returns equal-length arrays ``dim, dim_rank,
    rank, a, b, score, similarity`` (``a``/``b`` are word indices) ordered by dim_rank, then rank
    (similarity descending, ties in top-k order), and ``knowledge`` (the pair is kept in more
    than one dimension). Equals :func:`mechit.heads.reference.qk_dim_pairs_reference`. ``threads`` (default
    ``torch.get_num_threads()``) Python threads share the work: the two sides' top-k, then
    runs of dimensions; each runs torch on one thread, and the result does not depend on them.
    Several query heads sharing a key head: :func:`mechit.heads.kernels.qk_dim_pairs_group`.

    >>> hq = torch.tensor([[2.0], [1.0], [0.1]]); hk = torch.tensor([[0.1], [1.0], [2.0]])
    >>> unit = torch.eye(3); unit[2] = unit[0]                 # words 0 and 2 related
    >>> out = qk_dim_pairs(hq, hk, unit, torch.zeros(3), top_k=2)
    >>> out["a"].tolist(), out["b"].tolist()
    ([0], [2])
    """
    return qk_dim_pairs_group(h_q[:, None], h_k, unit, thresholds, top_k, threads)[0]


def head_knowledge(pairs: pd.DataFrame) -> pd.DataFrame:
    """Each head's knowledge (PAPER §2.5): one row per (layer, head, word_a, word_b) kept in
    more than one dimension, with ``n_dims`` and the best ``similarity``.

    >>> df = pd.DataFrame({"layer": [0, 0, 0], "head": [1, 1, 1], "dim": [3, 5, 3],
    ...     "word_a": ["cat", "cat", "sun"], "word_b": ["dog", "dog", "moon"], "similarity": [.5, .6, .7]})
    >>> head_knowledge(df).to_dict("records")
    [{'layer': 0, 'head': 1, 'word_a': 'cat', 'word_b': 'dog', 'n_dims': 2, 'similarity': 0.6}]
    """
    keys = ["layer", "head", "word_a", "word_b"]
    if pairs.empty:
        return pd.DataFrame(columns=keys + ["n_dims", "similarity"])
    grouped = pairs.groupby(keys, sort=True, observed=True).agg(n_dims=("dim", "nunique"), similarity=("similarity", "max"))
    return grouped[grouped["n_dims"] > 1].reset_index()


# ------------------------------------------------------------------ whole-matrix baselines


def qk_pairs(h_q: Float[Tensor, "words d_head"], h_k: Float[Tensor, "words d_head"], top_k: int = 100):
    """Top word pairs of the head's whole bilinear form ``H_q H_k^T`` (query word, key word).

    >>> qk_pairs(torch.tensor([[1.0], [-1.0]]), torch.tensor([[2.0], [-3.0]]), 1)
    (tensor([3.]), tensor([1]), tensor([1]))
    """
    return blockwise_topk(h_q, h_k.T, top_k)


def ov_pairs(
    h_v: Float[Tensor, "words d_head"], w_o: Float[Tensor, "d_head d_model"],
    w_u: Float[Tensor, "d_model vocab"], top_k: int = 100,
):
    """Top (source word, output token) pairs of ``H_v W_O W_U`` with ``H_v = V W_V``.

    >>> ov_pairs(torch.eye(2), torch.eye(2), torch.tensor([[1.0, 0.0], [0.0, 5.0]]), 1)
    (tensor([5.]), tensor([1]), tensor([1]))
    """
    return blockwise_topk(h_v, w_o @ w_u, top_k)


# -------------------------------------------------------- every head of a model, one frame


def _frame(
    method: str, parts: list[tuple[int, int, dict]], words: pd.Index, token_names: list[str] | None
) -> pd.DataFrame:
    """All heads' rows in one frame, built once from the concatenated arrays; words are
    categoricals over the word list (compact for millions of rows). ``token_names`` (ov):
    ``b`` indexes this list of output tokens instead of the word list."""
    sizes = [len(out["a"]) for _, _, out in parts]
    n = sum(sizes)

    def column(key, dtype, fill=None):
        arrays = [out.get(key, np.full(len(out["a"]), fill)) for _, _, out in parts]
        return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype=dtype)

    def optional_int(key):  # qk-dims only; <NA> for qk/ov
        return pd.arrays.IntegerArray(column(key, np.int64, 0), np.full(n, method != "qk-dims"))

    b = column("b", np.int64)
    word_b = (pd.Categorical.from_codes(b, categories=words) if token_names is None
              else np.asarray(token_names, dtype=object)[b])
    return pd.DataFrame({
        "method": method,
        "layer": np.repeat(np.array([layer for layer, _, _ in parts], dtype=np.int64), sizes),
        "head": np.repeat(np.array([head for _, head, _ in parts], dtype=np.int64), sizes),
        "dim": optional_int("dim"), "dim_rank": optional_int("dim_rank"), "rank": column("rank", np.int64),
        "word_a": pd.Categorical.from_codes(column("a", np.int64), categories=words), "word_b": word_b,
        "score": column("score", np.float32), "similarity": column("similarity", np.float64, np.nan),
        "knowledge": column("knowledge", bool, False),
    }, index=pd.RangeIndex(n))


def _whole(values: Tensor, rows: Tensor, cols: Tensor) -> dict:
    """One head's qk/ov pairs as numpy columns: the results leave the device here, through ``.cpu()``."""
    return {"rank": np.arange(len(values)), "a": rows.cpu().numpy(), "b": cols.cpu().numpy(), "score": values.cpu().numpy()}


def head_pairs(
    model,
    words: Sequence[str] | None = None,
    *,
    method: str = "qk-dims",
    layers: int | Iterable[int] | None = None,
    heads: int | Iterable[int] | None = None,
    top_k: int = 100,
    similarity=None,
    n_frequent: int = 3000,
    progress: bool = True,
) -> pd.DataFrame:
    """Word pairs of each selected attention head (see the module docstring for the methods
    and columns).

    Parameters: ``words`` (default :func:`mechit.vocab.default_words`; degenerate words are
    dropped and counted in the log), ``method`` ("qk-dims", "qk", "ov"), ``layers``/``heads``
    (int or iterable; default all), ``top_k`` (K words per dimension and side for qk-dims,
    pairs per head for qk/ov), ``similarity`` (qk-dims only: a :mod:`mechit.heads.similarity`
    spec or source; default "minilm" if installed, else "embedding"), ``n_frequent`` (the
    first n words of the list set the thresholds). qk-dims takes the query heads that read
    one KV head together (:func:`mechit.heads.kernels.qk_dim_pairs_group`: the key side's
    work once) and shares the work among ``torch.get_num_threads()`` Python threads; the
    pairs do not depend on the thread count.

    >>> pairs = head_pairs(tiny, ["translate", "French", "cat", "dog"], method="qk", layers=0, heads=0,
    ...                    top_k=2, progress=False)
    >>> pairs[["layer", "head", "rank"]].values.tolist()
    [[0, 0, 0], [0, 0, 1]]
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if top_k < 1:
        raise InputError(f"top_k must be at least 1, got {top_k}")
    cfg = model.cfg
    layer_list = weight_views.select_indices("layer", layers, cfg.n_layers)
    head_list = weight_views.select_indices("head", heads, cfg.n_heads)
    source = get_similarity(similarity, model) if method == "qk-dims" else None
    kept, vectors = words_and_vectors(model, words)
    categories = pd.Index(kept)
    if source is not None:
        same_vectors = isinstance(source, EmbeddingSimilarity) and source.model is model
        unit = unit_rows(vectors if same_vectors else source.vectors(kept))
        thresholds = word_thresholds(unit, n_frequent=n_frequent)
    if method == "ov":
        w_u = weight_views.unembedding(model)
    parts, token_names = [], []
    bar = tqdm(total=len(layer_list) * len(head_list), desc=f"head pairs ({method})", unit="head",
               disable=not progress)
    kv_heads = {head: weight_views.kv_head(model, head) for head in head_list}
    groups: dict[int, list[int]] = {}  # KV head -> slots of the query heads reading it
    for slot, head in enumerate(head_list):
        groups.setdefault(kv_heads[head], []).append(slot)
    if method == "qk-dims":
        unit = compact_rows(unit)
    with torch.no_grad():
        for layer in layer_list:
            if method == "ov":
                w_a, w_o = weight_views.ov_weights(model, layer)  # (H, d, dh), (H, dh, d)
                h_a = head_projections(vectors, w_a[head_list])  # (words, heads, d_head)
            else:
                w_a, w_b = weight_views.qk_weights(model, layer)  # K repeated per query head
                h_a = head_projections(vectors, w_a[head_list])  # (words, heads, d_head)
                # one key projection per KV head (GQA): query heads sharing it reuse it
                first = [head_list[slots[0]] for slots in groups.values()]
                h_b = dict(zip(groups, head_projections(vectors, w_b[first]).unbind(1)))
            outs = {}
            if method == "qk-dims":  # the query heads of one KV head together (their key side once)
                for kv, slots in groups.items():
                    adjacent = slots == list(range(slots[0], slots[-1] + 1))  # a view, not a copy
                    h_group = h_a[:, slots[0] : slots[-1] + 1] if adjacent else h_a[:, slots]
                    found = qk_dim_pairs_group(h_group, h_b[kv], unit, thresholds, top_k)
                    outs.update(zip(slots, found))
                    bar.update(len(slots))
            for slot, head in enumerate(head_list):
                h = h_a[:, slot]  # (words, d_head), a strided view
                if method == "qk":
                    outs[slot] = _whole(*qk_pairs(h, h_b[kv_heads[head]], top_k))
                elif method == "ov":
                    out = outs[slot] = _whole(*ov_pairs(h, w_o[head], w_u, top_k))
                    token_ids = out["b"].tolist()
                    out["b"] = np.arange(len(token_names), len(token_names) + len(token_ids))
                    token_names += [model.tokenizer.decode([i]) for i in token_ids]
                if method != "qk-dims":
                    bar.update()
                parts.append((layer, head, outs[slot]))
    bar.close()
    result = _frame(method, parts, categories, token_names if method == "ov" else None)
    result.attrs.update(method=method, n_words=len(kept), top_k=top_k,
                        similarity=getattr(source, "name", None), similarity_id=similarity_identity(source))
    return result[COLUMNS]
