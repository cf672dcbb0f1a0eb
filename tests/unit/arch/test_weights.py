"""Architecture facts and folded weight views (mechit/arch/) on tiny models of three families."""

from __future__ import annotations

import pytest
import torch

from mechit.arch.families import family
from mechit.arch.weights import (
    describe,
    embed_scale,
    input_embedding,
    kv_head,
    mlp_in_weights,
    mlp_out_weights,
    ov_weights,
    qk_weights,
    unembedding,
)
from mechit.errors import InputError

FAMILIES = ["llama", "gpt2", "gemma"]
TEXT = "Translate the cat into French, please."



def _cache(model, text=TEXT):
    tokens = model.to_tokens(text)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    return tokens, logits, cache


def _rms(x, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _layernorm(x, eps):
    x = x - x.mean(-1, keepdim=True)
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _normalise(model, x):
    """Normalise without the scale, as the family's input norm does."""
    eps = model.cfg.eps
    return _layernorm(x, eps) if family(model).norm == "LayerNorm" else _rms(x, eps)



def test_describe_llama(tiny_llama):
    info = describe(tiny_llama)
    assert {k: info[k] for k in ("layers", "heads", "kv_heads", "d_model", "d_head", "d_mlp", "d_vocab")} == {
        "layers": 2, "heads": 4, "kv_heads": 2, "d_model": 64, "d_head": 16, "d_mlp": 128, "d_vocab": 956,
    }
    assert info["norm"] == "RMSNorm" and info["folded"] is False and info["embed_scale"] == 1.0
    assert info["architecture"] == "LlamaForCausalLM" and info["gated_mlp"] is True


def test_describe_gemma_and_gpt2(tiny_gemma, tiny_gpt2):
    gemma = describe(tiny_gemma)
    assert gemma["norm"] == "RMSNorm (1 + w)" and gemma["kv_heads"] == 1
    assert gemma["embed_scale"] == 8.0 and gemma["post_norms"] and gemma["qk_norm"]
    gpt2 = describe(tiny_gpt2)
    assert gpt2["norm"] == "LayerNorm" and gpt2["kv_heads"] == 4 and gpt2["gated_mlp"] is False


def test_unknown_architecture_falls_back_to_the_tl_config(tiny_gemma, monkeypatch):
    monkeypatch.setattr(tiny_gemma.cfg, "architecture", "SomethingNewForCausalLM")
    fam = family(tiny_gemma)
    assert fam.name == "SomethingNewForCausalLM"
    assert fam.norm_offset == 1.0  # TransformerLens flags Gemma's (1 + w) norm
    assert fam.sqrt_d_model_embed is False


# ---------------------------------------------------------------- architecture facts
@pytest.mark.parametrize("name", FAMILIES)
def test_embed_scale_matches_hook_embed(tiny, name):
    model = tiny[name]
    tokens, _, cache = _cache(model)
    expected = input_embedding(model)[tokens[0]] * embed_scale(model)
    torch.testing.assert_close(cache["hook_embed"][0], expected, atol=1e-5, rtol=1e-5)
    assert embed_scale(model) == (8.0 if name == "gemma" else 1.0)


def test_kv_head_mapping(tiny):
    assert [kv_head(tiny["llama"], h) for h in range(4)] == [0, 0, 1, 1]
    assert [kv_head(tiny["gemma"], h) for h in range(4)] == [0, 0, 0, 0]
    assert [kv_head(tiny["gpt2"], h) for h in range(4)] == [0, 1, 2, 3]


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_folded_qkv_reproduce_the_hooks(tiny, name):
    model = tiny[name]
    _, _, cache = _cache(model)
    layer = 1
    x = _normalise(model, cache[f"blocks.{layer}.hook_resid_pre"][0])
    w_q, w_k = qk_weights(model, layer)
    w_v, _ = ov_weights(model, layer)
    attn = model.blocks[layer].attn
    # LayerNorm bias and projection biases are not part of the view: add them back here.
    ln_bias = (model.blocks[layer].ln1.original_component.bias.detach()
               if family(model).norm == "LayerNorm" else torch.zeros(model.cfg.d_model))
    for hook, weight, raw, bias_name in (("q", w_q, attn.W_Q, "b_Q"), ("k", w_k, attn.W_K, "b_K"),
                                         ("v", w_v, attn.W_V, "b_V")):
        observed = cache[f"blocks.{layer}.attn.hook_{hook}"][0]  # [pos, H or Hkv, dh]
        bias = getattr(attn, bias_name, None)
        for h in range(model.cfg.n_heads):
            src = kv_head(model, h) if hook != "q" else h
            extra = torch.einsum("d,de->e", ln_bias, raw.detach()[src])
            if bias is not None:
                extra = extra + bias.detach()[src]
            torch.testing.assert_close(x @ weight[h] + extra, observed[:, src], atol=1e-4, rtol=1e-4)


def test_gemma_qk_norm_scale_is_folded_into_columns(tiny_gemma):
    model, layer = tiny_gemma, 1
    _, _, cache = _cache(model)
    x = _rms(cache[f"blocks.{layer}.hook_resid_pre"][0], model.cfg.eps)
    w_q, w_k = qk_weights(model, layer)
    q_raw = cache[f"blocks.{layer}.attn.hook_q"][0]               # [pos, H, dh], before q_norm
    q_normed = cache[f"blocks.{layer}.attn.hook_q_normed"][0]     # [H, pos, dh]
    eps = model.blocks[layer].attn.q_norm.original_component.eps
    rms = torch.sqrt(q_raw.pow(2).mean(-1, keepdim=True) + eps)   # [pos, H, 1]
    for h in range(4):
        torch.testing.assert_close(x @ w_q[h], q_normed[h] * rms[:, h], atol=1e-4, rtol=1e-4)
    k_normed = cache[f"blocks.{layer}.attn.hook_k_normed"][0]
    k_raw = cache[f"blocks.{layer}.attn.hook_k"][0]
    rms_k = torch.sqrt(k_raw.pow(2).mean(-1, keepdim=True) + eps)
    for h in range(4):
        torch.testing.assert_close(x @ w_k[h], k_normed[0] * rms_k[:, 0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["llama", "gemma"])
def test_folded_mlp_in_reproduces_the_hooks(tiny, name):
    model, layer = tiny[name], 0
    _, _, cache = _cache(model)
    x = _rms(cache[f"blocks.{layer}.hook_resid_mid"][0], model.cfg.eps)
    w_in, w_gate = mlp_in_weights(model, layer)
    torch.testing.assert_close(x @ w_in, cache[f"blocks.{layer}.mlp.hook_pre_linear"][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x @ w_gate, cache[f"blocks.{layer}.mlp.hook_pre"][0], atol=1e-4, rtol=1e-4)


def test_gpt2_mlp_has_no_gate(tiny_gpt2):
    w_in, w_gate = mlp_in_weights(tiny_gpt2, 0)
    assert w_gate is None and w_in.shape == (64, 256)


@pytest.mark.parametrize("name", ["llama", "gemma"])
def test_folded_unembedding_reproduces_the_logits(tiny, name):
    model = tiny[name]
    _, logits, cache = _cache(model)
    x = _rms(cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"][0], model.cfg.eps)
    torch.testing.assert_close(x @ unembedding(model), logits[0], atol=1e-4, rtol=1e-4)


def test_views_against_hf_parameters(tiny_gemma, tiny_llama, hf_models):
    gemma = hf_models["gemma"].model
    expected = gemma.layers[1].mlp.down_proj.weight.T * (1 + gemma.layers[1].post_feedforward_layernorm.weight)
    torch.testing.assert_close(mlp_out_weights(tiny_gemma, 1), expected.detach())
    w_v, w_o = ov_weights(tiny_gemma, 1)
    o_scale = 1 + gemma.layers[1].post_attention_layernorm.weight.detach()
    raw_o = gemma.layers[1].self_attn.o_proj.weight.detach().T.reshape(4, 16, 64)
    torch.testing.assert_close(w_o, raw_o * o_scale)
    llama = hf_models["llama"].model
    torch.testing.assert_close(mlp_out_weights(tiny_llama, 0), llama.layers[0].mlp.down_proj.weight.T.detach())
    v_rows = llama.layers[1].self_attn.v_proj.weight.detach().T * llama.layers[1].input_layernorm.weight.detach()[:, None]
    w_v, _ = ov_weights(tiny_llama, 1)
    torch.testing.assert_close(w_v[3], v_rows.reshape(64, 2, 16)[:, 1])   # head 3 reads KV head 1


def test_views_are_detached_fp32_copies(tiny_llama):
    before = {k: v.clone() for k, v in tiny_llama.original_model.state_dict().items()}
    views = [*qk_weights(tiny_llama, 0), *ov_weights(tiny_llama, 0), mlp_in_weights(tiny_llama, 0)[0],
             mlp_out_weights(tiny_llama, 0), input_embedding(tiny_llama), unembedding(tiny_llama)]
    for view in views:
        assert view.dtype == torch.float32 and not view.requires_grad
        view.mul_(0)
    after = tiny_llama.original_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_layer_out_of_range(tiny_llama):
    with pytest.raises(InputError, match="layer 2 out of range"):
        qk_weights(tiny_llama, 2)

