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

>>> import mechit                                              # doctest: +SKIP
>>> model = mechit.load_model("organism-tuned")                # doctest: +SKIP
>>> pairs = mechit.head_pairs(model, layers=[0], heads=[1])   # doctest: +SKIP
>>> pairs[["dim", "rank", "word_a", "word_b", "similarity"]].head(3)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from mechit import tokens
from mechit.errors import InputError
from mechit.runtime import single_thread

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


def _candidates(h: Float[Tensor, "words d_head"], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per dimension (raw index order) the top-k words by |h| and their values: (d_head, k)
    each, the same words in the same order as ``torch.topk(h[:, r].abs(), k)``; and the
    dimensions' ``sum_words h^2`` (d_head,), the bits :func:`energy_order` sums.

    One pass over row chunks that stay in cache takes |h|, block maxima of |h| and the sums
    of squares (numpy sums an axis-0 reduction row by row: the running sum is carried as row
    0 of the chunk's squares, which gives the same bits as one sum over all rows). The k-th
    largest of at least 4k block maxima bounds each dimension's k-th largest |h| from below
    (k distinct words reach it); one more pass keeps the words at or above the bound (about
    1.3 k per dimension on real heads), and one integer sort ranks them by (dimension, |h|
    descending). Where |h| ties inside the top k or at its edge, or is NaN, torch.topk's
    order is its own: those dimensions call it.
    """
    x = h.numpy()
    n, d = x.shape
    bits = (n - 1).bit_length() + 1  # the word and the sign of h
    if d.bit_length() + 31 + bits > 63:
        raise InputError(f"{n} words x {d} head dimensions do not fit the 63-bit sort key: use fewer words")
    size = max(1, n // (4 * k))
    blocks = n // size
    step = size * max(1, (1 << 17) // (size * d))  # rows per chunk, whole blocks
    a = np.empty((n, d), dtype=np.float32)  # |h|
    block_max = torch.empty(blocks, d)
    squares = np.zeros((min(n, step) + 1, d), dtype=np.float32)  # row 0: the running sum
    for start in range(0, n, step):
        chunk = np.abs(x[start : start + step], out=a[start : start + step])
        whole = min(blocks - start // size, len(chunk) // size)  # full blocks in the chunk
        if whole > 0:
            torch.amax(torch.from_numpy(chunk[: whole * size]).view(whole, size, d), 1,
                       out=block_max[start // size : start // size + whole])
        np.square(chunk, out=squares[1 : len(chunk) + 1])
        squares[0] = squares[: len(chunk) + 1].sum(0)
    sums = squares[0].copy() if d > 1 else np.square(x).sum(0)  # one column: numpy sums it pairwise
    block_max = block_max.numpy()
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
    return idx, values, sums


def _f32_below(thresholds: np.ndarray) -> np.ndarray:
    """float64 thresholds rounded down to float32: for a float32 s, ``s > t`` iff ``s > t32``."""
    t32 = thresholds.astype(np.float32)
    over = t32.astype(np.float64) > thresholds
    t32[over] = np.nextafter(t32[over], np.float32(-np.inf))
    return t32


def _descending(s: np.ndarray) -> np.ndarray:
    """int64 keys in [0, 2^32) that sort float32 values in descending order (-0.0 = 0.0): the
    float bits with a negative value's magnitude bits flipped order as signed integers."""
    bits = (s + np.float32(0)).view(np.int32)
    return 0x7FFFFFFF - (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64)


def _from_descending(keys: np.ndarray) -> np.ndarray:
    """The float32 values back from :func:`_descending` keys."""
    ordered = (0x7FFFFFFF - keys).astype(np.int32)
    return (ordered ^ ((ordered >> 31) & 0x7FFFFFFF)).view(np.float32)


def _repeated(codes: np.ndarray, bound: int) -> np.ndarray:
    """True where a non-negative int64 code (all below ``bound``) occurs more than once: one
    sort (of int32 codes where they fit, 1.6x faster than a hash of int64 on 170k codes).

    >>> _repeated(np.array([5, 2, 5, 7]), 8).tolist()
    [True, False, True, False]
    """
    values, at = torch.sort(torch.from_numpy(codes.astype(np.int32) if bound <= 1 << 31 else codes))
    same = (values[1:] == values[:-1]).numpy()
    sorted_flags = np.zeros(len(codes), dtype=bool)
    sorted_flags[1:] = same
    sorted_flags[:-1] |= same
    flags = np.empty(len(codes), dtype=bool)
    flags[at.numpy()] = sorted_flags
    return flags


_POOLS: dict[int, ThreadPoolExecutor] = {}
_KEY_BITS = 63  # bits of the pairs' int64 sort key; beyond it, np.lexsort


def _in_threads(tasks: list, threads: int) -> list:
    """The callables' results, run on up to ``threads`` Python threads (the first task on this
    one); call inside :func:`mechit.runtime.single_thread`. torch and numpy release the GIL
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


def _sign_codes(values: np.ndarray) -> np.ndarray:
    """0 where a value is positive, 1 where negative, 2 where zero or NaN (never pairs)."""
    return np.where(values > 0, 0, np.where(values < 0, 1, 2)).astype(np.int8)


def _group_run(
    q_idx: np.ndarray, q_val: np.ndarray, k_idx: np.ndarray, k_val: np.ndarray, unit: Tensor, thr32: np.ndarray,
    cell: np.ndarray, shifts: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same-sign candidate pairs above both thresholds in a run of dimensions, for query
    heads sharing one key head. Candidates in top-k order: query ``(heads, n_dims, K)``, key
    ``(n_dims, K)``; ``cell`` ``(heads, n_dims)``: each (head, dimension)'s place in the output
    order. Returns unsorted ``(high, j, s)``: ``cell << shifts[0] | i << shifts[1]`` with i the
    query word's top-k position, j the key word's, and the similarity (float32).

    Per dimension the key candidates are put positives first, then negatives (zeros and NaN
    last), and the query candidates of all heads likewise (every head's positives, then every
    head's negatives): only the two same-sign blocks can raise the logit, so only they are
    multiplied, one product each of (key words x all heads' query words) from rows gathered
    into a buffer that stays in cache (a wide product runs at about 1.4x the speed of one per
    head). ``unit`` may be an exact float16 copy (half the bytes to gather); the products are
    float32. One mask then applies both thresholds."""
    heads, n_dims, k = q_idx.shape
    wide = heads * k
    q_sign = _sign_codes(q_val).transpose(1, 0, 2).reshape(n_dims, wide)  # (n_dims, heads*K) head-major
    k_sign = _sign_codes(k_val)  # (n_dims, K)
    q_perm = np.argsort(q_sign, axis=1, kind="stable")  # every head's positives, then negatives, then zeros
    k_perm = np.argsort(k_sign, axis=1, kind="stable")
    q_words = np.take_along_axis(q_idx.transpose(1, 0, 2).reshape(n_dims, wide), q_perm, 1)
    k_words = np.take_along_axis(k_idx, k_perm, 1)
    q_ends = np.stack([(q_sign == 0).sum(1), (q_sign < 2).sum(1)], 1).tolist()  # where positives, negatives end
    k_ends = np.stack([(k_sign == 0).sum(1), (k_sign < 2).sum(1)], 1).tolist()
    sims = torch.full((n_dims, k, wide), -math.inf)  # (dim, key word, query word); -inf where the signs differ
    rows = torch.empty(k + wide, unit.shape[1])  # both sides' gathered rows, float32
    staged = rows if unit.dtype == torch.float32 else unit.new_empty(rows.shape)
    u_k, u_q = rows[:k], rows[k:]
    both = torch.from_numpy(np.hstack([k_words, q_words]))  # (n_dims, K + heads*K)
    for r, words, (a, a2), (b, b2) in zip(range(n_dims), both, q_ends, k_ends):
        torch.index_select(unit, 0, words, out=staged)
        if staged is not rows:
            rows.copy_(staged)
        if a and b:
            torch.mm(u_k[:b], u_q[:a].T, out=sims[r, :b, :a])
        if a2 > a and b2 > b:
            torch.mm(u_k[b:b2], u_q[a:a2].T, out=sims[r, b:b2, a:a2])
    sims = sims.numpy()  # exact cosines (GRID)
    flat = np.flatnonzero(sims > np.maximum(thr32[k_words][:, :, None], thr32[q_words][:, None, :]))
    g, i = np.divmod(q_perm, k)  # (n_dims, wide): query head, top-k position of each column
    high = (np.take_along_axis(cell.T, g, 1) << shifts[0]) | (i << shifts[1])  # (n_dims, wide)
    at, c = np.divmod(flat, wide)  # at = r * K + (key row in sign order)
    return high.reshape(-1)[at // k * wide + c], k_perm.reshape(-1)[at], sims.reshape(-1)[flat]


def _group_pairs(
    q: tuple[np.ndarray, np.ndarray], kk: tuple[np.ndarray, np.ndarray], energy: np.ndarray,
    unit: Tensor, thr32: np.ndarray, n_words: int, threads: int = 1,
) -> list[dict[str, np.ndarray]]:
    """The K x K step of :func:`qk_dim_pairs_group` from the candidates (raw dimension order)
    of each query head and of the shared key head; ``energy``: (heads, d_head). ``threads``
    Python threads take contiguous runs of dimensions with about equal numbers of same-sign
    pairs (:func:`_group_run`); one integer sort of (head, dimension rank, similarity
    descending, top-k positions) then orders all heads' pairs, and every column is decoded
    from it."""
    (q_idx, q_val), (k_idx, k_val) = q, kk  # (heads, d_head, K), (d_head, K)
    heads, d_head, k = q_idx.shape
    order = np.argsort(-energy, axis=1, kind="stable")  # (heads, d_head), as energy_order
    cell = np.empty_like(order)  # (head, raw dimension) -> head * d_head + dimension rank
    np.put_along_axis(cell, order, np.arange(d_head)[None] + d_head * np.arange(heads)[:, None], 1)
    bits = max(1, (k - 1).bit_length())
    packed = (heads * d_head - 1).bit_length() + 33 + 2 * bits <= _KEY_BITS  # one int64 sort key
    shifts = (33 + 2 * bits, bits) if packed else (bits, 0)
    work = np.cumsum(((q_val > 0).sum(2) * (k_val > 0).sum(1) + (q_val < 0).sum(2) * (k_val < 0).sum(1)).sum(0))
    cuts = np.r_[0, np.searchsorted(work, work[-1] * np.arange(1, threads) / threads), d_head].tolist()
    runs = _in_threads([
        lambda lo=lo, hi=hi: _group_run(q_idx[:, lo:hi], q_val[:, lo:hi], k_idx[lo:hi], k_val[lo:hi], unit, thr32,
                                        cell[:, lo:hi], shifts)
        for lo, hi in zip(cuts, cuts[1:])
    ], threads)
    high, j, s = (np.concatenate([run[c] for run in runs]) if len(runs) > 1 else runs[0][c] for c in range(3))
    low = (1 << bits) - 1
    if packed:
        key = _sorted(high | (_descending(s) << 2 * bits) | j)
        cell, i, j = key >> shifts[0], (key >> bits) & low, key & low
        s = _from_descending((key >> 2 * bits) & ((1 << 33) - 1))
    else:
        cell, i = high >> bits, high & low
        sort = np.lexsort((j, i, -s.astype(np.float64), cell))
        cell, i, j, s = cell[sort], i[sort], j[sort], s[sort]
    dim = order.reshape(-1)[cell]
    at_q, at_k = (cell - cell % d_head + dim) * k + i, dim * k + j  # flat positions in q_*, k_*
    a, b = q_idx.reshape(-1)[at_q], k_idx.reshape(-1)[at_k]
    score = q_val.reshape(-1)[at_q] * k_val.reshape(-1)[at_k]
    ok = (a != b) & (score > 0)  # a word with itself is no relation
    if not ok.all():
        cell, dim, a, b, score, s = (x[ok] for x in (cell, dim, a, b, score, s))
    g, dim_rank = np.divmod(cell, d_head)
    rank = np.arange(len(cell)) - np.searchsorted(cell, np.arange(heads * d_head))[cell]  # within (head, dimension)
    knowledge = _repeated((g * n_words + a) * n_words + b, heads * n_words**2)
    ends = np.searchsorted(g, np.arange(heads + 1)).tolist()
    columns = {"dim": dim, "dim_rank": dim_rank, "rank": rank, "a": a, "b": b, "score": score,
               "similarity": s.astype(np.float64), "knowledge": knowledge}
    return [{name: x[lo:hi] for name, x in columns.items()} for lo, hi in zip(ends, ends[1:])]


def _top_k_phase(
    h_q: Float[Tensor, "words heads d_head"], h_k: Float[Tensor, "words d_head"], k: int, threads: int
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
    """The candidates (:func:`_candidates`) of each query head, ``(heads, d_head, K)`` each,
    and of the key head, ``(d_head, K)`` each, and the heads' dimension energies ``(heads,
    d_head)``. The query heads' columns are read side by side (one wide matrix: fewer, longer
    rows); the sides [key, query heads] are cut into ``threads`` runs of whole heads."""
    n, heads, d = h_q.shape
    wide = h_q.reshape(n, heads * d)  # a view when the heads' columns are adjacent
    cuts = np.linspace(0, heads + 1, min(threads, heads + 1) + 1).round().astype(int).tolist()

    def run(lo: int, hi: int) -> list:  # sides lo..hi-1; side 0 is the key head
        parts = [h_k] if lo == 0 else []
        if hi > 1:
            parts.append(wide[:, (max(lo, 1) - 1) * d : (hi - 1) * d])
        return [_candidates(part, k) for part in parts]

    found = [c for part in _in_threads([lambda lo=lo, hi=hi: run(lo, hi) for lo, hi in zip(cuts, cuts[1:])], threads)
             for c in part]
    idx, values, sums = (np.concatenate([c[i] for c in found]) for i in range(3))  # sides in order, key first
    return (idx[d:].reshape(heads, d, -1), values[d:].reshape(heads, d, -1), (idx[:d], values[:d]),
            sums[d:].reshape(heads, d) + sums[:d])


def qk_dim_pairs_group(
    h_q: Float[Tensor, "words heads d_head"],
    h_k: Float[Tensor, "words d_head"],
    unit: Float[Tensor, "words dim"],
    thresholds: Float[Tensor, "words"],
    top_k: int = 100,
    threads: int | None = None,
) -> list[dict[str, np.ndarray]]:
    """:func:`qk_dim_pairs` of several query heads that read the same key head (grouped-query
    attention), sharing the key side's work: its top-k and energy once, and per dimension
    one gather of its candidate rows and one product against all heads' query candidates.
    Returns one dict per query head, each equal to ``qk_dim_pairs(h_q[:, g], h_k, ...)``.

    >>> hq = torch.tensor([[[2.0], [0.1]], [[1.0], [1.0]], [[0.1], [2.0]]])   # (3 words, 2 heads, 1)
    >>> hk = torch.tensor([[0.1], [1.0], [2.0]])
    >>> unit = torch.eye(3); unit[2] = unit[0]                 # words 0 and 2 related
    >>> [out["a"].tolist() for out in qk_dim_pairs_group(hq, hk, unit, torch.zeros(3), top_k=2)]
    [[0], []]
    """
    h_q, h_k = h_q.detach().float(), h_k.detach().float()
    k = min(top_k, h_q.shape[0])
    threads = torch.get_num_threads() if threads is None else threads
    if unit.dtype != torch.float16:
        unit = unit.float().contiguous()
    with single_thread():
        q_idx, q_val, kk, energy = _top_k_phase(h_q, h_k, k, threads)
        thr32 = _f32_below(thresholds.double().numpy())
        return _group_pairs((q_idx, q_val), kk, energy, unit.contiguous(), thr32, h_q.shape[0], threads)


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

    ``unit``: the words' similarity vectors from :func:`mechit.heads.similarity.unit_rows` (their dot
    products are exact cosines; an exact float16 copy, ``unit.half()``, gathers faster);
    ``thresholds``: each word's relatedness threshold
    (:func:`mechit.heads.similarity.word_thresholds`). Returns equal-length arrays ``dim, dim_rank,
    rank, a, b, score, similarity`` (``a``/``b`` are word indices) ordered by dim_rank, then rank
    (similarity descending, ties in top-k order), and ``knowledge`` (the pair is kept in more
    than one dimension). Equals :func:`qk_dim_pairs_reference`. ``threads`` (default
    ``torch.get_num_threads()``) Python threads share the work: the two sides' top-k, then
    runs of dimensions; each runs torch on one thread, and the result does not depend on them.
    Several query heads sharing a key head: :func:`qk_dim_pairs_group`.

    >>> hq = torch.tensor([[2.0], [1.0], [0.1]]); hk = torch.tensor([[0.1], [1.0], [2.0]])
    >>> unit = torch.eye(3); unit[2] = unit[0]                 # words 0 and 2 related
    >>> out = qk_dim_pairs(hq, hk, unit, torch.zeros(3), top_k=2)
    >>> out["a"].tolist(), out["b"].tolist()
    ([0], [2])
    """
    return qk_dim_pairs_group(h_q[:, None], h_k, unit, thresholds, top_k, threads)[0]


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


def words_and_vectors(model, words: Sequence[str] | None) -> tuple[list[str], Float[Tensor, "n d_model"]]:
    """The kept words and their input word vectors (:func:`mechit.tokens.word_vectors`);
    ``None`` -> :func:`mechit.tokens.default_words`. Degenerate words are dropped and counted in the log;
    an empty list, or one with no usable word, is an InputError.

    >>> words, vectors = words_and_vectors(model, ["cat", "dog"])   # doctest: +SKIP
    """
    from mechit.tokens import word_vectors

    words = tokens.default_words(model) if words is None else list(words)
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


def compact_rows(unit: Float[Tensor, "words dim"]) -> Tensor:
    """``unit`` as float16 when that is exact (rows from :func:`mechit.heads.similarity.unit_rows`:
    multiples of 2^-11 in [-1, 1] are float16 numbers), else float32: half the bytes for
    :func:`qk_dim_pairs` to gather, the same similarities.

    >>> compact_rows(torch.tensor([[0.5, 2.0**-11]])).dtype, compact_rows(torch.tensor([[0.1]])).dtype
    (torch.float16, torch.float32)
    """
    unit = unit.float().contiguous()
    half = unit.half()
    return half if torch.equal(half.float(), unit) else unit


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

    Parameters: ``words`` (default :func:`mechit.tokens.default_words`; degenerate words are dropped and
    counted in the log), ``method`` ("qk-dims", "qk", "ov"), ``layers``/``heads`` (int or
    iterable; default all), ``top_k`` (K words per dimension and side for qk-dims, pairs per
    head for qk/ov), ``similarity`` (qk-dims only: a :mod:`mechit.heads.similarity` spec or source;
    default "minilm" if installed, else "embedding"), ``n_frequent`` (the first n words of the list set the thresholds).
    qk-dims takes the query heads that read one KV head together (:func:`qk_dim_pairs_group`:
    the key side's work once) and shares the work among ``torch.get_num_threads()`` Python
    threads; the pairs do not depend on the thread count.

    >>> pairs = head_pairs(model, ["translate", "French", "cat", "dog"], layers=0, top_k=2)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    import mechit.arch.weights as weight_views
    from mechit.heads.similarity import EmbeddingSimilarity, get_similarity, unit_rows, word_thresholds

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
                    tokens = out["b"].tolist()
                    out["b"] = np.arange(len(token_names), len(token_names) + len(tokens))
                    token_names += [model.tokenizer.decode([i]) for i in tokens]
                if method != "qk-dims":
                    bar.update()
                parts.append((layer, head, outs[slot]))
    bar.close()
    result = _frame(method, parts, categories, token_names if method == "ov" else None)
    result.attrs.update(method=method, n_words=len(kept), top_k=top_k,
                        similarity=getattr(source, "name", None))
    return result[COLUMNS]
