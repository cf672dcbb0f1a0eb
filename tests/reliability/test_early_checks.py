"""Arguments are checked before heavy work (issue 8 §2, review R7): a bad ``mechit ffn``,
``ffn-rotation``, ``ffn-labels``, ``compare`` or ``attribute`` (memory budgets) argument is
refused with one line, either before any model is loaded (checks that need no model) or
right after loading and before the PCA / rotation / labelling starts (layers against
``n_layers``, neurons against ``d_mlp``, components against the rank bound, ``--top-k``
against the word list).

Each case replaces the step it must never reach (the model loader, or the analysis) by a
function that fails the test, so a check done too late shows as that failure.
"""

from __future__ import annotations

import pandas as pd
import pytest

from mechit.cli import main

WORDS = "the cat sat on mat dog story about write give find make tell please answer question".split()


class _Reached(Exception):
    """Raised by a step that a refused command must not reach."""


@pytest.fixture
def words_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("\n".join(WORDS) + "\n")
    return path


@pytest.fixture
def forbid(monkeypatch):
    """``forbid("mechit.ffn.concepts", "ffn_concepts")``: calling it raises :class:`_Reached`."""

    def install(module: str, name: str) -> None:
        def reached(*args, **kwargs):
            raise _Reached(f"{module}.{name} was called before the arguments were refused")

        monkeypatch.setattr(f"{module}.{name}", reached)

    return install


def _refused(argv: list[str], capsys) -> str:
    """The single error line of a refused command (exit 2, nothing reached); argparse refuses
    numbers out of range itself (:mod:`mechit.commands.args`), by exiting with status 2."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(lines) == 1, err
    return lines[0]


# (extra ffn arguments, substrings of the message); refused before the model loads
BEFORE_LOADING = [
    (["--neurons", "many"], ["--neurons", "'many'"]),
    (["--neurons", "0"], ["--neurons 0", "at least 1"]),
    (["--top-k", "0"], ["--top-k", "at least 1", "'0'"]),
    (["--neuron-k", "0"], ["--neuron-k", "at least 1", "'0'"]),
    (["--n-components", "0"], ["--n-components", "at least 1", "'0'"]),
    (["--layers", "1-x"], ["--layers '1-x'"]),
]


@pytest.mark.parametrize("extra, expect", BEFORE_LOADING, ids=[" ".join(e) for e, _ in BEFORE_LOADING])
def test_ffn_model_free_checks_run_before_loading(extra, expect, tiny_llama_dir, words_file, tmp_path, forbid,
                                                  capsys):
    forbid("mechit.models", "load_model")
    line = _refused(["ffn", "--model", str(tiny_llama_dir), "--out", str(tmp_path / "out"), "--words",
                     str(words_file), *extra], capsys)
    assert all(s in line for s in expect), line


# checks against the loaded tiny Llama (2 layers, d_model 64, d_mlp 128): before the PCA
AFTER_LOADING = [
    (["--neurons", "129"], ["--neurons 129", "128 neurons per layer", "at most 128"]),
    (["--layers", "0,2"], ["layer 2", "0..1"]),
    (["--n-components", "999"], ["--n-components 999", "exceeds the rank", "at most 64"]),
    (["--top-k", "17"], ["--top-k 17", "words.txt", "(16)"]),
]


@pytest.mark.parametrize("extra, expect", AFTER_LOADING, ids=[" ".join(e) for e, _ in AFTER_LOADING])
def test_ffn_model_checks_run_before_the_pca(extra, expect, tiny_llama_dir, words_file, tmp_path, forbid, capsys):
    forbid("mechit.ffn.concepts", "ffn_concepts")
    forbid("mechit.ffn.concepts", "principal_components")
    line = _refused(["ffn", "--model", str(tiny_llama_dir), "--out", str(tmp_path / "out"), "--words",
                     str(words_file), *extra], capsys)
    assert all(s in line for s in expect), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, expect", [
    (["--k", "65"], ["--k 65", "at most 64"]),
    (["--layers", "3"], ["layer 3", "0..1"]),
    (["--n-changed", "-1"], ["--n-changed", "at least 0", "'-1'"]),
])
def test_ffn_rotation_checks_run_before_the_rotation(extra, expect, tiny_pair_dirs, words_file, tmp_path, forbid,
                                                     capsys):
    forbid("mechit.ffn.rotation", "ffn_rotation")
    line = _refused(["ffn-rotation", "--base", str(tiny_pair_dirs[0]), "--tuned", str(tiny_pair_dirs[1]), "--out",
                     str(tmp_path / "out"), "--words", str(words_file), *extra], capsys)
    assert all(s in line for s in expect), line


@pytest.mark.parametrize("extra, expect", [
    (["--seeds", "0"], ["--seeds", "at least 1", "'0'"]),
    (["--max-components", "0"], ["--max-components", "at least 1", "'0'"]),
    (["--group-size", "0"], ["--group-size", "at least 1", "'0'"]),
    (["--timeout", "0"], ["--timeout", "above 0", "'0'"]),
])
def test_ffn_labels_checks_run_before_the_local_model_loads(extra, expect, tiny_llama_dir, tmp_path, forbid, capsys):
    directory = tmp_path / "run"
    directory.mkdir()
    pd.DataFrame({"layer": [0], "component": [0], "explained_variance": [0.5], "rank": [0], "word": ["cat"],
                  "score": [1.0]}).to_parquet(directory / "concepts.parquet")
    forbid("mechit.models", "load_model")
    line = _refused(["ffn-labels", str(directory), "--labeller", "local", "--local-model", str(tiny_llama_dir),
                     *extra], capsys)
    assert all(s in line for s in expect), line


@pytest.mark.parametrize("extra, expect", [
    (["--max-new-tokens", "0"], ["--max-new-tokens", "at least 1", "'0'"]),
    (["--words", "0"], ["--words", "at least 1", "'0'"]),
])
def test_compare_checks_run_before_loading(extra, expect, tiny_pair_dirs, tmp_path, forbid, capsys):
    forbid("mechit.models", "load_pair")
    line = _refused(["compare", "--base", str(tiny_pair_dirs[0]), "--tuned", str(tiny_pair_dirs[1]), "--out",
                     str(tmp_path / "out"), "--no-report", *extra], capsys)
    assert all(s in line for s in expect), line


@pytest.mark.parametrize("extra, expect", [
    (["--max-memory", "0"], ["--max-memory", "at least 1", "'0'"]),
    (["--memory-budget-mb", "0"], ["--memory-budget-mb", "at least 1", "'0'"]),
])
def test_attribute_memory_checks_run_before_loading(extra, expect, tiny_llama_dir, tmp_path, forbid, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "prompt": "Say hi", "response": "hi"}\n')
    forbid("mechit.models", "load_model")
    line = _refused(["attribute", "--model", str(tiny_llama_dir), "--prompts", str(prompts), "--out",
                     str(tmp_path / "out"), *extra], capsys)
    assert all(s in line for s in expect), line
