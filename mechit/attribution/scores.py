"""The paper's post-processing of an attribution matrix (PAPER.md §1.3–1.5), on plain tensors.

A raw attribution matrix ``A`` has one row per prompt token and one column per response
token. These functions turn it into integer importance levels, a per-prompt-token
importance density and the instruction score of an example. They know nothing about
models and are exact transcriptions of the paper's formulas:

- :func:`sparsify`: ``max(A, 0)``, each column divided by its maximum, ``ceil(· L)``,
  entries ``<= b`` set to 0 (levels ``b+1 .. L`` survive);
- :func:`density`: ``d_i = ||A_i||_1 / (||A_i||_p + eps)`` over a row of levels;
- :func:`rescale`: ``d / max(d)`` over the prompt (the scale the analysis uses);
- :func:`instruction_score`: ``sum_i d_i M_i / log2(2 + sum_i M_i)``.

>>> import torch
>>> levels = sparsify(torch.tensor([[1.0, -2.0], [0.5, 4.0]]))
>>> levels
tensor([[10.,  0.],
        [ 0., 10.]])
>>> density(levels)
tensor([1., 1.])
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Bool, Float
from torch import Tensor

EPS = 1e-7  # the paper's epsilon in the density denominator (released code, generator.py)


def sparsify(
    raw: Float[Tensor, "n_prompt n_response"], L: int = 10, b: int = 7
) -> Float[Tensor, "n_prompt n_response"]:
    """Integer importance levels ``0..L`` of each prompt token for each response token (§1.3).

    Negative attributions become 0; each column is divided by its maximum (a column
    whose maximum is 0 stays all-zero); the result is multiplied by ``L`` and rounded up;
    levels ``<= b`` are set to 0, so only ``b+1 .. L`` survive.

    >>> import torch
    >>> sparsify(torch.tensor([[0.69], [0.71], [1.0], [-3.0]]))
    tensor([[ 0.],
            [ 8.],
            [10.],
            [ 0.]])
    """
    positive = raw.clamp(min=0)
    column_max = positive.amax(dim=0, keepdim=True)  # (1, m)
    scaled = torch.where(column_max > 0, positive / column_max.clamp(min=torch.finfo(raw.dtype).tiny), 0.0)
    levels = torch.ceil(scaled * L)
    return torch.where(levels <= b, torch.zeros_like(levels), levels)


def density(
    levels: Float[Tensor, "n_prompt n_response"], p: float = 4, eps: float = EPS
) -> Float[Tensor, " n_prompt"]:
    """Importance density of each prompt token: ``||row||_1 / (||row||_p + eps)`` (§1.4).

    High when a token matters to many response tokens; a row of zeros gives 0. For a row
    with ``k`` equal non-zero levels the density is ``k ** (1 - 1/p)`` (up to ``eps``).

    >>> import torch
    >>> density(torch.tensor([[10.0, 10.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]]))
    tensor([2.8284, 0.0000])
    """
    l1 = levels.abs().sum(dim=-1)
    lp = levels.abs().pow(p).sum(dim=-1).pow(1.0 / p)
    return l1 / (lp + eps)


def rescale(values: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """``values / max(values)``, the paper's rescaling of density over a prompt (0 stays 0).

    >>> import torch
    >>> rescale(torch.tensor([1.0, 2.0, 4.0]))
    tensor([0.2500, 0.5000, 1.0000])
    """
    top = values.max() if values.numel() else torch.tensor(0.0)
    if top <= 0:
        return torch.zeros_like(values)
    return values / top


def instruction_score(density: Float[Tensor, " n_prompt"], mask: Bool[Tensor, " n_prompt"]) -> float:
    """``sum_i d_i M_i / log2(2 + sum_i M_i)`` (§1.5); pass the *rescaled* density as the paper does.

    >>> import torch
    >>> instruction_score(torch.tensor([1.0, 0.5, 0.25]), torch.tensor([True, True, False]))
    0.75
    """
    mask = mask.to(density.dtype)
    return float((density * mask).sum() / math.log2(2.0 + float(mask.sum())))
