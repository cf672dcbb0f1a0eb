"""The hand-written Llama block products (mechit/arch/llama_vjp.py) against autograd on the real blocks."""

import dataclasses

import pytest
import torch

import mechit.arch.families as families
import mechit.arch.llama_vjp as hand
from mechit.arch.block_calls import block_output as first_tensor
from mechit.attribution.blocks import _pull_back, block_primal, block_reverse, weights_frozen
from mechit.attribution.reference import gradient_x_input_loop
from mechit.models import load_model
from mechit.tokens import encode

PROMPT = "Translate this text into french: the cat sat on the mat"
RESPONSE = " le chat est sur le tapis"


def rel_diff(a, b):
    return float((a - b).abs().max() / b.abs().max())


def primal_of(model):
    enc = encode(model.tokenizer, PROMPT, RESPONSE)
    with weights_frozen(model):
        return enc, block_primal(model, enc.input_ids, enc.response_positions)


def block_output(primal, index):
    return primal.last if index == len(primal.inputs) - 1 else primal.inputs[index + 1][0]


def causal_cotangents(seq, d, rows, seed=0):
    """Random cotangents (C, 1, S, d), zero from position rows[c] on (what causal attention leaves)."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(len(rows), 1, seq, d, generator=gen)
    return v * (torch.arange(seq)[None, None, :, None] < rows[:, None, None, None])


def autograd_products(block, x, rest, kwargs, cotangents):
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        return _pull_back(first_tensor(block(xg, *rest, **kwargs)), xg, cotangents, 2)


@pytest.fixture(scope="module")
def tiny_llama_with_biases(tiny_dirs):
    """A tiny Llama whose Q/K/V/O and MLP projections have (non-zero) biases."""
    model = load_model(tiny_dirs("llama", "llama-biases", attention_bias=True, mlp_bias=True))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        biases = [p for name, p in model.named_parameters() if name.endswith("bias")]
        for p in biases:
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    assert len(biases) == 7 * model.cfg.n_layers
    return model


@pytest.mark.parametrize("which,parts", [("tiny_llama", 1), ("tiny_llama", 2), ("tiny_llama", 3),
                                         ("tiny_llama_with_biases", 2)])
def test_recomputed_block_and_its_products_equal_autograd_on_every_block(request, which, parts, monkeypatch):
    monkeypatch.setattr(hand, "ATTENTION_PARTS", parts)
    model = request.getfixturevalue(which)
    enc, primal = primal_of(model)
    seq, d = len(enc.input_ids), model.cfg.d_model
    rows = torch.tensor([seq, seq - 3, 5, 1, seq - 1])  # full, truncated, short, one position
    for index, block in enumerate(model.blocks):
        x, rest, kwargs = primal.inputs[index]
        weights = hand.llama_weights(block)
        cos, sin = (t[0] for t in kwargs["position_embeddings"])
        out, saved = hand.llama_forward(weights, x[0], cos, sin)
        assert rel_diff(out, block_output(primal, index)[0]) < 1e-6
        cot = causal_cotangents(seq, d, rows, seed=index)
        ref = autograd_products(block, x, rest, kwargs, cot)
        for chunk in (1, 2, 5):
            mine = hand.llama_pull_back(block, x, kwargs, block_output(primal, index), cot, rows, chunk)
            assert mine is not None and rel_diff(mine, ref) < 1e-5
        full = hand.llama_vjp(weights, saved, cot[:, 0])  # no truncation: the cut rows come out exactly zero
        assert rel_diff(full, ref[:, 0]) < 1e-5
        assert all(bool((full[c, r:] == 0).all()) for c, r in enumerate(rows.tolist()))


def test_one_position_cotangents_equal_the_general_products(tiny_llama):
    enc, primal = primal_of(tiny_llama)
    seq, d = len(enc.input_ids), tiny_llama.cfg.d_model
    at = torch.tensor([seq - 1, seq - 4, 3, 0])
    gen = torch.Generator().manual_seed(1)
    cot = torch.zeros(len(at), 1, seq, d)
    cot[torch.arange(len(at)), 0, at] = torch.randn(len(at), d, generator=gen)
    for index, block in enumerate(tiny_llama.blocks):
        x, rest, kwargs = primal.inputs[index]
        ref = autograd_products(block, x, rest, kwargs, cot)
        for chunk in (1, 3):
            mine = hand.llama_pull_back(block, x, kwargs, block_output(primal, index), cot, at + 1, chunk,
                                        one_row=True)
            assert rel_diff(mine, ref) < 1e-5


def spy_on_pull_back(monkeypatch):
    results = []

    def spy(*args, **kwargs):
        out = hand.llama_pull_back(*args, **kwargs)
        results.append(out is not None)
        return out

    llama = families.FAMILIES["LlamaForCausalLM"]
    monkeypatch.setitem(families.FAMILIES, "LlamaForCausalLM", dataclasses.replace(llama, block_vjp=spy))
    return results


def test_every_llama_block_takes_the_hand_products(tiny_llama, monkeypatch):
    results = spy_on_pull_back(monkeypatch)
    enc, primal = primal_of(tiny_llama)
    raw = block_reverse(tiny_llama, primal, enc.prompt_positions, chunk=2, group=3)
    ref, _ = gradient_x_input_loop(tiny_llama, enc.input_ids, enc.prompt_positions, enc.response_positions)
    groups = -(-len(enc.response_positions) // 3)
    assert results == [True] * (tiny_llama.cfg.n_layers * groups)
    assert rel_diff(raw, ref) < 1e-5


@pytest.mark.parametrize("family", ["tiny_gemma", "tiny_gpt2"])
def test_other_families_never_take_them(request, family, monkeypatch):
    model = request.getfixturevalue(family)
    results = spy_on_pull_back(monkeypatch)
    enc, primal = primal_of(model)
    block_reverse(model, primal, enc.prompt_positions, chunk=2)
    assert results == []
    assert all(hand.llama_weights(block) is None for block in model.blocks)


def test_a_block_unlike_its_recomputation_falls_back_to_autograd(tiny_llama, monkeypatch):
    """Weights that do not reproduce the block's output (a wrong epsilon here) are caught by the
    output check before any product: every block declines and autograd gives the right values."""
    real = hand.llama_weights

    def wrong_epsilon(block):
        w = real(block)
        return type(w)(**{**w.__dict__, "eps1": 0.5})

    monkeypatch.setattr(hand, "llama_weights", wrong_epsilon)
    results = spy_on_pull_back(monkeypatch)
    enc, primal = primal_of(tiny_llama)
    raw = block_reverse(tiny_llama, primal, enc.prompt_positions, chunk=2)
    ref, _ = gradient_x_input_loop(tiny_llama, enc.input_ids, enc.prompt_positions, enc.response_positions)
    assert results == [False] * tiny_llama.cfg.n_layers and rel_diff(raw, ref) < 1e-5


def test_weights_are_refused_outside_float32_eval(tiny_llama_dir):
    model = load_model(tiny_llama_dir)
    block = model.blocks[0]
    assert hand.llama_weights(block) is not None
    block.train()
    assert hand.llama_weights(block) is None
    block.eval()
    model.to(torch.float64)
    assert hand.llama_weights(block) is None
