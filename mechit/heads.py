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
std of their similarity to the 3000 most frequent words; :mod:`mechit.similarity`). A word
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

>>> import mechit                                              # doctest: +SKIP
>>> model = mechit.load_model("organism-tuned")                # doctest: +SKIP
>>> pairs = mechit.head_pairs(model, layers=[0], heads=[1])   # doctest: +SKIP
>>> pairs[["dim", "rank", "word_a", "word_b", "similarity"]].head(3)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from mechit.errors import InputError
from mechit.threads import single_thread

log = logging.getLogger(__name__)

METHODS = ("qk-dims", "qk", "ov")
COLUMNS = ["method", "layer", "head", "dim", "dim_rank", "rank", "word_a", "word_b", "score", "similarity", "knowledge"]


# ----------------------------------------------------------------------------- pure math


def energy_order(h_q: Float[Tensor, "words d_head"], h_k: Float[Tensor, "words d_head"]) -> Tensor:
    """The d_head dimensions sorted by energy ``sum_words (H_q^2 + H_k^2)``, highest first
    (ties by index).

    >>> energy_order(torch.tensor([[1.0, 3.0], [0.0, 1.0]]), torch.zeros(2, 2))
    tensor([1, 0])
    """
    q, k = h_q.detach().float().numpy(), h_k.detach().float().numpy()
    energy = np.square(q).sum(0) + np.square(k).sum(0)  # numpy: single-threaded, cheap
    return torch.from_numpy(np.argsort(-energy, kind="stable"))


def _sorted(keys: np.ndarray) -> np.ndarray:
    """Non-negative int64 keys in ascending order (torch's radix sort beats numpy's from about
    20,000 keys)."""
    return np.sort(keys) if len(keys) < 20_000 else torch.sort(torch.from_numpy(keys)).values.numpy()


