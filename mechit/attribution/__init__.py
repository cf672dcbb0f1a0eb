"""PAPER §1: input→output attribution (gradient × input, importance density, instruction scores).

- :mod:`~mechit.attribution.example`: :func:`attribute`, one example -> :class:`Attribution`;
- :mod:`~mechit.attribution.dataset`: :func:`attribute_dataset`, a prompt set -> tables, resumable;
- :mod:`~mechit.attribution.scores`: sparsify, density, instruction score (the paper's constants);
- :mod:`~mechit.attribution.grad`: the exact products (reverse and forward mode), memory plan;
- :mod:`~mechit.attribution.blocks`: the block-by-block reverse path;
- :mod:`~mechit.attribution.ablation`: :func:`ablate`, the causal check beside the gradient;
- :mod:`~mechit.attribution.reference`: the paper's procedure, one backward pass per response token.

>>> from mechit.attribution import sparsify
>>> import torch
>>> sparsify(torch.tensor([[1.0], [0.5]])).flatten().tolist()
[10.0, 0.0]
"""

from mechit.attribution.ablation import ablate, ablate_prompts
from mechit.attribution.dataset import attribute_dataset
from mechit.attribution.example import Attribution, attribute
from mechit.attribution.scores import density, instruction_score, sparsify

__all__ = ["Attribution", "ablate", "ablate_prompts", "attribute", "attribute_dataset", "density", "instruction_score", "sparsify"]
