"""Sparsify / density / rescale / instruction score against hand-computed numbers (PAPER.md §1.3-1.5)."""

import math

import torch

from mechit.attribution.scores import EPS, density, instruction_score, rescale, sparsify


def test_sparsify_hand_computed():
    raw = torch.tensor([
        [2.0, -1.0, 0.30],
        [1.5, 0.5, 0.10],
        [1.9, 2.0, -0.2],
        [-4.0, 1.9, 0.24],
    ])
    # column maxima of max(A, 0): 2.0, 2.0, 0.30
    # col 0: 1.0, .75, .95, 0  -> ceil*10: 10, 8 (7.5), 10 (9.5), 0 -> keep >7: 10, 8, 10, 0
    # col 1: 0, .25, 1.0, .95  -> 0, 3, 10, 10 -> 0, 0, 10, 10
    # col 2: 1.0, 1/3, 0, .8   -> 10, 4, 0, 8 -> 10, 0, 0, 8
    expected = torch.tensor([
        [10.0, 0.0, 10.0],
        [8.0, 0.0, 0.0],
        [10.0, 10.0, 0.0],
        [0.0, 10.0, 8.0],
    ])
    assert torch.equal(sparsify(raw), expected)


def test_sparsify_other_constants_and_zero_column():
    raw = torch.tensor([[1.0, -1.0], [0.45, -2.0], [0.2, 0.0]])
    # L=4, b=1: col 0 -> ceil(4, 1.8, .8) = 4, 2, 1 -> 4, 2, 0; col 1 has no positive entry -> zeros
    assert torch.equal(sparsify(raw, L=4, b=1), torch.tensor([[4.0, 0.0], [2.0, 0.0], [0.0, 0.0]]))


def test_density_hand_computed():
    levels = torch.tensor([[10.0, 10.0, 0.0], [8.0, 0.0, 0.0], [0.0, 0.0, 0.0], [10.0, 9.0, 8.0]])
    l4 = (10**4 + 9**4 + 8**4) ** 0.25
    expected = torch.tensor([20 / (2**0.25 * 10 + EPS), 8 / (8 + EPS), 0.0, 27 / (l4 + EPS)])
    torch.testing.assert_close(density(levels), expected)
    # p = 2: ||.||_1 / ||.||_2
    torch.testing.assert_close(density(levels[:1], p=2), torch.tensor([20 / (200**0.5 + EPS)]))


def test_rescale_and_zero():
    torch.testing.assert_close(rescale(torch.tensor([0.5, 2.0, 1.0])), torch.tensor([0.25, 1.0, 0.5]))
    assert torch.equal(rescale(torch.zeros(3)), torch.zeros(3))


def test_instruction_score_hand_computed():
    d = torch.tensor([1.0, 0.5, 0.25, 0.8])
    mask = torch.tensor([True, False, True, True])
    assert math.isclose(instruction_score(d, mask), (1.0 + 0.25 + 0.8) / math.log2(5.0), rel_tol=1e-6)
    assert instruction_score(d, torch.zeros(4, dtype=torch.bool)) == 0.0


def test_whole_pipeline_matches_paper_formula_by_hand():
    raw = torch.tensor([[3.0, 1.0], [2.9, 0.1], [-1.0, 0.85]])
    levels = sparsify(raw)  # col0: 10, 10 (9.67), 0; col1: 10, 0 (1), 9 (8.5)
    assert torch.equal(levels, torch.tensor([[10.0, 10.0], [10.0, 0.0], [0.0, 9.0]]))
    d = density(levels)
    rd = rescale(d)
    top = 20 / (2**0.25 * 10 + EPS)
    torch.testing.assert_close(rd, torch.tensor([1.0, (10 / (10 + EPS)) / top, (9 / (9 + EPS)) / top]))
    score = instruction_score(rd, torch.tensor([True, True, False]))
    assert math.isclose(score, (1.0 + float(rd[1])) / 2.0, rel_tol=1e-6)
