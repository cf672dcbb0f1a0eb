"""The fast exact path behind the ``qk-dims`` method of :mod:`mechit.heads.pairs` (PAPER §2).

:mod:`mechit.heads.pairs` states the method; this module computes it fast and gives the
same pairs, bit for bit, as :func:`mechit.heads.reference.qk_dim_pairs_reference` (the
paper's loops). The tricks:

- *block-max exact top-k* (:func:`_candidates`): per dimension the top ``K`` words by |h|
  from a bound on block maxima, a mask and one integer sort, instead of ``d_head`` calls of
  ``torch.topk``; where |h| ties, ``torch.topk`` itself (the *tie fallback*);
- *bit-packed sort keys*: (dimension, |h| descending, word, sign) and (head, dimension rank,
  similarity descending, top-k positions) each fit one int64, so one integer sort orders
  everything (:func:`_descending`, :func:`_repeated`); ``np.lexsort`` beyond 63 bits;
- *group runs* (:func:`_group_run`): query heads that read one key head (GQA) share the key
  side's work; only the two same-sign candidate blocks are multiplied;
- *threads* (:func:`_in_threads`): runs of dimensions on Python threads (torch and numpy
  release the GIL), the result independent of their number;
- :func:`compact_rows` (an exact float16 copy of the similarity rows: half the bytes to
  gather) and :func:`blockwise_topk` (top entries of a product never built whole, for
  ``qk``/``ov``).

Measurements of these choices: ``docs/benchmarks.md`` ("Heads: notes moved from code").
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from mechit.errors import InputError
from mechit.runtime import single_thread


def _sorted(keys: np.ndarray) -> np.ndarray:
    """Non-negative int64 keys in ascending order (torch's radix sort beats numpy's on long
    arrays; the crossover is measured in ``docs/benchmarks.md``)."""
    return np.sort(keys) if len(keys) < 20_000 else torch.sort(torch.from_numpy(keys)).values.numpy()


def _candidates(h: Float[Tensor, "words d_head"], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per dimension (raw index order) the top-k words by |h| and their values: (d_head, k)
    each, the same words in the same order as ``torch.topk(h[:, r].abs(), k)``; and the
    dimensions' ``sum_words h^2`` (d_head,), the bits :func:`mechit.heads.pairs.energy_order` sums.

    One pass over row chunks that stay in cache takes |h|, block maxima of |h| and the sums
    of squares (numpy sums an axis-0 reduction row by row: the running sum is carried as row
    0 of the chunk's squares, which gives the same bits as one sum over all rows). The k-th
    largest of at least 4k block maxima bounds each dimension's k-th largest |h| from below
    (k distinct words reach it); one more pass keeps the words at or above the bound (a few
    more than k per dimension on real heads), and one integer sort ranks them by (dimension, |h|
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
            torch.amax(rearrange(torch.from_numpy(chunk[: whole * size]), "(b s) d -> b s d", s=size), 1,
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
    sort (of int32 codes where they fit: faster than a hash of int64 codes).

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
    OpenMP team and small products slowed down many times over."""
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
    into a buffer that stays in cache (one wide product is faster than one per head).
    ``unit`` may be an exact float16 copy (half the bytes to gather); the products are
    float32. One mask then applies both thresholds."""
    heads, n_dims, k = q_idx.shape
    wide = heads * k
    q_sign = rearrange(_sign_codes(q_val), "h r k -> r (h k)")  # (n_dims, heads*K) head-major
    k_sign = _sign_codes(k_val)  # (n_dims, K)
    q_perm = np.argsort(q_sign, axis=1, kind="stable")  # every head's positives, then negatives, then zeros
    k_perm = np.argsort(k_sign, axis=1, kind="stable")
    q_words = np.take_along_axis(rearrange(q_idx, "h r k -> r (h k)"), q_perm, 1)
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
    _, heads, d = h_q.shape
    wide = rearrange(h_q, "n h e -> n (h e)")  # a view when the heads' columns are adjacent
    cuts = np.linspace(0, heads + 1, min(threads, heads + 1) + 1).round().astype(int).tolist()

    def run(lo: int, hi: int) -> list:  # sides lo..hi-1; side 0 is the key head
        parts = [h_k] if lo == 0 else []
        if hi > 1:
            parts.append(wide[:, (max(lo, 1) - 1) * d : (hi - 1) * d])
        return [_candidates(part, k) for part in parts]

    found = [c for part in _in_threads([lambda lo=lo, hi=hi: run(lo, hi) for lo, hi in zip(cuts, cuts[1:])], threads)
             for c in part]
    idx, values, sums = (np.concatenate([c[i] for c in found]) for i in range(3))  # sides in order, key first
    by_head = "(h r) k -> h r k"
    return (rearrange(idx[d:], by_head, h=heads), rearrange(values[d:], by_head, h=heads), (idx[:d], values[:d]),
            rearrange(sums[d:], "(h r) -> h r", h=heads) + sums[:d])


def qk_dim_pairs_group(
    h_q: Float[Tensor, "words heads d_head"],
    h_k: Float[Tensor, "words d_head"],
    unit: Float[Tensor, "words dim"],
    thresholds: Float[Tensor, "words"],
    top_k: int = 100,
    threads: int | None = None,
) -> list[dict[str, np.ndarray]]:
    """:func:`mechit.heads.pairs.qk_dim_pairs` of several query heads that read the same key
    head (grouped-query attention), sharing the key side's work: its top-k and energy once,
    and per dimension one gather of its candidate rows and one product against all heads'
    query candidates.
    Returns one dict per query head, each equal to
    ``mechit.heads.pairs.qk_dim_pairs(h_q[:, g], h_k, ...)``.

    >>> hq = torch.tensor([[[2.0], [0.1]], [[1.0], [1.0]], [[0.1], [2.0]]])   # (3 words, 2 heads, 1)
    >>> hk = torch.tensor([[0.1], [1.0], [2.0]])
    >>> unit = torch.eye(3); unit[2] = unit[0]                 # words 0 and 2 related
    >>> [out["a"].tolist() for out in qk_dim_pairs_group(hq, hk, unit, torch.zeros(3), top_k=2)]
    [[0], []]
    """
    h_q, h_k = h_q.detach().float().cpu(), h_k.detach().float().cpu()  # a CPU kernel (numpy), float32 bits
    k = min(top_k, h_q.shape[0])
    threads = torch.get_num_threads() if threads is None else threads
    unit = unit.cpu()
    if unit.dtype != torch.float16:
        unit = unit.float().contiguous()
    with single_thread():
        q_idx, q_val, kk, energy = _top_k_phase(h_q, h_k, k, threads)
        thr32 = _f32_below(thresholds.double().cpu().numpy())
        return _group_pairs((q_idx, q_val), kk, energy, unit.contiguous(), thr32, h_q.shape[0], threads)


def blockwise_topk(
    left: Float[Tensor, "n r"], right: Float[Tensor, "r m"], k: int, *, block_entries: int = 1 << 24
) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` largest entries of ``left @ right`` without building the n x m matrix: row
    blocks of at most ``block_entries`` entries, a running top-k merged per block.

    Returns ``(values, rows, cols)`` sorted by value descending (ties by row, then column), on
    ``left``'s device: the products and top-k run there; only the ``k`` winners' order is
    decided on the host (``np.lexsort``: one ``.cpu()`` of 2k numbers, the order moved back).

    >>> left = torch.tensor([[1.0], [2.0]]); right = torch.tensor([[1.0, -1.0, 3.0]])
    >>> values, rows, cols = blockwise_topk(left, right, 2, block_entries=3)
    >>> values.tolist(), rows.tolist(), cols.tolist()
    ([6.0, 3.0], [1, 0], [2, 2])
    """
    n, m = left.shape[0], right.shape[1]
    k = min(k, n * m)
    block = max(1, block_entries // max(m, 1))
    best_v = torch.empty(0, dtype=torch.result_type(left, right), device=left.device)
    best_i = torch.empty(0, dtype=torch.long, device=left.device)
    for start in range(0, n, block):
        scores = (left[start : start + block] @ right).flatten()  # (b*m,)
        v, i = scores.topk(min(k, scores.numel()))
        best_v, pick = torch.cat([best_v, v]).topk(min(k, best_v.numel() + v.numel()))
        best_i = torch.cat([best_i, i + start * m])[pick]
    sort = torch.from_numpy(np.lexsort((best_i.cpu().numpy(), -best_v.double().cpu().numpy()))).to(left.device)
    best_v, best_i = best_v[sort], best_i[sort]
    return best_v, best_i // m, best_i % m


def compact_rows(unit: Float[Tensor, "words dim"]) -> Tensor:
    """``unit`` as float16 when that is exact (rows from :func:`mechit.heads.similarity.unit_rows`:
    multiples of 2^-11 in [-1, 1] are float16 numbers), else float32: half the bytes for
    :func:`mechit.heads.pairs.qk_dim_pairs` to gather, the same similarities.

    >>> compact_rows(torch.tensor([[0.5, 2.0**-11]])).dtype, compact_rows(torch.tensor([[0.1]])).dtype
    (torch.float16, torch.float32)
    """
    unit = unit.float().contiguous()
    half = unit.half()
    return half if torch.equal(half.float(), unit) else unit


