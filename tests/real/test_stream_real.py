"""SmolLM2-135M-Instruct streamed from its GGUF file (mechit/arch/gguf_tensors.py): every
weight view, and the head pairs, neuron tokens, FFN concepts and rotation built on them,
equal the loaded model's exactly (the file is Q4_1: dequantised, Q/K rows reverse-permuted,
tied embeddings). The organism's safetensors side is tests/unit/models/test_stream.py."""

from __future__ import annotations

from dataclasses import fields

import pytest
from pandas.testing import assert_frame_equal

from mechit.data.wordlists import frequent_words
from mechit.ffn.concepts import ffn_concepts
from mechit.ffn.neurons import neuron_tokens
from mechit.ffn.rotation import ffn_rotation
from mechit.heads.pairs import head_pairs
from mechit.models import ModelPair, open_streamed
from weight_views import assert_weight_views_equal

LAYERS = [0, 17, 29]
WORDS = frequent_words(400)


@pytest.fixture(scope="module")
def streamed(smollm2_path):
    return open_streamed(smollm2_path, device="cpu")


def test_weight_views_equal_loaded(streamed, smollm2):
    assert not streamed.has("W_U")  # no output.weight in the file: tied embeddings, as transformers loads it
    assert_weight_views_equal(streamed, smollm2, LAYERS)


@pytest.mark.parametrize("method", ["qk-dims", "qk", "ov"])
def test_head_pairs_equal_loaded(streamed, smollm2, method):
    options = dict(method=method, layers=[0, 29], heads=[0, 4], top_k=20, similarity="embedding", progress=False)
    loaded = head_pairs(smollm2, WORDS, **options)
    assert len(loaded) > 0
    assert_frame_equal(head_pairs(streamed, WORDS, **options), loaded)


def test_ffn_analyses_and_rotation_equal_loaded(streamed, smollm2):
    options = dict(n_components=10, top_k=5, words=WORDS, progress=False)
    loaded = ffn_concepts(smollm2, LAYERS, **options)
    assert_frame_equal(ffn_concepts(streamed, LAYERS, **options), loaded)
    assert_frame_equal(neuron_tokens(streamed, LAYERS, list(range(8)), k=5),
                       neuron_tokens(smollm2, LAYERS, list(range(8)), k=5))
    streamed_pair, loaded_pair = ModelPair(streamed, streamed), ModelPair(smollm2, smollm2)
    got = ffn_rotation(streamed_pair, streamed_pair.run(ffn_concepts, LAYERS[:2], **options), LAYERS[:2], k=5,
                       progress=False)
    want = ffn_rotation(loaded_pair, loaded_pair.run(ffn_concepts, LAYERS[:2], **options), LAYERS[:2], k=5,
                        progress=False)
    for field in fields(want):
        assert_frame_equal(getattr(got, field.name), getattr(want, field.name))
