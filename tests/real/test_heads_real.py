"""SmolLM2-135M-Instruct: head pairs equal a brute-force dense computation on 2,000 words,
built straight from the Hugging Face weights (norm scale, GQA key head by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechit.heads.pairs import head_pairs
from mechit.heads.similarity import unit_rows
from mechit.data.wordlists import frequent_words

LAYER, HEAD = 7, 4
N_WORDS, TOP_K = 2000, 100


@pytest.fixture(scope="module")
def dense(smollm2, smollm2_hf):
    """Word vectors and this head's H_q, H_k, H_v W_O from the HF model, by hand."""
    words = frequent_words(N_WORDS)
    tok, hf = smollm2.tokenizer, smollm2_hf
    emb = hf.model.embed_tokens.weight.detach().float()
    keep, rows = [], []
    for w in words:
        ids = tok(" " + w, add_special_tokens=False)["input_ids"]
        if ids and tok.convert_ids_to_tokens(ids[0]) == "Ġ":  # a bare space marker is dropped
            ids = ids[1:]
        if ids:
            keep.append(w)
            rows.append(emb[ids].mean(0))
    vectors = torch.stack(rows)
    attn, cfg = hf.model.layers[LAYER].self_attn, hf.config
    dh = cfg.hidden_size // cfg.num_attention_heads
    kv = HEAD // (cfg.num_attention_heads // cfg.num_key_value_heads)
    ln = hf.model.layers[LAYER].input_layernorm.weight.detach().float()
    w_q = attn.q_proj.weight.detach().float()[HEAD * dh:(HEAD + 1) * dh].T * ln[:, None]
    w_k = attn.k_proj.weight.detach().float()[kv * dh:(kv + 1) * dh].T * ln[:, None]
    w_v = attn.v_proj.weight.detach().float()[kv * dh:(kv + 1) * dh].T * ln[:, None]
    w_o = attn.o_proj.weight.detach().float()[:, HEAD * dh:(HEAD + 1) * dh].T
    w_u = hf.lm_head.weight.detach().float().T * hf.model.norm.weight.detach().float()[:, None]
    return keep, vectors, vectors @ w_q, vectors @ w_k, vectors @ w_v @ w_o @ w_u


def test_qk_dims_equals_dense_brute_force(smollm2, dense):
    words, vectors, h_q, h_k, _ = dense
    got = head_pairs(smollm2, words, layers=LAYER, heads=HEAD, top_k=TOP_K, similarity="embedding", progress=False)
    assert got.attrs["n_words"] == len(words)
    unit = unit_rows(vectors).double()  # the similarity yardstick ("embedding", on the shared grid)
    sims = (unit @ unit.T).numpy()  # (words, words)
    thr = sims[:, :3000].mean(1) + 1.96 * sims[:, :3000].std(1)
    related = (sims > thr[:, None]) & (sims > thr[None, :]) & ~np.eye(len(words), dtype=bool)
    expected = set()
    hq, hk = h_q.numpy(), h_k.numpy()
    for r in range(hq.shape[1]):
        top_q = np.zeros(len(words), bool)
        top_q[np.argsort(-np.abs(hq[:, r]), kind="stable")[:TOP_K]] = True
        top_k = np.zeros(len(words), bool)
        top_k[np.argsort(-np.abs(hk[:, r]), kind="stable")[:TOP_K]] = True
        keep = np.outer(top_q, top_k) & (np.outer(hq[:, r], hk[:, r]) > 0) & related
        expected |= {(r, words[a], words[b]) for a, b in zip(*np.nonzero(keep))}
    assert len(expected) > 50
    assert set(zip(got["dim"].astype(int), got["word_a"], got["word_b"])) == expected
    energy = (hq**2 + hk**2).sum(0)
    assert got.groupby("dim")["dim_rank"].first().sort_values().index.tolist() == \
        [r for r in np.argsort(-energy, kind="stable") if r in set(got["dim"])]


def test_qk_and_ov_equal_dense_top_pairs(smollm2, dense):
    words, _, h_q, h_k, ov = dense
    qk = head_pairs(smollm2, words, method="qk", layers=LAYER, heads=HEAD, top_k=50, progress=False)
    scores = h_q @ h_k.T
    top = scores.flatten().topk(50)
    assert list(zip(qk["word_a"], qk["word_b"])) == [(words[i // len(words)], words[i % len(words)]) for i in top.indices.tolist()]
    torch.testing.assert_close(torch.tensor(qk["score"].to_numpy()), top.values, rtol=1e-4, atol=1e-4)
    ovp = head_pairs(smollm2, words[:500], method="ov", layers=LAYER, heads=HEAD, top_k=50, progress=False)
    top = ov[:500].flatten().topk(50)
    n_vocab = ov.shape[1]
    assert ovp["word_a"].tolist() == [words[i // n_vocab] for i in top.indices.tolist()]
    assert ovp["word_b"].tolist() == [smollm2.tokenizer.decode([i % n_vocab]) for i in top.indices.tolist()]
