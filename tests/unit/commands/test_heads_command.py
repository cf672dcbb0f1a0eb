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


def test_heads_shift_refuses_runs_judged_by_different_yardsticks(tiny_pair_dirs, tmp_path, capsys):
    """Two 'embedding' runs on two models carry one name but two yardsticks; one corpus is one yardstick."""
    words = tmp_path / "words.txt"
    words.write_text("\n".join(WORDS + ["run", "tell", "give"]), encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("write a story . tell a story . translate the text to french . the cat and the dog run .\n" * 5)
    outs = {}
    for similarity in ("embedding", f"ppmi:{corpus}"):
        for side, model in zip(("base", "tuned"), tiny_pair_dirs):
            out = outs[similarity, side] = tmp_path / f"{side}-{similarity[:4]}"
            assert main(["heads", "--model", str(model), "--words", str(words), "--layers", "0", "--top-k", "5",
                         "--similarity", similarity, "--out", str(out)]) == 0
    ids = {key: json.loads((out / "head_pairs.json").read_text())["finished"]["heads"]["similarity_id"]
           for key, out in outs.items()}
    assert ids["embedding", "base"].startswith("embedding:") and ids["embedding", "base"] != ids["embedding", "tuned"]
    assert ids["ppmi:" + str(corpus), "base"] == ids["ppmi:" + str(corpus), "tuned"]
    capsys.readouterr()
    assert main(["heads-shift", "--base", str(outs["embedding", "base"]), "--tuned", str(outs["embedding", "tuned"]),
                 "--layer-group", "1"]) == 2
    err = capsys.readouterr().err
    assert "judged word relatedness by different yardsticks" in err and err.count("\n") == 1
    assert not (outs["embedding", "tuned"] / "head_shift.parquet").exists()
    ppmi = "ppmi:" + str(corpus)
    assert main(["heads-shift", "--base", str(outs[ppmi, "base"]), "--tuned", str(outs[ppmi, "tuned"]),
                 "--layer-group", "1"]) == 0
    assert (outs[ppmi, "tuned"] / "head_shift.parquet").is_file()
