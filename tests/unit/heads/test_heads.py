"""Head pairs: pure math against loop references, and a hand-built model whose weights
make known word pairs come out first for every method."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import mechit.heads.kernels as kernels
from mechit.errors import InputError
from mechit.heads.kernels import (
    _candidates,
    blockwise_topk,
    compact_rows,
    qk_dim_pairs_group,
)
from mechit.heads.pairs import (
    energy_order,
    head_knowledge,
    head_pairs,
    head_projections,
    qk_dim_pairs,
)
from mechit.heads.reference import qk_dim_pairs_reference
from mechit.heads.similarity import unit_rows, word_thresholds

# ----------------------------------------------------------------------------- pure math


def _random_head(seed, n=400, d=32, dh=8, sim_dim=16):
    g = torch.Generator().manual_seed(seed)
    vectors = torch.randn(n, d, generator=g)
    h_q = vectors @ torch.randn(d, dh, generator=g)
    h_k = vectors @ torch.randn(d, dh, generator=g)
    # similarity vectors correlated with the embeddings, so some pairs pass the thresholds
    unit = unit_rows(vectors[:, :sim_dim] + 0.5 * torch.randn(n, sim_dim, generator=g))
    return h_q, h_k, unit, word_thresholds(unit, n_frequent=300)


@pytest.mark.parametrize("seed, threads", [(0, 1), (1, 2), (2, 3)])
def test_vectorised_equals_loop_reference(seed, threads):
    h_q, h_k, unit, thr = _random_head(seed)
    fast = qk_dim_pairs(h_q, h_k, unit, thr, top_k=40, threads=threads)
    slow = qk_dim_pairs_reference(h_q, h_k, unit, thr, top_k=40)
    assert len(slow["a"]) > 20  # the comparison is not vacuous
    for key in slow:
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)


def _tied_head(seed, n, dh=6):
    """H_q/H_k with many equal |values|: a coarse grid, repeated and negated words, zeros."""
    g = torch.Generator().manual_seed(seed)
    h = torch.round(torch.randn(n, 2 * dh, generator=g) * 3) / 3
    h[n // 2 :] = h[: n - n // 2] * torch.where(torch.rand(n - n // 2, 1, generator=g) < 0.5, -1.0, 1.0)
    h[torch.randint(0, n, (n // 5,), generator=g)] = 0.0
    return h[:, :dh].contiguous(), h[:, dh:]  # H_k a strided view, as head_pairs passes it


@pytest.mark.parametrize("n, k", [(3000, 100), (500, 100), (90, 40), (7, 7), (50, 1)])
def test_candidates_equal_torch_topk_with_ties(n, k):
    for h in _tied_head(n, n):
        idx, values, _ = _candidates(h, k)
        for r in range(h.shape[1]):  # same words, same order, ties included
            assert idx[r].tolist() == torch.topk(h[:, r].abs(), k).indices.tolist()
            assert np.array_equal(values[r], h[idx[r], r].numpy())


def test_candidates_with_nan_follow_torch_topk():
    h = torch.randn(1000, 4, generator=torch.Generator().manual_seed(0))
    h[[5, 700], 1] = float("nan")
    idx, _, _ = _candidates(h, 50)
    for r in range(4):
        assert idx[r].tolist() == torch.topk(h[:, r].abs(), 50).indices.tolist()


@pytest.mark.parametrize("seed, threads", [(0, 1), (1, 2)])
def test_vectorised_equals_loop_reference_with_ties(seed, threads):
    h_q, h_k = _tied_head(seed, 600)
    unit = unit_rows(torch.randn(600, 8, generator=torch.Generator().manual_seed(seed)))
    unit[300:] = unit[:300]  # repeated words: equal similarities, so ties in the ranking too
    thr = word_thresholds(unit, n_frequent=300) - 0.3
    fast = qk_dim_pairs(h_q, h_k, unit, thr, top_k=60, threads=threads)
    slow = qk_dim_pairs_reference(h_q, h_k, unit, thr, top_k=60)
    assert len(slow["a"]) > 100 and slow["knowledge"].any()
    for key in slow:
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)


def test_pairs_obey_the_paper_constraints():
    h_q, h_k, unit, thr = _random_head(3)
    out = qk_dim_pairs(h_q, h_k, unit, thr, top_k=40)
    a, b, dims = torch.as_tensor(out["a"]), torch.as_tensor(out["b"]), torch.as_tensor(out["dim"])
    assert (h_q[a, dims] * h_k[b, dims] > 0).all()
    sims = (unit[a].double() * unit[b].double()).sum(-1)
    assert torch.equal(sims, torch.as_tensor(out["similarity"]))
    assert (sims > thr[a]).all() and (sims > thr[b]).all() and (a != b).all()
    for dim in set(out["dim"].tolist()):  # both words among the top 40 of that dimension
        rows = out["dim"] == dim
        assert set(out["a"][rows]) <= set(h_q[:, dim].abs().topk(40).indices.tolist())
        assert set(out["b"][rows]) <= set(h_k[:, dim].abs().topk(40).indices.tolist())
        assert (np.diff(out["similarity"][rows]) <= 0).all()


def _group(seed, n=500, d=24, dh=8, heads=3):
    """Query heads sharing one key head (GQA), their H_q side by side as head_pairs passes them."""
    g = torch.Generator().manual_seed(seed)
    vectors = torch.randn(n, d, generator=g)
    h_q = head_projections(vectors, torch.randn(heads, d, dh, generator=g))  # (n, heads, dh)
    h_k = vectors @ torch.randn(d, dh, generator=g)
    unit = unit_rows(vectors[:, :12] + 0.5 * torch.randn(n, 12, generator=g))
    return h_q, h_k, unit, word_thresholds(unit, n_frequent=300)


@pytest.mark.parametrize("seed, threads", [(0, 1), (1, 2), (2, 3)])
def test_group_equals_loop_reference_per_head(seed, threads):
    h_q, h_k, unit, thr = _group(seed)
    found = qk_dim_pairs_group(h_q, h_k, compact_rows(unit), thr, top_k=40, threads=threads)
    assert len(found) == 3
    for slot, fast in enumerate(found):
        slow = qk_dim_pairs_reference(h_q[:, slot], h_k, unit, thr, top_k=40)
        assert len(slow["a"]) > 20 and slow["knowledge"].any()  # not vacuous
        for key in slow:
            np.testing.assert_array_equal(fast[key], slow[key], err_msg=f"head {slot} {key}")


def test_group_with_ties_and_lexsort_order_equals_reference(monkeypatch):
    """Tied |H| and similarities, and the ordering by np.lexsort used when the packed sort
    key would not fit its bits (forced here by lowering the limit)."""
    h_k, _ = _tied_head(5, 600)
    h_q = torch.stack(_tied_head(6, 600) + _tied_head(7, 600)[:1], 1)  # (600, 3, 6)
    unit = unit_rows(torch.randn(600, 8, generator=torch.Generator().manual_seed(5)))
    unit[300:] = unit[:300]
    thr = word_thresholds(unit, n_frequent=300) - 0.3
    packed = qk_dim_pairs_group(h_q, h_k, unit, thr, top_k=60)
    monkeypatch.setattr(kernels, "_KEY_BITS", 40)
    for slot, fast in enumerate(qk_dim_pairs_group(h_q, h_k, unit, thr, top_k=60)):
        slow = qk_dim_pairs_reference(h_q[:, slot], h_k, unit, thr, top_k=60)
        assert len(slow["a"]) > 100
        for key in slow:
            np.testing.assert_array_equal(fast[key], slow[key], err_msg=f"head {slot} {key}")
            np.testing.assert_array_equal(packed[slot][key], slow[key], err_msg=f"head {slot} {key}")


@pytest.mark.parametrize("d", [1, 2, 64, 192])
def test_candidates_square_sums_have_energy_order_bits(d):
    h = torch.randn(3001, 2 * d, generator=torch.Generator().manual_seed(d)) * torch.logspace(-2, 2, 2 * d)
    for x in (h[:, :d].contiguous(), h[:, d:]):  # contiguous and a strided view
        assert np.array_equal(_candidates(x, 50)[2], np.square(x.numpy()).sum(0))


def test_compact_rows_is_exact_float16_on_the_grid():
    unit = unit_rows(torch.randn(200, 16, generator=torch.Generator().manual_seed(0)))
    half = compact_rows(unit)
    assert half.dtype == torch.float16 and torch.equal(half.float(), unit)
    assert compact_rows(unit + 1e-4).dtype == torch.float32  # off the grid: kept as float32
    h_q, h_k, unit, thr = _random_head(4)
    fast, slow = qk_dim_pairs(h_q, h_k, compact_rows(unit), thr, top_k=40), qk_dim_pairs(h_q, h_k, unit, thr, top_k=40)
    for key in slow:
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)


def test_energy_order_ranks_dimensions_by_sum_of_squares():
    h_q = torch.tensor([[1.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    h_k = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    assert energy_order(h_q, h_k).tolist() == [1, 2, 0]  # energies 2, 9, 4


@pytest.mark.parametrize("block_entries", [1, 7, 50, 10_000])
def test_blockwise_topk_equals_dense(block_entries):
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(23, 5, generator=g), torch.randn(5, 31, generator=g)
    values, rows, cols = blockwise_topk(left, right, 17, block_entries=block_entries)
    dense = left @ right
    expected = dense.flatten().topk(17)
    assert torch.equal(rows * 31 + cols, expected.indices)
    torch.testing.assert_close(values, expected.values)  # row blocks may round differently


def test_blockwise_topk_k_larger_than_matrix():
    values, rows, cols = blockwise_topk(torch.ones(2, 1), torch.tensor([[1.0, 2.0]]), 10, block_entries=2)
    assert values.tolist() == [2.0, 2.0, 1.0, 1.0] and rows.tolist() == [0, 1, 0, 1] and cols.tolist() == [1, 1, 0, 0]


def test_head_knowledge_counts_distinct_dimensions():
    pairs = pd.DataFrame({"layer": [0] * 4, "head": [0] * 4, "dim": [1, 2, 1, 1],
                          "word_a": ["a", "a", "c", "c"], "word_b": ["b", "b", "d", "d"],
                          "similarity": [0.3, 0.4, 0.9, 0.9]})
    assert head_knowledge(pairs)[["word_a", "word_b", "n_dims"]].values.tolist() == [["a", "b", 2]]


# ----------------------------------------------------------------------------- hand-built model

WORDS = ["cat", "dog", "translate", "french", "write", "story"]


class GroupSimilarity:
    """cat~dog, translate~french, write~story; every other word unrelated."""

    name = "groups"

    def vectors(self, words):
        groups = {"cat": 0, "dog": 0, "translate": 1, "french": 1, "write": 2, "story": 2}
        out = torch.zeros(len(words), 64)
        for i, w in enumerate(words):
            out[i, groups.get(w, i + 3)] = 1.0
        return out


@pytest.fixture(scope="module")
def designed(tiny_dirs, tmp_path_factory):
    """Tiny GQA Llama (4 query heads, 2 KV heads, d_head 16) with layer 0 set by hand.

    Word i of the list has input embedding e_i. Head 1 (KV head 0): query dim 3 and 5 read
    "cat", key dims 3 and 5 read "dog" (values 3 and 2), dim 7 pairs translate -> french
    (value 1). KV head 1 keys "story" on dim 3 and head 3 queries "write" there. OV of head 1:
    "cat" -> value dim 0 -> residual dim 63 -> the "dog" token's unembedding.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mechit.models import load_model

    src = tiny_dirs("llama")
    tok = AutoTokenizer.from_pretrained(src)
    vocab = tok.get_vocab()
    fillers = sorted(t[1:] for t in vocab if t.startswith("▁") and t[1:].isalpha() and len(t) > 4
                     and t[1:] not in WORDS)[:34]
    words = WORDS + fillers
    ids = [tok.convert_tokens_to_ids("▁" + w) for w in words]
    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        for i, t in enumerate(ids):
            emb[t] = torch.nn.functional.one_hot(torch.tensor(i), 64).float()
        layer = model.model.layers[0]
        layer.input_layernorm.weight.fill_(1.0)
        model.model.norm.weight.fill_(1.0)
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj):
            proj.weight.zero_()
        q, k = layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight  # (H*dh, d), (Hkv*dh, d)
        cat, dog, translate, french, write, story = range(6)
        q[1 * 16 + 3, cat], k[0 * 16 + 3, dog] = 3.0, 3.0
        q[1 * 16 + 5, cat], k[0 * 16 + 5, dog] = 2.0, 2.0
        q[1 * 16 + 7, translate], k[0 * 16 + 7, french] = 1.0, 1.0
        k[1 * 16 + 3, story], q[3 * 16 + 3, write] = 3.0, 3.0
        layer.self_attn.v_proj.weight[0 * 16 + 0, cat] = 2.0
        layer.self_attn.o_proj.weight[63, 1 * 16 + 0] = 1.0
        model.lm_head.weight[:, 63] = 0.0
        model.lm_head.weight[ids[dog], 63] = 5.0
    path = tmp_path_factory.mktemp("designed")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return load_model(path), words