def _candidates(h: Float[Tensor, "words d_head"], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per dimension (raw index order) the top-k words by |h| and their values: (d_head, k)
    each, the same words in the same order as ``torch.topk(h[:, r].abs(), k)``.

    One pass bounds each dimension's k-th largest |h| from below (the k-th largest of at
    least 4k block maxima: k distinct words reach it), one more keeps the words at or above
    the bound (about 1.3 k per dimension on real heads), and one integer sort ranks them by
    (dimension, |h| descending). Where |h| ties inside the top k or at its edge, or is NaN,
    torch.topk's order is its own: those dimensions call it.
    """
    x = h.numpy()
    a = np.abs(x, order="C")  # (words, d_head)
    n, d = a.shape
    bits = (n - 1).bit_length() + 1  # the word and the sign of h
    if d.bit_length() + 31 + bits > 63:
        raise InputError(f"{n} words x {d} head dimensions do not fit the 63-bit sort key: use fewer words")
    size = max(1, n // (4 * k))
    blocks = n // size
    block_max = torch.from_numpy(a[: blocks * size]).view(blocks, size, d).amax(1).numpy()  # (blocks, d_head)
    bound = np.partition(block_max, blocks - k, axis=0)[blocks - k]  # (d_head,)
    flat = np.flatnonzero(a >= bound)  # (candidates,) word-major
    words, dims = flat // d, flat % d
    value = x[words, dims].view(np.int32).astype(np.int64)  # float bits: sign, then |h| (ordered as integers)
    key = np.empty(len(flat) + 1, dtype=np.int64)  # (dimension, |h| descending, word, sign); one past the end
    key[:-1] = (dims << 31 + bits) | ((0x7FFFFFFF - (value & 0x7FFFFFFF)) << bits) | (words << 1) | (value < 0)
    key[-1] = d << 31 + bits
    key = _sorted(key)
    starts = np.searchsorted(key, np.arange(d + 1) << 31 + bits)  # (d_head + 1,)
    take = np.minimum(starts[:-1, None] + np.arange(k), len(flat))  # (d_head, k); past the end only where NaN hid words
    top = key[take]
    magnitude = (top >> bits) & 0x7FFFFFFF  # 0x7FFFFFFF - |h| bits
    tied = (magnitude[:, 1:] == magnitude[:, :-1]).any(1)
    tied |= np.isnan(block_max).any(0) | np.isnan(a[blocks * size :]).any(0)
    more = np.diff(starts) > k
    tied[more] |= (key[starts[:-1][more] + k] >> bits) & 0x7FFFFFFF == magnitude[more, -1]
    idx = (top >> 1) & ((1 << bits - 1) - 1)
    values = ((0x7FFFFFFF - magnitude) | ((top & 1) << 31)).astype(np.uint32).view(np.float32)
    for r in np.flatnonzero(tied).tolist():
        idx[r] = torch.topk(h[:, r].abs(), k).indices.numpy()
        values[r] = x[idx[r], r]
    return idx, values


def _f32_below(thresholds: np.ndarray) -> np.ndarray:
    """float64 thresholds rounded down to float32: for a float32 s, ``s > t`` iff ``s > t32``."""
    t32 = thresholds.astype(np.float32)
    over = t32.astype(np.float64) > thresholds
    t32[over] = np.nextafter(t32[over], np.float32(-np.inf))
    return t32


def _descending(s: np.ndarray) -> np.ndarray:
    """int64 keys in [0, 2^32] that sort float32 values in descending order (-0.0 = 0.0)."""
    bits = (s + np.float32(0)).view(np.int32).astype(np.int64)
    return (1 << 31) - np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def _from_descending(keys: np.ndarray) -> np.ndarray:
    """The float32 values back from :func:`_descending` keys."""
    bits = (1 << 31) - keys
    return np.where(bits < 0, -bits | (1 << 31), bits).astype(np.uint32).view(np.float32)


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _in_threads(tasks: list, threads: int) -> list:
    """The callables' results, run on up to ``threads`` Python threads (the first task on this
    one); call inside :func:`mechit.threads.single_thread`. torch and numpy release the GIL
    in their kernels, so with a free core the tasks overlap. Each pool thread sets torch (and
    so MKL) to one thread of its own: left at the default, MKL in a new thread starts its own
    OpenMP team and a small product took 20x longer."""
    if threads < 2 or len(tasks) < 2:
        return [task() for task in tasks]
    pool = _POOLS.get(threads - 1)
    if pool is None:
        pool = _POOLS[threads - 1] = ThreadPoolExecutor(
            threads - 1, thread_name_prefix="mechit-heads", initializer=torch.set_num_threads, initargs=(1,))
    futures = [pool.submit(task) for task in tasks[1:]]
    first = tasks[0]()
    return [first] + [future.result() for future in futures]


def _run_pairs(
    q_idx: np.ndarray, q_val: np.ndarray, k_idx: np.ndarray, k_val: np.ndarray, unit: Tensor, thr32: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """The kept pairs of a run of dimensions from their candidates (n_dims, K) in top-k order:
    ``(r, a, b, score, similarity)`` with r the position in the run, ordered by r, then
    similarity descending, ties in top-k order (as the reference's loops).

    Per dimension the candidates are put positives first, then negatives (zeros last): only
    the two same-sign blocks can raise the logit, so only they are multiplied, from rows
    gathered into buffers that stay in cache; one mask then applies both thresholds."""
    n_dims, k = q_idx.shape
    q_sign = np.where(q_val > 0, 0, np.where(q_val < 0, 1, 2)).astype(np.int8)
    k_sign = np.where(k_val > 0, 0, np.where(k_val < 0, 1, 2)).astype(np.int8)
    q_perm = np.argsort(q_sign, axis=1, kind="stable")  # (n_dims, k): positives, negatives, zeros
    k_perm = np.argsort(k_sign, axis=1, kind="stable")
    q_words, k_words = np.take_along_axis(q_idx, q_perm, 1), np.take_along_axis(k_idx, k_perm, 1)
    q_ends = np.stack([(q_sign == 0).sum(1), (q_sign < 2).sum(1)], 1).tolist()  # where positives, negatives end
    k_ends = np.stack([(k_sign == 0).sum(1), (k_sign < 2).sum(1)], 1).tolist()
    sims = torch.full((n_dims, k, k), -math.inf)  # -inf where the signs differ
    rows = unit.new_empty(2 * k, unit.shape[1])  # both sides' gathered rows
    u_q, u_k = rows[:k], rows[k:]
    both = torch.from_numpy(np.hstack([q_words, k_words]))  # (n_dims, 2k)
    for r, words, (a, a2), (b, b2) in zip(range(n_dims), both, q_ends, k_ends):
        torch.index_select(unit, 0, words, out=rows)
        if a and b:
            torch.mm(u_q[:a], u_k[:b].T, out=sims[r, :a, :b])
        if a2 > a and b2 > b:
            torch.mm(u_q[a:a2], u_k[b:b2].T, out=sims[r, a:a2, b:b2])
    sims = sims.numpy()  # exact cosines (GRID)
    flat = np.flatnonzero(sims > np.maximum(thr32[q_words][:, :, None], thr32[k_words][:, None, :]))
    s, q_at, j = sims.reshape(-1)[flat], flat // k, flat % k  # q_at = r * k + (row in sign order)
    r = q_at // k
    i, j = q_perm.reshape(-1)[q_at], k_perm.reshape(-1)[r * k + j]  # positions in top-k order
    bits = max(1, (k - 1).bit_length())
    if (n_dims - 1).bit_length() + 33 + 2 * bits <= 63:
        key = _sorted((((r << 33) | _descending(s)) << 2 * bits) | (i << bits) | j)
        r, i, j = key >> 33 + 2 * bits, (key >> bits) & ((1 << bits) - 1), key & ((1 << bits) - 1)
        s = _from_descending((key >> 2 * bits) & ((1 << 33) - 1))
    else:
        sort = np.lexsort((j, i, -s.astype(np.float64), r))
        r, i, j, s = r[sort], i[sort], j[sort], s[sort]
    q_at, k_at = r * k + i, r * k + j
    a, b = q_idx.reshape(-1)[q_at], k_idx.reshape(-1)[k_at]
    score = q_val.reshape(-1)[q_at] * k_val.reshape(-1)[k_at]
    ok = (a != b) & (score > 0)
    return r[ok], a[ok], b[ok], score[ok], s[ok].astype(np.float64)


def _dim_pairs(
    order: np.ndarray, q: tuple[np.ndarray, np.ndarray], kk: tuple[np.ndarray, np.ndarray],
    unit: Tensor, thr32: np.ndarray, n_words: int, threads: int = 1,
) -> dict[str, np.ndarray]:
    """The K x K step of :func:`qk_dim_pairs` from the candidates of both sides (raw dimension
    order); ``order``: dimensions in energy order. ``threads`` Python threads take contiguous
    runs of dimensions with about equal numbers of same-sign pairs (:func:`_run_pairs`)."""
    q_idx, q_val = q[0][order], q[1][order]
    k_idx, k_val = kk[0][order], kk[1][order]
    d_head = len(order)
    work = np.cumsum((q_val > 0).sum(1) * (k_val > 0).sum(1) + (q_val < 0).sum(1) * (k_val < 0).sum(1))
    cuts = np.r_[0, np.searchsorted(work, work[-1] * np.arange(1, threads) / threads), d_head].tolist()
    runs = _in_threads([
        lambda lo=lo, hi=hi: _run_pairs(q_idx[lo:hi], q_val[lo:hi], k_idx[lo:hi], k_val[lo:hi], unit, thr32)
        for lo, hi in zip(cuts, cuts[1:])
    ], threads)
    r = np.concatenate([run[0] + lo for run, lo in zip(runs, cuts)])
    a, b, score, s = (np.concatenate([run[c] for run in runs]) for c in range(1, 5))
    return {
        "dim": order[r], "dim_rank": r, "rank": np.arange(len(r)) - np.searchsorted(r, np.arange(d_head))[r],
        "a": a, "b": b, "score": score, "similarity": s,
        "knowledge": pd.Series(a * n_words + b).duplicated(keep=False).to_numpy(),
    }


def qk_dim_pairs(
    h_q: Float[Tensor, "words d_head"],
    h_k: Float[Tensor, "words d_head"],
    unit: Float[Tensor, "words dim"],
    thresholds: Float[Tensor, "words"],
    top_k: int = 100,
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """The paper's per-dimension pairs of one head: one top-k per side over all dimensions
    (a bound, a mask and an integer sort; :func:`_candidates`); per dimension the
    similarities of the two same-sign candidate blocks (opposite signs cannot raise the
    logit), one small product each; then one vectorised threshold mask, the same-word and
    sign checks on the kept pairs, and one integer sort.

    ``unit``: the words' similarity vectors from :func:`mechit.similarity.unit_rows` (their dot
    products are exact cosines); ``thresholds``: each word's relatedness threshold
    (:func:`mechit.similarity.word_thresholds`). Returns equal-length arrays ``dim, dim_rank,
    rank, a, b, score, similarity`` (``a``/``b`` are word indices) ordered by dim_rank, then rank
    (similarity descending, ties in top-k order), and ``knowledge`` (the pair is kept in more
    than one dimension). Equals :func:`qk_dim_pairs_reference`. ``threads`` (default
    ``torch.get_num_threads()``) Python threads share the work: the two sides' top-k, then
    runs of dimensions; each runs torch on one thread, and the result does not depend on them.

    >>> hq = torch.tensor([[2.0], [1.0], [0.1]]); hk = torch.tensor([[0.1], [1.0], [2.0]])
    >>> unit = torch.eye(3); unit[2] = unit[0]                 # words 0 and 2 related
    >>> out = qk_dim_pairs(hq, hk, unit, torch.zeros(3), top_k=2)
    >>> out["a"].tolist(), out["b"].tolist()
    ([0], [2])
    """
    h_q, h_k = h_q.detach().float(), h_k.detach().float()
    k = min(top_k, h_q.shape[0])
    threads = torch.get_num_threads() if threads is None else threads
    with single_thread():
        (order, q), (kk, thr32) = _in_threads([
            lambda: (energy_order(h_q, h_k).numpy(), _candidates(h_q, k)),
            lambda: (_candidates(h_k, k), _f32_below(thresholds.double().numpy())),
        ], threads)
        return _dim_pairs(order, q, kk, unit.float().contiguous(), thr32, h_q.shape[0], threads)


def qk_dim_pairs_reference(
    h_q: Float[Tensor, "words d_head"],
    h_k: Float[Tensor, "words d_head"],
    unit: Float[Tensor, "words dim"],
    thresholds: Float[Tensor, "words"],
    top_k: int = 100,
) -> dict[str, np.ndarray]:
    """:func:`qk_dim_pairs` written as the paper's code did it: Python loops over dimensions
    and over the K x K candidate pairs, one similarity (dot product) per pair. Slow; kept as
    the readable statement of the method, for tests and ``benchmarks/heads.py``.

    >>> hq = torch.tensor([[2.0], [1.0], [0.1]]); hk = torch.tensor([[0.1], [1.0], [2.0]])
    >>> unit = torch.eye(3); unit[2] = unit[0]
    >>> qk_dim_pairs_reference(hq, hk, unit, torch.zeros(3), top_k=2)["b"].tolist()
    [2]
    """
    k = min(top_k, h_q.shape[0])
    hq, hk = h_q.numpy(), h_k.numpy()
    vectors = unit.float().numpy()
    thr = thresholds.double().numpy()

    def similarity(a: int, b: int) -> float:
        return float(vectors[a] @ vectors[b])

    rows = []
    for dim_rank, r in enumerate(energy_order(h_q, h_k).tolist()):
        top_q = torch.topk(h_q[:, r].abs(), k).indices.tolist()
        top_k_words = torch.topk(h_k[:, r].abs(), k).indices.tolist()
        kept = []
        for a in top_q:
            for b in top_k_words:
                score = hq[a, r] * hk[b, r]
                if a == b or not score > 0:
                    continue
                sim = similarity(a, b)
                if sim > thr[a] and sim > thr[b]:
                    kept.append((sim, a, b, score))
        kept.sort(key=lambda t: -t[0])
        rows += [(r, dim_rank, rank, a, b, score, sim) for rank, (sim, a, b, score) in enumerate(kept)]
    names = ["dim", "dim_rank", "rank", "a", "b", "score", "similarity"]
    dtypes = [np.int64] * 5 + [np.float32, np.float64]
    out = {n: np.array([row[i] for row in rows], dtype=t) for i, (n, t) in enumerate(zip(names, dtypes))}
    dims_of_pair: dict[tuple[int, int], int] = {}
    for a, b in zip(out["a"].tolist(), out["b"].tolist()):
        dims_of_pair[a, b] = dims_of_pair.get((a, b), 0) + 1
    out["knowledge"] = np.array([dims_of_pair[a, b] > 1 for a, b in zip(out["a"].tolist(), out["b"].tolist())], dtype=bool)
    return out


def blockwise_topk(
    left: Float[Tensor, "n r"], right: Float[Tensor, "r m"], k: int, *, block_entries: int = 1 << 24
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` largest entries of ``left @ right`` without building the n x m matrix: row
    blocks of at most ``block_entries`` entries, a running top-k merged per block.

    Returns ``(values, rows, cols)`` sorted by value descending (ties by row, then column).

    >>> left = torch.tensor([[1.0], [2.0]]); right = torch.tensor([[1.0, -1.0, 3.0]])
    >>> values, rows, cols = blockwise_topk(left, right, 2, block_entries=3)
    >>> values.tolist(), rows.tolist(), cols.tolist()
    ([6.0, 3.0], [1, 0], [2, 2])
    """
    n, m = left.shape[0], right.shape[1]
    k = min(k, n * m)
    block = max(1, block_entries // max(m, 1))
    best_v = torch.empty(0, dtype=torch.result_type(left, right))
    best_i = torch.empty(0, dtype=torch.long)
    for start in range(0, n, block):
        scores = (left[start : start + block] @ right).flatten()  # (b*m,)
        v, i = scores.topk(min(k, scores.numel()))
        best_v, pick = torch.cat([best_v, v]).topk(min(k, best_v.numel() + v.numel()))
        best_i = torch.cat([best_i, i + start * m])[pick]
    sort = np.lexsort((best_i.numpy(), -best_v.double().numpy()))
    best_v, best_i = best_v[sort], best_i[sort]
    return best_v, best_i // m, best_i % m


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


# ----------------------------------------------------------------------------- model reading


def default_words(model) -> list[str]:
    """The default word list: the organism's vocabulary for the embedded organism (loaded as
    "organism-base"/"organism-tuned" or from its weights folder), else
    :func:`mechit.wordlists.frequent_words` (20,000 frequent English words).

    >>> len(default_words(model))                     # doctest: +SKIP
    20000
    """
    from mechit import models
    from mechit.wordlists import frequent_words

    weights = models.organism_dir("base").parent.resolve()
    source = Path(str(getattr(model.tokenizer, "name_or_path", "") or ".")).resolve()
    if getattr(model, "mechit_spec", None) in models.ORGANISM_SPECS or weights in source.parents:
        from mechit.organism import vocabulary

        return vocabulary()
    return frequent_words(20000)


def select_indices(name: str, chosen: int | Iterable[int] | None, n: int) -> list[int]:
    """Check layer or head indices against their count: None -> all, an int -> [int].

    >>> select_indices("layer", 2, 4), select_indices("head", None, 3)
    ([2], [0, 1, 2])
    >>> select_indices("layer", [4], 4)
    Traceback (most recent call last):
    mechit.errors.InputError: layer [4] out of range: the model has 4 layers (0..3)
    """
    if chosen is None:
        return list(range(n))
    chosen = [chosen] if isinstance(chosen, int) else list(chosen)
    bad = [c for c in chosen if not isinstance(c, (int, np.integer)) or not 0 <= c < n]
    if bad:
        raise InputError(f"{name} {bad} out of range: the model has {n} {name}s (0..{n - 1})")
    return [int(c) for c in chosen]


def words_and_vectors(model, words: Sequence[str] | None) -> tuple[list[str], Float[Tensor, "n d_model"]]:
    """The kept words and their input word vectors (:func:`mechit.tokens.word_vectors`);
    ``None`` -> :func:`default_words`. Degenerate words are dropped and counted in the log;
    an empty list, or one with no usable word, is an InputError.

    >>> words, vectors = words_and_vectors(model, ["cat", "dog"])   # doctest: +SKIP
    """
    from mechit.tokens import word_vectors

    words = default_words(model) if words is None else list(words)
    if not words:
        raise InputError("the word list is empty: give at least one word (or words=None for the default list)")
    found = word_vectors(model, words, side="input")
    if found.dropped:
        log.info("head_pairs: dropped %d of %d words with degenerate tokenisation (e.g. %s)",
                 len(found.dropped), len(words), ", ".join(map(repr, list(found.dropped)[:5])))
    if not found.words:
        raise InputError(f"all {len(words)} words have degenerate tokenisation (empty or only special tokens) "
                         "for this model's tokenizer: check the word list")
    return list(found.words), found.vectors.float()


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
    return {"rank": np.arange(len(values)), "a": rows.numpy(), "b": cols.numpy(), "score": values.numpy()}


def head_projections(
    vectors: Float[Tensor, "words d_model"], w: Float[Tensor, "heads d_model d_head"]
) -> Float[Tensor, "words heads d_head"]:
    """``vectors @ w[h]`` for every head in one matrix product (bitwise equal to the per-head
    products on CPU; one large product is faster than one per head).

    >>> head_projections(torch.ones(2, 3), torch.ones(4, 3, 5)).shape
    torch.Size([2, 4, 5])
    """
    heads, d_model, d_head = w.shape
    return (vectors @ w.permute(1, 0, 2).reshape(d_model, heads * d_head)).view(-1, heads, d_head)


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

    Parameters: ``words`` (default :func:`default_words`; degenerate words are dropped and
    counted in the log), ``method`` ("qk-dims", "qk", "ov"), ``layers``/``heads`` (int or
    iterable; default all), ``top_k`` (K words per dimension and side for qk-dims, pairs per
    head for qk/ov), ``similarity`` (qk-dims only: a :mod:`mechit.similarity` spec or source;
    default "minilm" if installed, else "embedding"), ``n_frequent`` (the first n words of the list set the thresholds).
    qk-dims shares each head's work among ``torch.get_num_threads()`` Python threads
    (:func:`qk_dim_pairs`); the pairs do not depend on the thread count.

    >>> pairs = head_pairs(model, ["translate", "French", "cat", "dog"], layers=0, top_k=2)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from mechit import models
    from mechit.similarity import EmbeddingSimilarity, get_similarity, unit_rows, word_thresholds

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if top_k < 1:
        raise InputError(f"top_k must be at least 1, got {top_k}")
    cfg = model.cfg
    layer_list = select_indices("layer", layers, cfg.n_layers)
    head_list = select_indices("head", heads, cfg.n_heads)
    source = get_similarity(similarity, model) if method == "qk-dims" else None
    kept, vectors = words_and_vectors(model, words)
    categories = pd.Index(kept)
    if source is not None:
        same_vectors = isinstance(source, EmbeddingSimilarity) and source.model is model
        unit = unit_rows(vectors if same_vectors else source.vectors(kept))
        thresholds = word_thresholds(unit, n_frequent=n_frequent)
    if method == "ov":
        w_u = models.unembedding(model)
    parts, token_names = [], []
    bar = tqdm(total=len(layer_list) * len(head_list), desc=f"head pairs ({method})", unit="head",
               disable=not progress)
    kv_heads = {head: models.kv_head(model, head) for head in head_list}
    if method == "qk-dims":
        k, threads = min(top_k, len(kept)), torch.get_num_threads()  # Python threads share each head's work
        thr32 = _f32_below(thresholds.double().numpy())
        unit = unit.float().contiguous()
    with torch.no_grad():
        for layer in layer_list:
            if method == "ov":
                w_a, w_o = models.ov_weights(model, layer)  # (H, d, dh), (H, dh, d)
                h_a = head_projections(vectors, w_a[head_list])  # (words, heads, d_head)
            else:
                w_a, w_b = models.qk_weights(model, layer)  # K repeated per query head
                h_a = head_projections(vectors, w_a[head_list])  # (words, heads, d_head)
                # one key projection per KV head (GQA): query heads sharing it reuse it
                first = {kv: head for head, kv in reversed(kv_heads.items())}
                h_b = dict(zip(first, head_projections(vectors, w_b[list(first.values())]).unbind(1)))
            if method == "qk-dims":
                with single_thread():  # key candidates once per KV head
                    tasks = [lambda h=h: _candidates(h, k) for h in h_b.values()]
                    key_side = dict(zip(h_b, _in_threads(tasks, threads)))
            for slot, head in enumerate(head_list):
                h = h_a[:, slot]  # (words, d_head), a strided view
                if method == "qk-dims":
                    kv = kv_heads[head]
                    with single_thread():
                        order, q = _in_threads([lambda h=h, kv=kv: energy_order(h, h_b[kv]).numpy(),
                                                lambda h=h: _candidates(h, k)], threads)
                        out = _dim_pairs(order, q, key_side[kv], unit, thr32, len(kept), threads)
                elif method == "qk":
                    out = _whole(*qk_pairs(h, h_b[kv_heads[head]], top_k))
                else:
                    out = _whole(*ov_pairs(h, w_o[head], w_u, top_k))
                    tokens = out["b"].tolist()
                    out["b"] = np.arange(len(token_names), len(token_names) + len(tokens))
                    token_names += [model.tokenizer.decode([i]) for i in tokens]
                parts.append((layer, head, out))
                bar.update()
    bar.close()
    result = _frame(method, parts, categories, token_names if method == "ov" else None)
    result.attrs.update(method=method, n_words=len(kept), top_k=top_k,
                        similarity=getattr(source, "name", None))
    return result[COLUMNS]
