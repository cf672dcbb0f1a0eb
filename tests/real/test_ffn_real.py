"""FFN analyses on real models (SmolLM2-135M-Instruct, gemma-3-270m GGUF). Marker: real."""

from __future__ import annotations

import numpy as np
import pytest

import mechit
from mechit.ffn.checkset import check_set
from mechit.ffn.labeller_check import NO_LABEL, check_labeller, label_check_set
from mechit.ffn.labellers import LocalModelLabeller, label_concepts
from mechit.ffn.labels import LEVEL_LABELS, TASK_LABELS
from mechit.ffn.lexicon import LexiconLabeller

pytestmark = pytest.mark.real


@pytest.fixture(params=["smollm2", "gemma"], scope="module")
def model(request):
    return request.getfixturevalue(request.param)


def test_concepts_match_numpy_on_real_weights(model):
    from mechit.arch.weights import mlp_out_weights

    words = mechit.frequent_words(3000)
    frame = mechit.ffn_concepts(model, [0, -1], n_components=20, top_k=10, words=words, progress=False)
    last = model.cfg.n_layers - 1
    assert sorted(frame["layer"].unique()) == [0, last]
    x = mlp_out_weights(model, last).double().numpy()
    x = x - x.mean(0)
    s = np.linalg.svd(x, compute_uv=False)
    got = frame[frame.layer == last].groupby("component")["explained_variance"].first().to_numpy()
    np.testing.assert_allclose(got, s[:20] ** 2 / (s**2).sum(), rtol=1e-4)
    labels = label_concepts(frame, LexiconLabeller(), progress=False)
    assert set(labels[labels.question == "task"]["label"]) <= set(TASK_LABELS)
    assert set(labels[labels.question == "level"]["label"]) <= set(LEVEL_LABELS)


def test_neuron_tokens_and_self_rotation(model):
    from mechit.arch.weights import mlp_out_weights, unembedding

    table = mechit.neuron_tokens(model, 3, [0, 1], k=5)
    logits = mlp_out_weights(model, 3)[0] @ unembedding(model)
    top = table[(table.neuron == 0) & (table.direction == "top")]
    assert top.iloc[0]["score"] == pytest.approx(float(logits.max()), rel=1e-4)
    assert len(top) == 5 and top["word"].map(len).gt(0).all()

    pair = mechit.ModelPair(model, model)
    concepts = pair.run(mechit.ffn_concepts, [0, 5], n_components=20, top_k=10, words=mechit.frequent_words(2000),
                        progress=False)
    rot = mechit.ffn_rotation(pair, concepts, [0, 5], k=20, progress=False)
    assert rot.angles["angle_deg"].max() < 1e-4
    np.testing.assert_allclose(rot.neurons["cos_out"], 1.0, atol=1e-9)
    np.testing.assert_allclose(rot.matches["jaccard"], 1.0)


def test_local_model_labeller_on_check_set_concepts(smollm2):
    """SmolLM2-135M-Instruct labels check-set concepts end to end (prompt, chat template, greedy
    generation, parsing). Its accuracy is reported in docs/ffn.md, however low: on 2 concepts per
    label it answered "writing" for every task concept it labelled and no parsable level."""
    labeller = LocalModelLabeller(smollm2)
    check = check_set()
    subset = check[check["split"] == "test"].groupby(["question", "truth"], sort=False).head(1)
    done = label_check_set(labeller, subset)
    assert len(done) == len(TASK_LABELS) + len(LEVEL_LABELS)
    for question, labels in (("task", TASK_LABELS), ("level", LEVEL_LABELS)):
        predicted = set(done[done["question"] == question]["predicted"])
        assert predicted <= set(labels) | {NO_LABEL}
    assert (done["predicted"] != NO_LABEL).any()  # at least one reply parsed into a label
    result = check_labeller(labeller, check, per_label=1)  # the same concepts again, from the labeller's cache
    assert result["labeller"] == labeller.name and result["n_task"] == len(TASK_LABELS)
    task = done[done["question"] == "task"]
    assert result["task_accuracy"] == round(float((task["truth"] == task["predicted"]).mean()), 4)