def test_qk_dims_finds_the_designed_pairs_with_gqa(designed):
    model, words = designed
    pairs = head_pairs(model, words, layers=0, similarity=GroupSimilarity(), progress=False)
    got = pairs[["head", "dim", "dim_rank", "rank", "word_a", "word_b", "knowledge"]].values.tolist()
    assert got == [
        [1, 3, 0, 0, "cat", "dog", True],
        [1, 5, 1, 0, "cat", "dog", True],
        [1, 7, 2, 0, "translate", "french", False],
        [3, 3, 0, 0, "write", "story", False],
    ]
    assert pairs["score"].tolist() == [9.0, 4.0, 1.0, 9.0]
    assert pairs["similarity"].tolist() == [1.0] * 4
    assert set(pairs["method"]) == {"qk-dims"} and pairs.attrs["n_words"] == 40


def test_qk_dims_heads_of_one_kv_head_apart_keep_the_requested_order(designed):
    """Heads 0 and 1 read KV head 0 but are not adjacent in the request: they are taken as
    one group (a copy of their columns), and the rows follow the requested head order."""
    model, words = designed
    pairs = head_pairs(model, words, layers=0, heads=[0, 3, 1], similarity=GroupSimilarity(), progress=False)
    assert pairs[["head", "dim", "word_a", "word_b"]].values.tolist() == [
        [3, 3, "write", "story"], [1, 3, "cat", "dog"], [1, 5, "cat", "dog"], [1, 7, "translate", "french"]]


