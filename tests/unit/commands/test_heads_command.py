"""``mechit heads`` into a directory: the spec in a first ``model`` column, and one run per
directory (a second run with other settings is refused before the model loads)."""

import json

import pandas as pd

from mechit.cli import main

WORDS = ["cat", "dog", "house", "tree", "water", "write", "story", "translate", "french", "text"]


def test_heads_tags_the_spec_and_refuses_a_second_run_with_other_settings(tiny_llama_dir, tmp_path, capsys,
                                                                         monkeypatch):
    words = tmp_path / "words.txt"
    words.write_text("\n".join(WORDS), encoding="utf-8")
    out = tmp_path / "heads"
    argv = ["heads", "--model", str(tiny_llama_dir), "--words", str(words), "--layers", "0", "--heads", "0-1",
            "--method", "qk", "--top-k", "5", "--out", str(out)]
    assert main(argv) == 0
    pairs = pd.read_parquet(out / "head_pairs.parquet")
    assert pairs.columns[0] == "model" and set(pairs["model"]) == {str(tiny_llama_dir)}
    manifest = json.loads((out / "head_pairs.json").read_text())
    assert manifest["settings"]["top_k"] == 5 and manifest["finished"]["heads"]["n_words"] > 0
    before = (out / "head_pairs.parquet").read_bytes()

    import mechit.models

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the directory was refused")

    monkeypatch.setattr(mechit.models, "load_model", no_load)
    capsys.readouterr()
    assert main(argv[:-3] + ["7", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds a run with other settings (differs in: top_k)" in err and err.count("\n") == 1
    assert (out / "head_pairs.parquet").read_bytes() == before
    monkeypatch.undo()
    assert main(argv) == 0  # the same settings again: allowed (it rewrites the same run)
