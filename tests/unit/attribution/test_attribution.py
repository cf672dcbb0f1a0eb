"""attribute(): exact batched gradients (whole graph and block by block), the Attribution object, chat templates,
generation, bad input."""

import pytest
import torch

import mechit.attribution.grad as grad
from mechit.attribution.example import Attribution, attribute
from mechit.attribution.blocks import block_primal, block_reverse, weights_frozen
from mechit.attribution.grad import (
    block_plan,
    chunk_size,
    choose_method,
    cotangent_bytes,
    gradient_x_input,
    product_bytes,
)
from mechit.attribution.reference import gradient_x_input_loop
from mechit.attribution.scores import density, rescale, sparsify
from mechit.errors import InputError
from mechit.tokens import encode
from float_bounds import loop_reference, max_rel_error, rel_diff

PROMPT = "Translate this text into french: the cat sat on the mat"
RESPONSE = " le chat est sur le tapis"


@pytest.fixture(scope="module", params=["llama", "gemma", "gpt2"])
def model_and_reference(request):
    """(model, encoded, the per-token loop in float32 and float64), once per family."""
    model = request.getfixturevalue(f"tiny_{request.param}")
    enc = encode(model.tokenizer, PROMPT, RESPONSE)
    return model, enc, loop_reference(model, enc.input_ids, enc.prompt_positions, enc.response_positions)


@pytest.mark.parametrize("method", ["reverse", "forward"])
@pytest.mark.parametrize("products_per_chunk", [None, 3])  # None: everything in one chunk
def test_batched_equals_per_token_loop(model_and_reference, method, products_per_chunk):
    model, enc, ref = model_and_reference
    seq = len(enc.input_ids)
    budget = 2**40 if products_per_chunk is None else products_per_chunk * product_bytes(model, seq)
    raw, probs = gradient_x_input(model, enc.input_ids, enc.prompt_positions, enc.response_positions,
                                  method=method, memory_budget=budget)
    assert raw.shape == (len(enc.prompt_positions), len(enc.response_positions))
    # no further from the float64 values than the loop's own float32 error allows, hence close to the loop
    assert rel_diff(raw, ref.raw64) <= 2 * ref.raw_error and rel_diff(raw, ref.raw32) <= 3 * ref.raw_error
    assert max_rel_error(probs, ref.probs64) <= 2 * ref.probs_error
    assert max_rel_error(probs, ref.probs32) <= 3 * ref.probs_error
    assert ref.raw32.abs().max() > 0


@pytest.mark.parametrize("method", ["reverse", "forward"])
def test_float64_agrees_to_rounding(tiny_llama_dir, method):
    from mechit.models import load_model

    model = load_model(tiny_llama_dir).to(torch.float64)
    enc = encode(model.tokenizer, PROMPT, RESPONSE)
    args = (model, enc.input_ids, enc.prompt_positions, enc.response_positions)
    ref, _ = gradient_x_input_loop(*args)
    raw, _ = gradient_x_input(*args, method=method)
    # not 1e-15: Hugging Face norms compute in float32 internally even in a float64 model
    assert raw.dtype == torch.float64 and rel_diff(raw, ref) < 1e-6


def test_paper_style_backward_gives_the_same_values(tiny_llama):
    enc = encode(tiny_llama.tokenizer, PROMPT, RESPONSE)
    args = (tiny_llama, enc.input_ids, enc.prompt_positions, enc.response_positions)
    paper, _ = gradient_x_input_loop(*args, weight_grads=True)
    ref = loop_reference(*args)
    assert rel_diff(paper, ref.raw32) <= 2 * ref.raw_error
    tiny_llama.zero_grad(set_to_none=True)


def test_gradient_times_input_uses_the_scaled_embedding(tiny_gemma):
    """Independent check through Hugging Face directly: Gemma's embedding module applies sqrt(d_model)."""
    hf = tiny_gemma.original_model
    enc = encode(tiny_gemma.tokenizer, PROMPT, RESPONSE)
    ids = enc.input_ids[None]
    emb = hf.get_input_embeddings()(ids).detach().requires_grad_(True)
    assert not torch.allclose(emb, hf.get_input_embeddings().weight[ids])  # the scale is really there
    probs = torch.softmax(hf(inputs_embeds=emb).logits[0], -1)
    rp = enc.response_positions
    p = probs[rp - 1, enc.input_ids[rp]]
    columns = [(torch.autograd.grad(p[j], emb, retain_graph=True)[0][0] * emb[0].detach()).sum(-1)
               for j in range(len(rp))]
    expected = torch.stack(columns, 1)[enc.prompt_positions]
    a = attribute(tiny_gemma, PROMPT, RESPONSE)
    ref = loop_reference(tiny_gemma, enc.input_ids, enc.prompt_positions, enc.response_positions)
    assert rel_diff(a.raw, expected) <= 3 * ref.raw_error