def test_qk_whole_matrix_ranks_the_designed_pair_first(designed):
    model, words = designed
    pairs = head_pairs(model, words, method="qk", layers=[0], heads=[1], top_k=3, progress=False)
    assert pairs[["word_a", "word_b"]].values.tolist()[:2] == [["cat", "dog"], ["translate", "french"]]
    assert pairs["score"].tolist()[:2] == [13.0, 1.0] and pairs["rank"].tolist() == [0, 1, 2]
    assert pairs["dim"].isna().all() and pairs["similarity"].isna().all()


def test_ov_promotes_the_designed_token(designed):
    model, words = designed
    pairs = head_pairs(model, words, method="ov", layers=0, heads=1, top_k=2, progress=False)
    first = pairs.iloc[0]
    assert (first["word_a"], first["word_b"].strip(), first["score"]) == ("cat", "dog", 10.0)
    assert pairs.iloc[1]["score"] == 0.0


def test_embedding_similarity_runs_on_the_model_embeddings(designed):
    model, words = designed
    pairs = head_pairs(model, words, layers=0, heads=[1, 3], similarity="embedding", progress=False)
    assert pairs.attrs["similarity"] == "embedding"
    assert pairs.empty  # one-hot embeddings: distinct words are unrelated
    assert list(pairs.columns) == ["method", "layer", "head", "dim", "dim_rank", "rank", "word_a", "word_b",
                                   "score", "similarity", "knowledge"]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, message", [
    (dict(words=[]), "word list is empty"),
    (dict(method="vo"), "unknown method 'vo'"),
    (dict(layers=[2]), r"layer \[2\] out of range: the model has 2 layers"),
    (dict(heads=-1), r"head \[-1\] out of range"),
    (dict(similarity="glove"), "unknown similarity 'glove'"),
    (dict(similarity="ppmi"), "needs a corpus file"),
    (dict(top_k=0), "top_k must be at least 1"),
])
def test_bad_input_is_a_clear_error(designed, kwargs, message):
    model, words = designed
    kwargs = {"words": words, **kwargs}
    with pytest.raises(InputError, match=message):
        head_pairs(model, progress=False, **kwargs)


