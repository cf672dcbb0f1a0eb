"""Positive control for the head-pair method (PAPER §2): a relation planted in one head is found.

The tuned model is a copy of the organism's tuned model in which two query/key
dimensions of one head (layer 3, head 5) are overwritten so that the query of the
instruction verb "summarize" pairs with the key of a word related to it (the word most
similar to it under the similarity source, above both words' thresholds): on both
dimensions ``H_q[verb, r] > 0`` and ``H_k[key, r] > 0`` dominate the head. Compared with the
organism's base model, ``head_pairs`` must list the pair on both dimensions (head
knowledge), ``head_change_scores`` must rank that head first, and ``verb_fractions`` must
count the verb up in it. The hand-set weights of ``tests/unit/test_heads.py`` stay the
exact-value checks; this one plants into a trained model, beside every other head.
"""

from __future__ import annotations

import pytest
import torch

import mechit
from mechit.arch.weights import kv_head, qk_weights
from mechit.heads import head_change_scores, head_knowledge, head_pairs, verb_fractions
from mechit.heads.similarity import EmbeddingSimilarity, unit_rows, word_thresholds
from mechit.tokens import word_vectors
from mechit.vocab import default_words

LAYER, HEAD, DIMS, VERB = 3, 5, (0, 1), "summarize"


@pytest.fixture(scope="module")
def planted():
    """(base, planted tuned copy, words, similarity source, key word)."""
    pair = mechit.load_pair()
    tuned = mechit.load_model("organism-tuned")  # a fresh copy: the edit stays out of load_pair's models
    words = default_words(pair.base)
    source = EmbeddingSimilarity(pair.base)
    unit = unit_rows(source.vectors(words))
    thresholds = word_thresholds(unit, n_frequent=3000)
    v = words.index(VERB)
    similarity = unit @ unit[v]
    related = (similarity > thresholds) & (similarity > thresholds[v])
    related[v] = False
    key = words[int(torch.where(related, similarity, -2.0).argmax())]
    vectors = word_vectors(tuned, [VERB, key]).vectors  # (2, d_model)
    attention = tuned.original_model.model.layers[LAYER].self_attn
    norm = tuned.original_model.model.layers[LAYER].input_layernorm.weight.detach().float()
    d_head, kv = tuned.cfg.d_head, kv_head(tuned, HEAD)
    before = qk_weights(tuned, LAYER)
    with torch.no_grad():
        for r in DIMS:  # W_Q[:, r] ∝ verb vector, W_K[:, r] ∝ key vector (input norm scale divided out)
            attention.q_proj.weight[HEAD * d_head + r] = 8 * vectors[0] / vectors[0].norm() ** 2 / norm
            attention.k_proj.weight[kv * d_head + r] = 8 * vectors[1] / vectors[1].norm() ** 2 / norm
    after = qk_weights(tuned, LAYER)
    changed = (after[0] != before[0]).any(dim=(1, 2))
    assert changed.tolist() == [h == HEAD for h in range(tuned.cfg.n_heads)]  # the view sees the plant
    return pair.base, tuned, words, source, key


def test_head_pairs_find_the_planted_relation(planted):
    base, tuned, words, source, key = planted
    pairs = head_pairs(tuned, words, layers=LAYER, heads=HEAD, similarity=source, progress=False)
    found = pairs[(pairs.word_a == VERB) & (pairs.word_b == key)]
    assert sorted(found.dim.tolist()) == list(DIMS)
    assert (found.dim_rank < 2).all()  # the planted dimensions lead the head's energy order
    knowledge = head_knowledge(pairs)
    assert ((knowledge.word_a == VERB) & (knowledge.word_b == key)).any()
    untouched = head_pairs(base, words, layers=LAYER, heads=HEAD, similarity=source, progress=False)
    assert not ((untouched.word_a == VERB) & (untouched.word_b == key)).any()


def test_head_change_scores_rank_the_planted_head_first(planted):
    base, tuned, words, source, _ = planted
    pairs_base = head_pairs(base, words, layers=LAYER, similarity=source, progress=False)
    pairs_tuned = head_pairs(tuned, words, layers=LAYER, similarity=source, progress=False)
    scores = head_change_scores(pairs_base, pairs_tuned)
    top = scores.iloc[0]
    assert (top["layer"], top["head"]) == (LAYER, HEAD)
    assert top["instruction_change"] > 0 and top["shift"] > 0
    fractions = verb_fractions(pairs_base, pairs_tuned)
    verb = fractions[fractions.verb == VERB].iloc[0]
    assert verb["kind"] == "instruction" and verb["n_up"] >= 1
