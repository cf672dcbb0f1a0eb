"""Every ``>>>`` example in mechit's docstrings runs, as einops runs its own
(``tests/test_other.py::test_doctests_examples``).

Each module's examples run with its own globals plus a few shared names, so an example
can use a real model without loading one itself:

- ``model``: the embedded organism's tuned model (a small Llama), ``pair`` the organism pair;
- ``tiny``: a tiny random Llama with grouped-query attention (tests/conftest.py);
- ``torch``, ``pd`` (pandas), ``np`` (numpy).

Examples run inside a fresh temporary directory, so the ones that write files leave
nothing behind. ``# doctest: +SKIP`` is kept only for examples that need what a test
machine has not (a hub download, a GPU, a server) or take more than a second or two.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import numpy as np
import pandas as pd
import pytest
import torch

import mechit

MODULES = sorted(info.name for info in pkgutil.walk_packages(mechit.__path__, "mechit."))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.fixture(scope="session")
def doctest_globals(tiny_llama):
    pair = mechit.load_pair()
    return {"model": pair.tuned, "pair": pair, "tiny": tiny_llama, "torch": torch, "pd": pd, "np": np}


def run_examples(name: str, extra: dict) -> doctest.TestResults:
    """Run the docstring examples of module ``name``; fail with doctest's report if any fails."""
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = io.StringIO()
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        test.globs = {**module.__dict__, **extra}
        runner.run(test, out=report.write)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples failed in {name}:\n{report.getvalue()}"
    return results


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, doctest_globals, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    run_examples(name, doctest_globals)


def test_every_module_is_collected():
    assert "mechit.heads.pairs" in MODULES and "mechit.attribution.example" in MODULES