def test_all_degenerate_words_is_a_clear_error(designed):
    model, _ = designed
    with pytest.raises(InputError, match="all 2 words have degenerate tokenisation"), pytest.warns(UserWarning):
        head_pairs(model, ["<unk>", "<unk><unk>"], progress=False)


def test_degenerate_words_are_dropped_and_counted(designed, caplog):
    model, words = designed
    with caplog.at_level("INFO", logger="mechit.heads.pairs"), pytest.warns(UserWarning):
        pairs = head_pairs(model, words + ["<unk>"], layers=0, heads=1, similarity=GroupSimilarity(), progress=False)
    assert "dropped 1 of 41 words" in caplog.text
    assert pairs.attrs["n_words"] == 40 and len(pairs) == 3


# ----------------------------------------------------------------------------- command line


def test_cli_heads_and_heads_shift(designed, tmp_path, capsys):
    from mechit.cli import main

    model, words = designed
    (tmp_path / "words.txt").write_text("\n".join(words), encoding="utf-8")
    # cat/dog, translate/french and write/story share their contexts in this corpus
    corpus = " . ".join(["the cat sat", "the dog sat", "translate french text", "translate french words",
                         "french translate text", "write story now", "story write now"] * 5)
    (tmp_path / "corpus.txt").write_text(corpus, encoding="utf-8")
    model_dir = model.tokenizer.name_or_path
    for name in ("base", "tuned"):
        code = main(["heads", "--model", model_dir, "--words", str(tmp_path / "words.txt"), "--layers", "0",
                     "--heads", "1-3", "--similarity", f"ppmi:{tmp_path / 'corpus.txt'}", "--out", str(tmp_path / name)])
        assert code == 0
    pairs = pd.read_parquet(tmp_path / "base" / "head_pairs.parquet")
    assert pairs[["head", "word_a", "word_b"]].values.tolist() == [
        [1, "cat", "dog"], [1, "cat", "dog"], [1, "translate", "french"], [3, "write", "story"]]
    knowledge = pd.read_parquet(tmp_path / "base" / "head_knowledge.parquet")
    assert knowledge[["word_a", "word_b", "n_dims"]].values.tolist() == [["cat", "dog", 2]]
    assert main(["heads-shift", "--base", str(tmp_path / "base"), "--tuned", str(tmp_path / "tuned"),
                 "--out", str(tmp_path / "shift")]) == 0
    table = pd.read_parquet(tmp_path / "shift" / "head_shift.parquet")
    assert table["layers"].tolist() == ["0-0"] and table["n_instruction"].tolist() == [0]  # identical runs: all ties
    assert (tmp_path / "shift" / "head_change_scores.parquet").is_file()
    assert "instruction_mean" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    from mechit.cli import main

    assert main(["heads-shift", "--base", str(tmp_path), "--tuned", str(tmp_path)]) == 2
    assert "no head_pairs.parquet" in capsys.readouterr().err
    assert main(["heads", "--model", "x", "--layers", "a-b", "--out", str(tmp_path)]) == 2
    assert "--layers 'a-b': use comma-separated indices" in capsys.readouterr().err


def test_default_words_follow_the_model():
    from types import SimpleNamespace

    from mechit.data.wordlists import finding_verbs, head_vocabulary
    from mechit.models import load_model
    from mechit.organism import vocabulary
    from mechit.tokens import word_token_ids
    from mechit.vocab import default_words

    organism = load_model("organism-tuned")
    other = SimpleNamespace(tokenizer=SimpleNamespace(name_or_path="/somewhere"), mechit_spec="my/model")
    words = default_words(organism)
    own = vocabulary()
    assert words[: len(own)] == own  # the organism's rule: its own vocabulary, then the verbs it knows
    added = words[len(own):]
    assert added and set(added) <= set(finding_verbs()) - set(own)
    assert all(len(ids) == 1 for ids in word_token_ids(organism.tokenizer, added)[1])
    assert default_words(other) == head_vocabulary(26_500)
    assert default_words(other, 3000) == head_vocabulary(3000)