def test_choose_method_and_chunks(tiny_llama):
    assert choose_method(200, 32) == "reverse"
    assert choose_method(5, 100) == "forward" and choose_method(5, 20) == "reverse"
    assert choose_method(5, 100, "reverse") == "reverse"
    with pytest.raises(ValueError):
        choose_method(5, 5, "sideways")
    one = product_bytes(tiny_llama, 20)
    assert one == 2 * 4 * 20 * (4 * 64 + 3 * 128 + 2 * 4 * 20)
    assert chunk_size(tiny_llama, 20, 32, 2**40) == 32
    assert chunk_size(tiny_llama, 20, 32, 1) == 1
    assert chunk_size(tiny_llama, 20, 32, 24 * one) == 16  # balanced: 2 chunks of 16, not 24 + 8
    assert chunk_size(tiny_llama, 20, 32, 11 * one) == 11  # 3 chunks: 11 + 11 + 10


def test_attribution_object_is_consistent(tiny_llama):
    spans = [(0, 31)]
    a = attribute(tiny_llama, PROMPT, RESPONSE, instruction_spans=spans)
    assert isinstance(a, Attribution) and not a.generated and a.method == "reverse"
    n, m = a.raw.shape
    assert n == len(a.prompt_tokens) == len(a.prompt_offsets) and m == len(a.response_tokens)
    assert torch.equal(a.levels, sparsify(a.raw))
    torch.testing.assert_close(a.density_raw, density(a.levels))
    torch.testing.assert_close(a.density, rescale(a.density_raw))
    # the instruction mask covers exactly the tokens inside "Translate this text into french:"
    for (s, e), inside in zip(a.prompt_offsets, a.instruction_mask.tolist()):
        assert inside == (s < 31)
    mask = a.instruction_mask.float()
    expected_score = float((a.density * mask).sum() / torch.log2(2 + mask.sum()))
    assert a.score == pytest.approx(expected_score, rel=1e-6)
    frame = a.to_frame()
    assert list(frame.columns) == ["position", "token", "char_start", "char_end", "density", "density_raw",
                                   "in_instruction"]
    assert [PROMPT[s:e].strip() for s, e in zip(frame.char_start, frame.char_end)][-1] == "mat"
    pairs = a.to_frame("pairs")
    assert len(pairs) == n * m
    assert pairs.raw.iloc[m + 1] == pytest.approx(float(a.raw[1, 1]))
    html = str(a.show())
    assert "density" in html and f"{m - 1}: " in html


def test_raw_is_signed_and_levels_keep_the_top(tiny_llama):
    a = attribute(tiny_llama, PROMPT, RESPONSE)
    assert (a.raw < 0).any() and (a.raw > 0).any()
    top = a.raw.argmax(dim=0)
    columns = torch.arange(a.raw.shape[1], device=a.raw.device)  # the result's device, whatever the default
    assert torch.equal(a.levels[top, columns], torch.full((a.raw.shape[1],), 10.0, device=a.levels.device))


def test_chat_template_prompt_spans_still_map(tiny_llama):
    spans = [(0, 31)]
    a = attribute(tiny_llama, PROMPT, RESPONSE, instruction_spans=spans, chat_template=True)
    enc = encode(tiny_llama.tokenizer, PROMPT, RESPONSE, chat_template=True)
    assert "<|im_start|>" in enc.tokens and len(enc.input_ids) > len(encode(tiny_llama.tokenizer, PROMPT, RESPONSE).input_ids)
    # template tokens are neither prompt nor response
    assert "<|im_start|>" not in a.prompt_tokens + a.response_tokens
    covered = "".join(PROMPT[s:e] for (s, e), inside in zip(a.prompt_offsets, a.instruction_mask.tolist()) if inside)
    assert covered.replace("▁", " ").strip().startswith("Translate") and "cat" not in covered
    ref = loop_reference(tiny_llama, enc.input_ids, enc.prompt_positions, enc.response_positions)
    assert rel_diff(a.raw, ref.raw32) <= 3 * ref.raw_error


