"""SmolLM2-135M-Instruct and gemma-3-270m from their GGUF files: loading, hooks, logits,
folded views and span -> mask on the real tokenizers."""

from __future__ import annotations

import re

import math

import pytest
import torch

from mechit.errors import InputError
from mechit.arch.weights import describe, embed_scale, input_embedding, kv_head, qk_weights, unembedding
from mechit.tokens import encode, span_mask, word_vectors

EXPECTED = {
    "smollm2": dict(layers=30, heads=9, kv_heads=3, d_model=576, d_head=64, d_mlp=1536, d_vocab=49152,
                    norm="RMSNorm", architecture="LlamaForCausalLM", folded=False),
    "gemma": dict(layers=18, heads=4, kv_heads=1, d_model=640, d_head=256, d_mlp=2048, d_vocab=262144,
                  norm="RMSNorm (1 + w)", architecture="Gemma3ForCausalLM", folded=False),
}
TEXT = "Translate the following sentence into French: The cat sleeps on the mat."
INSTRUCTION = (0, len("Translate the following sentence into French:"))
MODELS = ["smollm2", "gemma"]


@pytest.fixture(params=MODELS)
def name(request):
    return request.param


@pytest.fixture
def model(request, name):
    return request.getfixturevalue(name)


@pytest.fixture
def hf(request, name):
    return request.getfixturevalue(f"{name}_hf")


def test_describe(model, name):
    info = describe(model)
    assert {k: info[k] for k in EXPECTED[name]} == EXPECTED[name]
    assert not model.training


def test_info_command_prints_the_architecture(smollm2_path, smollm2, capsys, monkeypatch):
    from mechit import cli
    from mechit.commands import info

    monkeypatch.setattr("mechit.models.load_model", lambda spec, **options: smollm2)  # loaded once per session
    for argv in (["info", str(smollm2_path)], ["info", "--load", str(smollm2_path)]):  # the GGUF header; the model
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        for key, value in (("layers", "30"), ("heads", "9"), ("kv_heads", "3"), ("d_model", "576"), ("d_mlp", "1536"),
                           ("d_vocab", "49152"), ("norm", "RMSNorm"), ("folded", "False")):
            assert re.search(rf"^{key} +{value}$", out, re.M), (key, out)
    assert info.format_info({"a": 1}) == "a  1"


def test_hooks_fire_with_expected_shapes(model, name):
    exp = EXPECTED[name]
    tokens = model.to_tokens(TEXT)
    p = tokens.shape[1]
    last = exp["layers"] - 1
    names = ["hook_embed", "blocks.0.attn.hook_pattern", f"blocks.{last}.attn.hook_pattern",
             "blocks.0.mlp.hook_post", f"blocks.{last}.mlp.hook_post"]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names)
    assert set(names) <= set(cache.keys())
    assert cache["hook_embed"].shape == (1, p, exp["d_model"])
    for layer in (0, last):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert pattern.shape == (1, exp["heads"], p, p)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(1, exp["heads"], p))
        assert torch.all(pattern.triu(1) == 0)  # causal
        assert cache[f"blocks.{layer}.mlp.hook_post"].shape == (1, p, exp["d_mlp"])
    expected_embed = input_embedding(model)[tokens[0]] * embed_scale(model)
    torch.testing.assert_close(cache["hook_embed"][0], expected_embed, atol=1e-4, rtol=1e-4)
    assert embed_scale(model) == (math.sqrt(640) if name == "gemma" else 1.0)


def test_logits_equal_plain_transformers(model, hf):
    tokens = model.to_tokens(TEXT)
    with torch.no_grad():
        ours = model(tokens)
        theirs = hf(tokens).logits
    torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-4)
    assert ours[0, -1].argmax() == theirs[0, -1].argmax()


def test_folded_unembedding_reproduces_the_logits(model):
    tokens = model.to_tokens(TEXT)
    last = model.cfg.n_layers - 1
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=[f"blocks.{last}.hook_resid_post"])
    x = cache[f"blocks.{last}.hook_resid_post"][0]
    x = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + model.cfg.eps)
    torch.testing.assert_close(x @ unembedding(model), logits[0], atol=2e-3, rtol=1e-4)


def test_gqa_views(model, name):
    w_q, w_k = qk_weights(model, 0)
    exp = EXPECTED[name]
    assert w_q.shape == w_k.shape == (exp["heads"], exp["d_model"], exp["d_head"])
    group = exp["heads"] // exp["kv_heads"]
    for h in range(exp["heads"]):
        assert kv_head(model, h) == h // group
        torch.testing.assert_close(w_k[h], w_k[kv_head(model, h) * group])


@pytest.mark.parametrize("chat", [False, True])
def test_span_mask_on_the_real_tokenizer(model, name, chat):
    if chat and name == "gemma":  # gemma-3-270m is the pre-trained model: its GGUF has no template
        with pytest.raises(InputError, match="no chat template"):
            encode(model.tokenizer, TEXT, " Le chat", chat_template=True)
        return
    enc = encode(model.tokenizer, TEXT, " Le chat dort sur le tapis.", chat_template=chat)
    mask = span_mask(enc, [INSTRUCTION])
    ids = enc.input_ids[enc.prompt_positions]
    instruction = model.tokenizer.decode(ids[mask]).strip()
    context = model.tokenizer.decode(ids[~mask]).strip()
    assert instruction == "Translate the following sentence into French:"
    assert context == "The cat sleeps on the mat."
    assert model.tokenizer.decode(enc.input_ids[enc.response_positions]).strip() == "Le chat dort sur le tapis."
    if chat:
        assert enc.text.index(TEXT) == enc.prompt_start
    else:
        assert enc.input_ids.tolist() == model.to_tokens(TEXT + " Le chat dort sur le tapis.")[0].tolist()


def test_word_vectors_on_the_real_model(model):
    wv = word_vectors(model, ["translate", "cat", "summarize"])
    assert wv.words == ["translate", "cat", "summarize"] and wv.dropped == []
    W_E = input_embedding(model)
    for ids, vector in zip(wv.token_ids, wv.vectors):
        assert model.tokenizer.convert_ids_to_tokens(ids[0]) not in ("▁", "Ġ")
        torch.testing.assert_close(vector, W_E[ids].mean(0))
