"""Concepts of the feed-forward layers (PAPER §3.1–3.2): principal components of ``W_out``.

``W_out`` of a layer has one row per neuron, the vectors the MLP writes into the residual
stream. Centre the rows, take the SVD; component ``k`` has explained-variance ratio
``S_k² / Σ S²`` and a direction ``v_k`` in d_model space. Its *concept* is the ``top_k``
words whose L2-normalised unembedding vector has the largest ``|<v_k, e_word>|``.

The maths lives in pure tensor functions (:func:`principal_components`,
:func:`concept_words`); :func:`ffn_concepts` reads one model's weights through
:mod:`mechit.arch.weights` and its word vectors through :mod:`mechit.tokens`. Both models:
``pair.run(ffn_concepts, ...)``. The neuron view is :mod:`mechit.ffn.neurons`.

>>> frame = ffn_concepts(model, [0], n_components=3, top_k=2, progress=False)
>>> frame[["layer", "component", "rank"]].values.tolist()
[[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [0, 2, 0], [0, 2, 1]]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

import mechit.arch.weights as weight_views
from mechit import tokens, vocab
from mechit.errors import InputError
from mechit.runtime import compute_dtype, single_thread, upcast

# singular values below S_max * max(shape) * FP32_EPS count as zero (weights are fp32)
FP32_EPS = float(torch.finfo(torch.float32).eps)


class Components(NamedTuple):
    """The principal components of one centred ``W_out``.

    ``directions`` [k, d_model] (float64 rows ``v_k``, unit norm, sign arbitrary),
    ``explained`` [k] (ratio ``S_k² / Σ S²``), ``singular_values`` [k], ``rank`` (numerical
    rank of the centred matrix).
    """

    directions: Float[Tensor, "k d_model"]
    explained: Float[Tensor, " k"]
    singular_values: Float[Tensor, " k"]
    rank: int


# ---------------------------------------------------------------------------- pure maths


def principal_components(
    w_out: Float[Tensor, "d_mlp d_model"], n_components: int, *, name: str = "W_out"
) -> Components:
    """Centre the rows of ``w_out`` and return its top ``n_components`` right singular vectors.

    Computed in float64 from the eigendecomposition of the Gram matrix; directions stay
    float64, the ratios and singular values are in
    :func:`mechit.runtime.compute_dtype` of ``w_out`` (float32; float64 for float64 weights). Raises :class:`InputError` when
    ``n_components`` exceeds the numerical rank of the centred matrix (at most
    ``min(d_mlp - 1, d_model)``).

    >>> w = torch.tensor([[1., 0.], [-1., 0.], [3., 1.], [-3., -1.]])
    >>> pc = principal_components(w, 1)
    >>> round(float(pc.explained[0]), 3), pc.rank
    (0.992, 2)
    """
    if w_out.ndim != 2:
        raise InputError(f"{name}: expected a [d_mlp, d_model] matrix, got shape {tuple(w_out.shape)}")
    if n_components < 1:
        raise InputError(f"{name}: n_components must be at least 1, got {n_components}")
    with single_thread():
        x = w_out.detach().to(torch.float64)
        x = x - x.mean(dim=0, keepdim=True)
        s, vh = _svd_via_gram(x)
    rank = int((s > s[0] * max(x.shape) * FP32_EPS).sum()) if s.numel() and s[0] > 0 else 0
    if n_components > rank:
        raise InputError(
            f"{name}: n_components={n_components} exceeds the rank {rank} of the centred "
            f"matrix (shape {tuple(w_out.shape)}); pass n_components <= {rank}"
        )
    total = (s**2).sum()
    return Components(
        directions=vh[:n_components],
        explained=((s[:n_components] ** 2) / total).to(compute_dtype(w_out.dtype)),
        singular_values=s[:n_components].to(compute_dtype(w_out.dtype)),
        rank=rank,
    )


def _svd_via_gram(x: Float[Tensor, "n d"]) -> tuple[Float[Tensor, " m"], Float[Tensor, "m d"]]:
    """Singular values (descending) and right singular vectors of a float64 matrix.

    Eigen-decomposes the smaller Gram matrix (``XᵀX`` [d, d] or ``XXᵀ`` [n, n]) instead of
    a thin SVD of ``X`` (faster on CPU: docs/benchmarks.md); in float64 it is accurate far
    below the fp32 rank tolerance used here. Left vectors are never needed.
    """
    n, d = x.shape
    if d <= n:
        evals, evecs = torch.linalg.eigh(x.T @ x)  # ascending
        s = evals.flip(0).clamp_min(0).sqrt()
        return s, evecs.flip(1).T
    evals, u = torch.linalg.eigh(x @ x.T)
    s = evals.flip(0).clamp_min(0).sqrt()
    vh = (u.flip(1).T @ x) / s.clamp_min(torch.finfo(x.dtype).tiny)[:, None]
    return s, vh


def normalise_rows(x: Float[Tensor, "n d"]) -> Float[Tensor, "n d"]:
    """Rows scaled to unit L2 norm (zero rows stay zero).

    >>> normalise_rows(torch.tensor([[3., 4.], [0., 0.]]))
    tensor([[0.6000, 0.8000],
            [0.0000, 0.0000]])
    """
    norms = x.norm(dim=-1, keepdim=True)
    return x / norms.clamp_min(torch.finfo(x.dtype).tiny)


def concept_words(
    directions: Float[Tensor, "k d_model"],
    unit_words: Float[Tensor, "n_words d_model"],
    top_k: int,
    *,
    chunk: int = 64,
) -> tuple[Float[Tensor, "k top_k"], Int[Tensor, "k top_k"]]:
    """For each direction, the ``top_k`` word rows with the largest ``|<v, e_word>|``.

    ``unit_words`` are L2-normalised word vectors. Returns the signed scores (sign of
    ``v`` is arbitrary) and word indices, both ordered by decreasing ``|score|``.

    >>> v = torch.tensor([[1., 0.]])
    >>> e = torch.tensor([[0., 1.], [-1., 0.], [0.6, 0.8]])
    >>> concept_words(v, e, 2)
    (tensor([[-1.0000,  0.6000]]), tensor([[1, 2]]))
    """
    if top_k > unit_words.shape[0]:
        raise InputError(f"top_k={top_k} exceeds the number of words ({unit_words.shape[0]})")
    scores, indices = [], []
    directions = directions.to(unit_words.dtype)
    for start in range(0, directions.shape[0], chunk):
        proj = directions[start : start + chunk] @ unit_words.T  # [c, n_words]
        idx = proj.abs().topk(top_k, dim=-1).indices  # [c, top_k], sorted
        scores.append(proj.gather(-1, idx))
        indices.append(idx)
    return torch.cat(scores), torch.cat(indices)


# ---------------------------------------------------------------------------- model wrappers


def unit_word_vectors(model: Any, words: Sequence[str] | None) -> tuple[list[str], Float[Tensor, "n d_model"]]:
    """Output-side word vectors (mean of sub-token unembeddings), L2-normalised.

    ``words=None`` uses :func:`mechit.vocab.default_words`: 26,500 frequent English words with
    the verbs of Finding 2 (:func:`mechit.data.wordlists.head_vocabulary`), or the organism's
    vocabulary and the verbs its tokenizer knows for the organism.
    Returns the words that could be encoded and their vectors [n_words, d_model].

    >>> words, vectors = unit_word_vectors(model, None)
    >>> vectors.shape == (len(words), model.cfg.d_model), bool(vectors.norm(dim=1).sub(1).abs().max() < 1e-5)
    (True, True)
    """
    chosen = vocab.default_words(model) if words is None else list(words)
    if not chosen:
        raise InputError("the word list is empty")
    wv = tokens.word_vectors(model, chosen, side="output")
    if len(wv.words) == 0:
        raise InputError(f"none of the {len(chosen)} words could be encoded by the model's tokenizer")
    return list(wv.words), normalise_rows(upcast(wv.vectors))


def concept_frame(
    comps: Components, words: Sequence[str], scores: Tensor, indices: Tensor, *, layer: int
) -> pd.DataFrame:
    """Tidy frame of concepts: one row per (component, word rank).

    ``scores`` and ``indices`` [n_components, top_k] come from :func:`concept_words`.

    >>> comps = principal_components(torch.tensor([[1., 0.], [-1., 0.], [3., 1.], [-3., -1.]]), 1)
    >>> concept_frame(comps, ["x", "y"], torch.tensor([[0.9, 0.4]]), torch.tensor([[0, 1]]), layer=2)
       layer  component  explained_variance  rank word  score
    0      2          0            0.991666     0    x    0.9
    1      2          0            0.991666     1    y    0.4
    """
    n_comp, top_k = indices.shape
    comp = np.repeat(np.arange(n_comp), top_k)  # the frame is built on the host, from tensors leaving via .cpu()
    words_arr = pd.Series(list(words), dtype=object).to_numpy()
    return pd.DataFrame(
        {
            "layer": layer,
            "component": comp,
            "explained_variance": comps.explained.cpu().numpy()[comp],
            "rank": np.tile(np.arange(top_k), n_comp),
            "word": words_arr[indices.reshape(-1).cpu().numpy()],
            "score": scores.reshape(-1).cpu().numpy(),
        }
    )


def ffn_concepts(
    model: Any,
    layers: int | Iterable[int] | None = None,
    *,
    n_components: int = 300,
    top_k: int = 50,
    words: Sequence[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Principal-component concepts of each layer's ``W_out`` (PAPER §3.1–3.2).

    Per layer: centre the rows of ``W_out`` [d_mlp, d_model], SVD, keep the first
    ``n_components`` directions ``v_k``; the concept of ``v_k`` is the ``top_k`` words
    whose L2-normalised output word vector ``e`` (mean of its sub-token unembedding
    columns) has the largest ``|<v_k, e>|``. ``words=None``: 20,000 frequent English words
    (the organism's vocabulary for the organism).

    Returns columns layer, component, explained_variance (``S_k² / Σ S²``), rank (0 =
    strongest word), word, score (signed ``<v_k, e>``; the sign of ``v_k`` is arbitrary).
    Raises :class:`InputError` if ``n_components`` exceeds the rank of the centred matrix.

    >>> frame = ffn_concepts(model, [0, -1], n_components=20, top_k=10, progress=False)
    >>> sorted(frame["layer"].unique().tolist()), len(frame)
    ([0, 5], 400)
    >>> pair.run(ffn_concepts, 0, n_components=2, top_k=1, progress=False)["model"].tolist()
    ['base', 'base', 'tuned', 'tuned']
    """
    layer_list = weight_views.select_indices("layer", layers, int(model.cfg.n_layers), from_end=True)
    kept, unit = unit_word_vectors(model, words)
    if top_k > len(kept):
        raise InputError(f"top_k={top_k} exceeds the number of usable words ({len(kept)})")
    frames = []
    for layer in tqdm(layer_list, desc="concepts", unit="layer", disable=not progress):
        comps = principal_components(weight_views.mlp_out_weights(model, layer), n_components, name=f"layer {layer} W_out")
        scores, idx = concept_words(comps.directions, unit, top_k)
        frames.append(concept_frame(comps, kept, scores, idx, layer=layer))
    return pd.concat(frames, ignore_index=True)
