"""The readable reference of the ``qk-dims`` method (PAPER §2.2–2.5), written as the
paper's code did it: loops over dimensions and over the K x K candidate pairs. The fast
path (:mod:`mechit.heads.kernels`) must give the same pairs, bit for bit; the tests and
``benchmarks/heads.py`` compare them.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from mechit.heads.pairs import energy_order


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


