"""The ffn commands end to end on tiny models, and the FFN views."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mechit.cli import main
from mechit.commands.args import parse_indices
from mechit.errors import InputError

WORDS = "the cat sat on mat dog story about write give find make tell please answer question".split()


@pytest.fixture(scope="module")
def words_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text("\n".join(WORDS) + "\n")
    return path


def test_parse_indices():
    assert parse_indices(None, "--layers") is None
    assert parse_indices("3", "--layers") == [3]
    assert parse_indices("0, 2-4", "--layers") == [0, 2, 3, 4]
    with pytest.raises(InputError, match="--layers 'a'"):
        parse_indices("a", "--layers")
    with pytest.raises(InputError, match="range 3-1 is empty"):
        parse_indices("3-1", "--layers")


def test_ffn_rotation_and_labels_commands(tiny_pair_dirs, words_file, tmp_path, capsys):
    base, tuned = map(str, tiny_pair_dirs)
    out = tmp_path / "pair"
    assert main(["ffn-rotation", "--base", base, "--tuned", tuned, "--out", str(out), "--k", "4",
                 "--n-components", "5", "--top-k", "3", "--words", str(words_file), "--n-changed", "2"]) == 0
    summary = pd.read_parquet(out / "rotation_summary.parquet")
    assert summary["layer"].tolist() == [0, 1]
    assert ((summary["max_angle_deg"] > 0) & (summary["max_angle_deg"] <= 90)).all()
    assert len(pd.read_parquet(out / "rotation_changed.parquet")) == 4
    for m in ("base", "tuned"):
        concepts = pd.read_parquet(out / m / "concepts.parquet")
        assert len(concepts) == 2 * 5 * 3 and set(concepts["word"]) <= set(WORDS)
    for name in ("principal_angles", "neuron_cosines"):
        assert (out / f"{name}.png").stat().st_size > 1000 and (out / f"{name}.svg").exists()
    assert json.loads((out / "meta.json").read_text())["k"] == 4

    assert main(["ffn-labels", str(out)]) == 0
    labels = pd.read_parquet(out / "labels.parquet")
    assert len(labels) == 2 * 2 * 5 * 2 * 5  # models x layers x components x questions x seeds (5 by default)
    assert sorted(labels["seed"].unique()) == [0, 1, 2, 3, 4]
    table = pd.read_csv(out / "label_table.csv")
    task = table[table.question == "task"]
    assert task["base"].sum() == pytest.approx(1.0) and task["tuned"].sum() == pytest.approx(1.0)
    assert (out / "label_proportions_task.png").exists() and (out / "label_proportions_level.svg").exists()
    assert set(pd.read_csv(out / "label_table_groups.csv")["layer_group"]) == {0}


def test_ffn_command_and_errors(tiny_pair_dirs, words_file, tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["ffn", "--model", str(tiny_pair_dirs[0]), "--out", str(out), "--layers", "1", "--n-components",
                 "3", "--top-k", "2", "--words", str(words_file), "--neurons", "4", "--neuron-k", "5"]) == 0
    neurons = pd.read_parquet(out / "neurons.parquet")
    assert neurons["neuron"].nunique() == 4 and set(neurons["layer"]) == {1}
    assert (neurons.groupby(["neuron", "direction"]).size() == 5).all()
    assert main(["ffn-labels", str(out)]) == 0
    assert not (out / "label_table.csv").exists()  # one model: proportions only
    # bad input: one line on stderr, exit 2
    assert main(["ffn", "--model", str(tiny_pair_dirs[0]), "--out", str(out), "--n-components", "999", "--top-k", "2",
                 "--words", str(words_file)]) == 2
    assert "exceeds the rank" in capsys.readouterr().err
    assert main(["ffn-labels", str(tmp_path / "nowhere")]) == 2
    assert "run `mechit ffn`" in capsys.readouterr().err
    assert main(["ffn-labels", str(out), "--labeller", "endpoint"]) == 2
    assert "--url" in capsys.readouterr().err
    assert main(["ffn-labels"]) == 2
    assert "or --check-set" in capsys.readouterr().err
    assert main(["ffn-labels", str(out), "--check-set", "--labeller", "lexicon"]) == 2
    assert "leave out DIR" in capsys.readouterr().err


def test_neuron_score_grid_fills_between_the_lists():
    from mechit.views.ffn import neuron_score_grid

    table = pd.DataFrame({"model": ["base"] * 4 + ["tuned"] * 4, "layer": 0, "neuron": 5,
                          "direction": ["top", "top", "bottom", "bottom"] * 2, "rank": [0, 1] * 4,
                          "word": ["a", "b", "y", "z", "a", "c", "y", "w"],
                          "score": [9.0, 7.0, -4.0, -6.0, 8.0, 6.0, -1.0, -3.0]})
    models, words, neurons, grid = neuron_score_grid(table)
    assert (models, words, neurons) == (["base", "tuned"], ["a", "b", "y", "z", "c", "w"], [5])
    # base lacks c and w: midpoint of its weakest top (7) and weakest bottom (-4) = 1.5; tuned: (6 - 1) / 2
    assert grid[0, :, 0].tolist() == [9.0, 7.0, -4.0, -6.0, 1.5, 1.5]
    assert grid[1, :, 0].tolist() == [8.0, 2.5, -1.0, 2.5, 6.0, -3.0]
    with pytest.raises(InputError, match=r"neuron\(s\) \[6\]"):
        neuron_score_grid(table, neurons=[6])
    with pytest.raises(InputError, match="pass layer="):
        neuron_score_grid(pd.concat([table, table.assign(layer=1)]))


def test_neuron_view_and_label_figure(tiny_pair_dirs, tmp_path):
    from mechit.ffn.labels import label_proportions
    from mechit.ffn.neurons import neuron_tokens
    from mechit.models import ModelPair, load_model
    from mechit.views.ffn import neuron_score_grid, neuron_view, plot_label_proportions, save_figure

    pair = ModelPair(load_model(tiny_pair_dirs[0]), load_model(tiny_pair_dirs[1]))
    table = pair.run(neuron_tokens, 0, [1, 7], k=3)
    view = neuron_view(table, k=3)
    html = view.save(tmp_path / "neurons.html").read_text()
    assert "TopkTokens" in html and "Model" in html
    # every model's listed words carry that model's own scores
    models, words, neurons, grid = neuron_score_grid(table)
    assert models == ["base", "tuned"] and neurons == [1, 7]
    for row in table.itertuples():
        assert grid[models.index(row.model), words.index(row.word), neurons.index(row.neuron)] == row.score
    labels = pd.DataFrame({"model": ["base", "tuned"] * 4, "layer": [0, 0, 4, 4] * 2, "component": [0, 0, 0, 0, 1, 1, 1, 1],
                           "seed": 0, "question": "task", "label": ["math", "none", "none", "coding"] * 2})
    fig = plot_label_proportions(label_proportions(labels))
    assert [ax.get_title() for ax in fig.axes] == ["writing", "math", "coding", "translation"]
    assert all(p.exists() for p in save_figure(fig, tmp_path / "fig"))
