"""mechit.ffn.neurons and mechit.ffn.concepts: neuron tokens and principal-component concepts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechit.errors import IncompatiblePairError, InputError
from mechit.ffn.concepts import concept_words, normalise_rows, principal_components
from mechit.ffn.neurons import group_ranked_tokens, neuron_token_table, neuron_tokens, top_tokens, word_key
from mechit.models import ModelPair


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- pure maths


@pytest.mark.parametrize("shape", [(40, 12), (12, 40)])  # tall (XᵀX) and wide (XXᵀ) paths
def test_principal_components_match_numpy_svd(shape):
    w = torch.randn(*shape, generator=_gen()) + 3.0  # large mean: centring matters
    pc = principal_components(w, 8)
    x = w.double().numpy()
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=True)
    np.testing.assert_allclose(pc.explained.numpy(), (s[:8] ** 2) / (s**2).sum(), rtol=1e-5)
    np.testing.assert_allclose(pc.singular_values.numpy(), s[:8], rtol=1e-5)
    # directions equal up to sign
    dots = (pc.directions.double().numpy() * vt[:8]).sum(axis=1)
    np.testing.assert_allclose(np.abs(dots), 1.0, atol=1e-5)
    assert pc.rank == min(shape[0] - 1, shape[1])


def test_principal_components_rank_error_names_the_rank():
    # 5 rows in 10 dims: centred rank is 4
    w = torch.randn(5, 10, generator=_gen(1))
    assert principal_components(w, 4).rank == 4
    with pytest.raises(InputError, match=r"n_components=5 exceeds the rank 4"):
        principal_components(w, 5)
    # a rank-1 centred matrix
    w1 = torch.outer(torch.arange(6.0), torch.ones(3))
    with pytest.raises(InputError, match="rank 1"):
        principal_components(w1, 2)


def test_concept_words_is_dense_abs_projection():
    dirs = normalise_rows(torch.randn(7, 16, generator=_gen(2)))
    words = normalise_rows(torch.randn(300, 16, generator=_gen(3)))
    scores, idx = concept_words(dirs, words, 10, chunk=3)
    dense = (dirs @ words.T).numpy()
    for k in range(7):
        expected = np.argsort(-np.abs(dense[k]), kind="stable")[:10]
        assert idx[k].tolist() == expected.tolist()
        np.testing.assert_allclose(scores[k].numpy(), dense[k, expected], rtol=1e-6)
    with pytest.raises(InputError, match="top_k=301"):
        concept_words(dirs, words, 301)


def test_top_tokens_bottom_and_chunking():
    vecs = torch.randn(9, 8, generator=_gen(4))
    w_u = torch.randn(8, 50, generator=_gen(5))
    vals, idx = top_tokens(vecs, w_u, 5, largest=False, chunk=2)
    logits = vecs @ w_u
    ref = logits.sort(dim=1).indices[:, :5]
    assert torch.equal(idx, ref)
    assert torch.allclose(vals, logits.gather(1, ref))


def test_word_key_and_grouping():
    assert word_key(" Hello ") == "Hello"
    assert word_key("\t") == "\\t"
    vocab = [" cat", "cat", "dog", " dog", "emu"]
    grouped = group_ranked_tokens([1, 2, 0, 4, 3], [5.0, 4.0, 3.0, 2.0, 1.0], vocab, 2)
    # "emu" is a third word: dropped; " dog" (id 3) still joins "dog"
    assert grouped == [("cat", 5.0, [1, 0]), ("dog", 4.0, [2, 3])]


def test_neuron_token_table_against_brute_force():
    torch.manual_seed(0)
    d, vocab_size = 6, 40
    w_out = torch.randn(5, d, generator=_gen(6))
    w_u = torch.randn(d, vocab_size, generator=_gen(7))
    # token 2i and 2i+1 decode to the same word ("w{i}" with and without a leading space)
    vocab = [(" " if t % 2 else "") + f"w{t // 2}" for t in range(vocab_size)]
    table = neuron_token_table(w_out, w_u, vocab, [1, 3], 4, layer=7)
    assert set(table["layer"]) == {7}
    logits = (w_out @ w_u).numpy()
    for neuron in (1, 3):
        for direction, sign in (("top", 1), ("bottom", -1)):
            got = table[(table.neuron == neuron) & (table.direction == direction)]
            # brute force: per word, best score among its two tokens; rank words
            per_word = {}
            for t in range(vocab_size):
                s = sign * logits[neuron, t]
                per_word[f"w{t // 2}"] = max(per_word.get(f"w{t // 2}", -np.inf), s)
            expected = sorted(per_word, key=lambda w: -per_word[w])[:4]
            assert got["word"].tolist() == expected
            assert got["rank"].tolist() == [0, 1, 2, 3]
            np.testing.assert_allclose(got["score"].to_numpy(), [sign * per_word[w] for w in expected], rtol=1e-5)
            for word, ids in zip(got["word"], got["token_ids"]):
                assert {vocab[i].strip() for i in ids} == {word}


def test_neuron_token_table_widens_search_when_words_repeat():
    # 30 tokens, all decode to "x" except one: 4*k candidates hold a single word
    vocab = ["x"] * 29 + ["y"]
    w_u = torch.cat([torch.linspace(10, 1, 29), torch.tensor([0.0])])[None, :]
    table = neuron_token_table(torch.ones(1, 1), w_u, vocab, [0], 2)
    top = table[table.direction == "top"]
    assert top["word"].tolist() == ["x", "y"]
    assert len(top.iloc[0]["token_ids"]) == 29


# ---------------------------------------------------------------- model wrappers


@pytest.fixture(scope="module")
def models(tiny_pair_dirs):
    from mechit.models import load_model

    return load_model(tiny_pair_dirs[0]), load_model(tiny_pair_dirs[1])


WORDS = "the cat sat on mat dog story about write give find make tell please answer question".split()


def test_neuron_tokens_model_equals_brute_force(models):
    import mechit
    from mechit.ffn.neurons import vocab_strings
    from mechit.arch.weights import mlp_out_weights, unembedding

    model = models[0]
    table = mechit.neuron_tokens(model, 1, [0, 5], k=3)
    logits = mlp_out_weights(model, 1)[[0, 5]] @ unembedding(model)
    vocab = vocab_strings(model.tokenizer)
    top0 = table[(table.neuron == 0) & (table.direction == "top")]
    best = int(logits[0].argmax())
    assert top0.iloc[0]["word"] == word_key(vocab[best])
    assert top0.iloc[0]["score"] == pytest.approx(float(logits[0, best]), rel=1e-5)
    bottom5 = table[(table.neuron == 5) & (table.direction == "bottom")]
    assert bottom5.iloc[0]["score"] == pytest.approx(float(logits[1].min()), rel=1e-5)


def test_neuron_tokens_of_a_pair_through_pair_run(models):
    import mechit

    single = {m: mechit.neuron_tokens(models[i], 0, [2], k=3) for i, m in enumerate(("base", "tuned"))}
    both = ModelPair(*models).run(neuron_tokens, 0, [2], k=3)
    assert list(both.columns) == ["model", "layer", "neuron", "direction", "rank", "word", "score", "token_ids"]
    for m in ("base", "tuned"):
        side = both[both.model == m].reset_index(drop=True)
        assert side["word"].tolist() == single[m]["word"].tolist()
        assert side["score"].tolist() == single[m]["score"].tolist()
    # a negative layer counts from the end (2 layers: -1 is layer 1)
    last = mechit.neuron_tokens(models[0], -1, [2], k=3)
    assert set(last["layer"]) == {1}
    assert last["word"].tolist() == mechit.neuron_tokens(models[0], 1, [2], k=3)["word"].tolist()
    with pytest.raises(InputError, match="neuron 999"):
        mechit.neuron_tokens(models[0], 0, [999])
    with pytest.raises(InputError, match="layer 5"):
        mechit.neuron_tokens(models[0], 5, [0])
    with pytest.raises(InputError, match="neurons is empty"):
        mechit.neuron_tokens(models[0], 0, [])


def test_ffn_concepts_model_matches_numpy(models):
    import mechit
    from mechit.arch.weights import mlp_out_weights
    from mechit.tokens import word_vectors

    model = models[0]
    frame = mechit.ffn_concepts(model, [1], n_components=4, top_k=5, words=WORDS, progress=False)
    assert list(frame.columns) == ["layer", "component", "explained_variance", "rank", "word", "score"]
    assert len(frame) == 4 * 5
    x = mlp_out_weights(model, 1).double().numpy()
    x = x - x.mean(0)
    _, s, vt = np.linalg.svd(x)
    np.testing.assert_allclose(
        frame.groupby("component")["explained_variance"].first().to_numpy(), s[:4] ** 2 / (s**2).sum(), rtol=1e-5
    )
    wv = word_vectors(model, WORDS, side="output")
    e = wv.vectors.double().numpy()
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    for k in range(4):
        proj = e @ vt[k]
        order = np.argsort(-np.abs(proj))[:5]
        got = frame[frame.component == k]
        assert got["word"].tolist() == [wv.words[i] for i in order]
        # sign of v_k is arbitrary: compare |score|
        np.testing.assert_allclose(got["score"].abs().to_numpy(), np.abs(proj[order]), rtol=1e-4)


def test_ffn_concepts_bad_input(models):
    import mechit

    with pytest.raises(InputError, match="exceeds the rank"):
        mechit.ffn_concepts(models[0], [0], n_components=300, top_k=3, words=WORDS, progress=False)
    with pytest.raises(InputError, match="top_k"):
        mechit.ffn_concepts(models[0], [0], n_components=3, top_k=500, words=WORDS, progress=False)


def test_pair_with_different_d_mlp_is_rejected(tiny_dirs, models):
    from mechit.models import load_model

    from mechit.ffn.rotation import check_same_mlp

    wide = load_model(tiny_dirs("llama", "llama-wide", intermediate_size=96))
    with pytest.raises(IncompatiblePairError, match="d_mlp"):
        check_same_mlp(models[0], wide)
    check_same_mlp(*models)  # same shapes: no error