def test_generation_is_greedy_and_recorded(tiny_llama):
    a = attribute(tiny_llama, "the cat sat on the", max_new_tokens=4)
    b = attribute(tiny_llama, "the cat sat on the", max_new_tokens=4)
    assert a.generated and a.response == b.response and torch.equal(a.raw, b.raw)
    # greedy by hand: argmax of the next-token logits, four times
    ids = encode(tiny_llama.tokenizer, "the cat sat on the").input_ids
    with torch.no_grad():
        for _ in range(4):
            ids = torch.cat([ids, tiny_llama(ids[None])[0, -1].argmax()[None]])
    new = ids[-4:].tolist()
    eos = tiny_llama.tokenizer.eos_token_id
    new = new[: new.index(eos)] if eos in new else new
    assert a.response == tiny_llama.tokenizer.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize("kwargs, field", [
    (dict(prompt="   ", response=" x"), "prompt"),
    (dict(prompt="Say hi", response=""), "response"),
    (dict(prompt="Say hi", response=" hi", instruction_spans=[(0, 40)]), "instruction_spans"),
    (dict(prompt="Say hi", response=" hi", instruction_spans=[(0, 3), (2, 5)]), "instruction_spans"),
    (dict(prompt="word " * 300, response=" hi"), "response"),
    (dict(prompt="word " * 250, response=None, max_new_tokens=10), "prompt"),
])
def test_bad_input_names_the_field(tiny_llama, kwargs, field):
    prompt, response = kwargs.pop("prompt"), kwargs.pop("response")
    with pytest.raises(InputError, match=f"field '{field}'"):
        attribute(tiny_llama, prompt, response, **kwargs)


# ---------------------------------------------------------------- block by block (mechit/attribution/blocks.py)


def test_block_path_applies_only_with_frozen_weights(model_and_reference):
    model, enc, _ = model_and_reference
    with weights_frozen(model):
        primal = block_primal(model, enc.input_ids, enc.response_positions)
    assert primal is not None and len(primal.inputs) == model.cfg.n_layers
    assert primal.g.shape == (len(enc.response_positions), model.cfg.d_model)
    # with trainable weights every block's output depends on them: not a graph-free forward, refused
    assert block_primal(model, enc.input_ids, enc.response_positions) is None


@pytest.mark.parametrize("chunk,group", [(1, 1), (1, 2), (3, 5), (4, None)])
def test_block_path_equals_the_loop_in_every_grouping(model_and_reference, chunk, group):
    model, enc, ref = model_and_reference
    with weights_frozen(model):
        primal = block_primal(model, enc.input_ids, enc.response_positions)
        raw = block_reverse(model, primal, enc.prompt_positions, chunk, group)
    assert raw.shape == ref.raw32.shape and rel_diff(raw, ref.raw64) <= 2 * ref.raw_error


def test_a_changed_residual_between_blocks_falls_back_to_the_whole_graph(tiny_llama, monkeypatch):
    enc = encode(tiny_llama.tokenizer, PROMPT, RESPONSE)
    args = (tiny_llama, enc.input_ids, enc.prompt_positions, enc.response_positions)
    whole_graph, used = grad._reverse, []
    monkeypatch.setattr(grad, "_reverse", lambda *a: used.append(1) or whole_graph(*a))
    handle = tiny_llama.blocks[1].register_forward_pre_hook(  # doubles the residual stream between blocks 0 and 1
        lambda module, inputs, kwargs: ((2 * inputs[0], *inputs[1:]), kwargs), with_kwargs=True)
    try:
        with weights_frozen(tiny_llama):
            assert block_primal(tiny_llama, enc.input_ids, enc.response_positions) is None
        ref = loop_reference(*args)
        raw, _ = gradient_x_input(*args, method="reverse")
    finally:
        handle.remove()
    assert used == [1] and rel_diff(raw, ref.raw64) <= 2 * ref.raw_error
    unchanged, _ = gradient_x_input(*args, method="reverse")  # hook removed: the block path again
    assert used == [1] and rel_diff(unchanged, ref.raw32) > 0.01  # and the doubling really changed the values


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
