"""The block-by-block reverse path (mechit/attribution_blocks.py): when it applies, that it
equals the per-token loop in every grouping, and that a model whose blocks are not a plain
chain falls back to the whole-graph path with the same values."""

from __future__ import annotations

import pytest
import torch

import mechit.attribution_grad as grad
from mechit.attribution_blocks import block_primal, block_reverse
from mechit.attribution_grad import (block_plan, cotangent_bytes, gradient_x_input, gradient_x_input_loop,
                                     product_bytes)
from mechit.tokens import encode

PROMPT = "Summarize the text: the cat sat on the mat and the dog ran."
RESPONSE = " The cat sat and the dog ran away."


def rel_diff(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module", params=["llama", "gemma", "gpt2"])
def family(request):
    """(model, encoded example, loop reference raw), once per family."""
    model = request.getfixturevalue(f"tiny_{request.param}")
    enc = encode(model.tokenizer, PROMPT, RESPONSE)
    ref, _ = gradient_x_input_loop(model, enc.input_ids, enc.prompt_positions, enc.response_positions)
    return model, enc, ref


def test_block_path_applies_only_with_frozen_weights(family):
    model, enc, _ = family
    with grad._weights_frozen(model):
        primal = block_primal(model, enc.input_ids, enc.response_positions)
    assert primal is not None and len(primal.inputs) == model.cfg.n_layers
    assert primal.g.shape == (len(enc.response_positions), model.cfg.d_model)
    # with trainable weights every block's output depends on them: not a graph-free forward, refused
    assert block_primal(model, enc.input_ids, enc.response_positions) is None


@pytest.mark.parametrize("chunk,group", [(1, 1), (1, 2), (3, 5), (4, None)])
def test_every_grouping_equals_the_loop(family, chunk, group):
    model, enc, ref = family
    with grad._weights_frozen(model):
        primal = block_primal(model, enc.input_ids, enc.response_positions)
        raw = block_reverse(model, primal, enc.prompt_positions, chunk, group)
    assert raw.shape == ref.shape and rel_diff(raw, ref) < 1e-5


def test_a_changed_residual_between_blocks_falls_back_to_the_whole_graph(tiny_llama, monkeypatch):
    enc = encode(tiny_llama.tokenizer, PROMPT, RESPONSE)
    args = (tiny_llama, enc.input_ids, enc.prompt_positions, enc.response_positions)
    whole_graph, used = grad._reverse, []
    monkeypatch.setattr(grad, "_reverse", lambda *a: used.append(1) or whole_graph(*a))
    handle = tiny_llama.blocks[1].register_forward_pre_hook(  # doubles the residual stream between blocks 0 and 1
        lambda module, inputs, kwargs: ((2 * inputs[0], *inputs[1:]), kwargs), with_kwargs=True)
    try:
        with grad._weights_frozen(tiny_llama):
            assert block_primal(tiny_llama, enc.input_ids, enc.response_positions) is None
        ref, _ = gradient_x_input_loop(*args)
        raw, _ = gradient_x_input(*args, method="reverse")
    finally:
        handle.remove()
    assert used == [1] and rel_diff(raw, ref) < 1e-5
    unchanged, _ = gradient_x_input(*args, method="reverse")  # hook removed: the block path again
    assert used == [1] and rel_diff(unchanged, ref) > 0.01  # and the doubling really changed the values


def test_block_plan_fits_the_budget(tiny_llama):
    product, cotangent = product_bytes(tiny_llama, 20), cotangent_bytes(tiny_llama, 20)
    assert cotangent == 8 * 20 * 64
    assert block_plan(tiny_llama, 20, 32, 2**40) == (32, 32)
    assert block_plan(tiny_llama, 20, 32, 1) == (1, 1)
    # room for all 32 cotangents and 2 products beside them
    assert block_plan(tiny_llama, 20, 32, 32 * cotangent + 2 * product) == (2, 32)
    # 11 cotangents beside one product: 3 groups of 11, 11, 10, one product at a time
    assert block_plan(tiny_llama, 20, 32, 11 * cotangent + product) == (1, 11)
    for budget in range(product + cotangent, 40 * product, product // 3):
        chunk, group = block_plan(tiny_llama, 20, 32, budget)
        assert 1 <= chunk <= group <= 32 and group * cotangent + chunk * product <= budget
