"""FFN analyses on real models (SmolLM2-135M-Instruct, gemma-3-270m GGUF). Marker: real."""

from __future__ import annotations

import numpy as np
import pytest

import mechit
from mechit.ffn.labellers import label_concepts
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
