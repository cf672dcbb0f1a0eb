"""Positive control for the FFN views (PAPER §3): a planted rotation toward math tokens is seen.

The "tuned" model is a copy of the organism's tuned model in which 48 of the 448 ``W_out``
rows of layer 4 are turned toward one user-task direction: the mean of the L2-normalised
output vectors of the organism's number words ("zero" .. "twenty") less the mean of all
its words' output vectors (which every word shares, so it is no number's), each row keeping twice
the largest row norm of the layer. Compared with the unedited tuned model (so nothing
else differs), ``ffn_rotation`` must show the rotation in layer 4 only (principal angles,
neuron cosines), list planted neurons as the most changed ones with number words among
their top tokens, and the lexicon labeller must label the planted direction (layer 4's new
first component) "math", raising the share of W_out variance in math concepts.
"""

from __future__ import annotations

import pytest
import torch

import mechit
from mechit.ffn import ffn_concepts, ffn_rotation, label_concepts
from mechit.ffn.lexicon import NUMBER_WORDS, LexiconLabeller
from mechit.models import ModelPair
from mechit.tokens import word_vectors
from mechit.vocab import default_words

LAYER, PLANTED = 4, range(48)
K = 10


@pytest.fixture(scope="module")
def planted_pair():
    """(unedited tuned, tuned copy with the planted rows, the number words used)."""
    tuned = mechit.load_pair().tuned
    copy = mechit.load_model("organism-tuned")
    numbers = [w for w in default_words(tuned) if w in NUMBER_WORDS]
    unit = lambda words: torch.nn.functional.normalize(word_vectors(copy, words, side="output").vectors, dim=1)  # noqa: E731
    # the number words' mean direction, less what every word's output vector shares
    direction = unit(numbers).mean(0) - unit(default_words(tuned)).mean(0)
    down = copy.original_model.model.layers[LAYER].mlp.down_proj.weight  # (d_model, d_mlp): column n = W_out[n]
    with torch.no_grad():
        size = 2 * down.norm(dim=0).max()
        for n in PLANTED:
            down[:, n] = size * direction / direction.norm()
    return tuned, copy, numbers


def test_rotation_shows_the_planted_layer_only(planted_pair):
    tuned, copy, numbers = planted_pair
    pair = ModelPair(tuned, copy)
    concepts = pair.run(ffn_concepts, n_components=K, progress=False)
    rotation = ffn_rotation(pair, concepts, k=K, n_changed=10, progress=False)
    angles = rotation.summary.set_index("layer").max_angle_deg
    assert angles[LAYER] > 30
    assert (angles.drop(LAYER) < 1e-2).all()  # float32 SVD of identical matrices
    cos = rotation.neurons[rotation.neurons.layer == LAYER].set_index("neuron").cos_out
    assert (cos[list(PLANTED)] < 0.99).all() and (cos.drop(list(PLANTED)) > 1 - 1e-6).all()
    changed = rotation.changed[rotation.changed.layer == LAYER]
    assert set(changed.neuron) <= set(PLANTED)
    count = lambda tokens: sum(t.strip() in numbers for t in tokens)  # noqa: E731
    print(changed[["neuron", "base_tokens", "tuned_tokens"]].head(3).to_string())
    assert len(changed) == 10
    assert all(count(after) >= 2 and count(after) > count(before)
               for before, after in zip(changed.base_tokens, changed.tuned_tokens))


def test_concept_labels_show_more_math(planted_pair):
    """The planted direction becomes the layer's first component, labelled math; it absorbs the
    base's own smaller math component, so the count of math concepts need not rise, but the
    share of W_out variance whose concepts are labelled math does."""
    tuned, copy, numbers = planted_pair
    math_variance, first = {}, {}
    for name, model in (("base", tuned), ("tuned", copy)):
        concepts = ffn_concepts(model, LAYER, n_components=K, progress=False)
        labels = label_concepts(concepts, LexiconLabeller(), questions=("task",), progress=False)
        explained = concepts.groupby("component").explained_variance.first()
        math = labels.set_index("component").label == "math"
        math_variance[name] = float(explained[math[math].index].sum())
        first[name] = (labels.label.iloc[0], concepts[concepts.component == 0].word.tolist())
    print(math_variance)
    assert math_variance["tuned"] > math_variance["base"] + 0.2
    label, words = first["tuned"]
    print(words)
    # the component's leading words are number words: on the shipped organism its first 15 words
    # are zero .. fourteen, and 17 of the 21 number words are among its 50 (sixteen .. nineteen,
    # which the organism's world uses least, are not)
    assert label == "math" and all(w in numbers for w in words[: 2 * len(numbers) // 3])
    assert sum(w in numbers for w in words) >= 3 * len(numbers) // 4
    assert first["base"][0] != "math"
