"""Float32 tolerances from a measured error bound, not from a constant that held on one CPU.

The paper's loop (:func:`mechit.attribution.reference.gradient_x_input_loop`) is run in
float32 and in float64 on the same weights (float32 -> float64 -> float32 restores them
exactly); its own float32 error against float64 is the yardstick. A float32 fast path is
as accurate as the loop when its error against the float64 values is within a small
multiple of the loop's, and two float32 results then differ by at most the sum of their
errors (triangle inequality). ``FLOOR`` (two float32 roundings of the largest entry, the
least error a float32 result can be expected to carry) keeps the bound meaningful where
the loop happens to round almost exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mechit.attribution.reference import gradient_x_input_loop

FLOOR = 2 * torch.finfo(torch.float32).eps


def rel_diff(a, b) -> float:
    """``max |a - b| / max |b|``."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max())


def max_rel_error(a, b) -> float:
    """``max_j |a_j - b_j| / |b_j|`` (elementwise relative error; for probabilities)."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float(((a - b).abs() / b.abs()).max())


@dataclass
class LoopReference:
    """The loop's attribution and probabilities in float32 and float64, and its float32 errors."""

    raw32: torch.Tensor
    probs32: torch.Tensor
    raw64: torch.Tensor
    probs64: torch.Tensor

    @property
    def raw_error(self) -> float:
        """The loop's float32 error on the attribution, relative to its largest entry, at least FLOOR."""
        return max(rel_diff(self.raw32, self.raw64), FLOOR)

    @property
    def probs_error(self) -> float:
        """The loop's largest relative float32 error on one probability, at least FLOOR."""
        return max(max_rel_error(self.probs32, self.probs64), FLOOR)


def loop_reference(model, input_ids, prompt_positions, response_positions) -> LoopReference:
    """:class:`LoopReference` for one example (the model is float32 again afterwards)."""
    args = (input_ids, prompt_positions, response_positions)
    raw32, probs32 = gradient_x_input_loop(model, *args)
    model.to(torch.float64)
    try:
        raw64, probs64 = gradient_x_input_loop(model, *args)
    finally:
        model.to(torch.float32)
    return LoopReference(raw32, probs32, raw64, probs64)
