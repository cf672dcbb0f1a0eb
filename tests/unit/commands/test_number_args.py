"""Numeric options (issue 20 §6): argparse types refuse what is not a usable number, and the
-L/-p bound is where float32 densities really overflow."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from mechit.attribution.scores import density
from mechit.commands.args import MAX_LEVEL_POWER, check_levels, finite_float, int_in, non_negative_int, positive_int
from mechit.errors import InputError


@pytest.mark.parametrize("parse, text", [
    (positive_int, "0"), (positive_int, "-1"), (positive_int, "1.5"), (positive_int, "nan"),
    (non_negative_int, "-1"), (int_in(1, 10), "11"),
    (finite_float(min=1), "nan"), (finite_float(min=1), "inf"), (finite_float(min=1), "-inf"),
    (finite_float(min=1), "1e-300"), (finite_float(min=1), "0.999"), (finite_float(above=0), "0"),
    (finite_float(above=0), "1e-400"), (finite_float(), "1e400"), (finite_float(max=2), "2.5"),
])
def test_refused(parse, text):
    with pytest.raises(argparse.ArgumentTypeError, match=f"not {text!r}"):
        parse(text)


@pytest.mark.parametrize("parse, text, value", [
    (positive_int, "1", 1), (non_negative_int, "0", 0), (int_in(1, 10), "10", 10),
    (finite_float(min=1), "1", 1.0), (finite_float(above=0), "1e-300", 1e-300), (finite_float(), "-3.5", -3.5),
])
def test_accepted(parse, text, value):
    assert parse(text) == value


def _full_row_density(L: int, p: float, m: int = 100) -> float:
    """The density of a prompt token at level L on all m response tokens: m ** (1 - 1/p) exactly."""
    return float(density(torch.full((1, m), float(L)), p=p)[0])


def test_level_power_bound_is_where_densities_break():
    """At the bound (L**p = 1e30) a full row of 100 levels still gives m**(1-1/p) to float32
    precision; far beyond it the p-norm overflows and the density reads 0, the silent
    all-zero result check_levels refuses."""
    L, p = 10, MAX_LEVEL_POWER
    check_levels(L, 7, p)
    expected = 100 ** (1 - 1 / p)
    assert math.isclose(_full_row_density(L, p), expected, rel_tol=4 * 2**-23 * 100)
    assert _full_row_density(1000, 16) == 0.0
    with pytest.raises(InputError, match="-L 1000 with -p 16"):
        check_levels(1000, 7, 16)
    with pytest.raises(InputError, match="-b 10 must be in 0..L-1"):
        check_levels(10, 10, 4)


def test_parser_line(capsys):
    from mechit.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["attribute-stats", "nowhere", "--n-boot", "0"])
    assert exit_.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert line.endswith("argument --n-boot: must be an integer from 1 to 1000000, not '0'")
