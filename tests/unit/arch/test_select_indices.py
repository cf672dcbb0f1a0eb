"""mechit.arch.weights.select_indices: layer/head selection, with and without indices from the end."""

from __future__ import annotations

import numpy as np
import pytest

from mechit.arch.weights import select_indices
from mechit.errors import InputError


def test_plain_selection_refuses_negative_indices():
    assert select_indices("layer", None, 3) == [0, 1, 2]
    assert select_indices("head", np.int64(1), 3) == [1]
    assert select_indices("layer", [2, 0], 3) == [2, 0]
    with pytest.raises(InputError, match=r"head \[-1\] out of range: the model has 3 heads \(0..2\)"):
        select_indices("head", -1, 3)


def test_from_end_counts_negative_indices_from_the_end():
    assert select_indices("layer", [0, -1, -3], 3, from_end=True) == [0, 2, 0]
    assert select_indices("layer", -2, 3, from_end=True) == [1]
    with pytest.raises(InputError, match=r"layer 3, -4 out of range: the model has 3 layers \(0..2, or -3..-1"):
        select_indices("layer", [1, 3, -4], 3, from_end=True)
