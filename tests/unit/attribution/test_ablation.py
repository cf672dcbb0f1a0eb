"""mechit.attribution.ablation: each way of ablating against a plain Hugging Face forward pass
on the hand-built input, the parts, and the batched form.

Each reference is the same Hugging Face model loaded from the tiny model's directory (not
through TransformerLens) and fed the ablated sequence by hand. Tolerances: the reference's
own float32 error, measured against the same reference in float64, doubled (two float32
evaluations of one quantity).
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from mechit.attribution.ablation import ablate, ablate_prompts, mask_token_id, mean_embedding
from mechit.data.prompts import PromptRecord
from mechit.errors import InputError
from mechit.tokens import encode, span_mask

PROMPT = "Translate this text into french: the cat sat on the mat."
RESPONSE = " answer the dog"
SPANS = [(0, 9), (10, 31)]  # "Translate", "this text into french:"


@pytest.fixture(scope="module")
def hf_llama(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="eager").eval()
    return model, copy.deepcopy(model).double()


@pytest.fixture(scope="module")
def hf_gemma(tiny_gemma_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_gemma_dir, attn_implementation="eager").eval()
    return model, copy.deepcopy(model).double()


def hf_logprobs(hf, ids=None, embeds=None, positions=None):
    """log p of the tokens at ``positions`` of ``ids`` under a plain HF forward (ids or embeddings)."""
    with torch.no_grad():
        out = hf(input_ids=ids[None]) if embeds is None else hf(inputs_embeds=embeds[None])
    scores = torch.log_softmax(out.logits[0, positions - 1], -1)  # in the model's dtype, as mechit's
    return scores.gather(1, ids[positions][:, None])[:, 0].double()


def check_part(frame, part, expected32, expected64):
    """The part's effects equal ``full - ablated`` from the reference, within twice its float32 error."""
    rows = frame[frame.part == part].sort_values("response_index")
    ours = torch.tensor(rows.logprob_ablated.to_numpy(), device="cpu")  # compared on the host, whatever the device
    expected32, expected64 = expected32.cpu(), expected64.cpu()
    bound = 2 * float((expected32 - expected64).abs().max())
    torch.testing.assert_close(ours, expected64, rtol=0, atol=bound + 1e-12)
    assert rows.total_effect.nunique() == 1
    assert rows.total_effect.iloc[0] == pytest.approx(rows.effect.sum(), abs=1e-12)


def test_remove_drops_the_part_tokens(tiny_llama, hf_llama):
    enc = encode(tiny_llama.tokenizer, PROMPT, RESPONSE)
    frame = ablate(tiny_llama, PROMPT, RESPONSE, instruction_spans=SPANS, how="remove")
    instruction = enc.prompt_positions[span_mask(enc, SPANS)]
    kept = torch.ones(len(enc.input_ids), dtype=torch.bool)
    kept[instruction] = False
    ids = enc.input_ids[kept]
    moved = enc.response_positions - len(instruction)  # the instruction comes before the response
    assert ids[moved].tolist() == enc.input_ids[enc.response_positions].tolist()
    check_part(frame, "instruction", *(hf_logprobs(hf, ids, positions=moved) for hf in hf_llama))
    full = frame[frame.part == "instruction"].sort_values("response_index").logprob.to_numpy()
    torch.testing.assert_close(torch.tensor(full, device="cpu"), hf_logprobs(hf_llama[1], enc.input_ids,
                                                               positions=enc.response_positions).cpu(),
                               rtol=0, atol=1e-5)
    assert (frame.effect.abs() > 0).all()


def test_mask_replaces_the_part_by_the_unknown_token(tiny_llama, hf_llama):
    enc = encode(tiny_llama.tokenizer, PROMPT, RESPONSE)
    assert mask_token_id(tiny_llama) == tiny_llama.tokenizer.unk_token_id
    frame = ablate(tiny_llama, PROMPT, RESPONSE, instruction_spans=SPANS, how="mask")
    context = enc.prompt_positions[~span_mask(enc, SPANS)]
    ids = enc.input_ids.clone()
    ids[context] = tiny_llama.tokenizer.unk_token_id
    references = [hf_logprobs(hf, ids, positions=enc.response_positions) for hf in hf_llama]
    check_part(frame, "context", *references)
    assert frame.n_part_tokens.tolist()[-1] == len(context)


def test_mean_uses_the_scaled_vocabulary_mean_embedding(tiny_gemma, hf_gemma):
    """Gemma scales embeddings by √d_model: the mean replaces the scaled rows, so the reference scales too."""
    enc = encode(tiny_gemma.tokenizer, PROMPT, RESPONSE)
    frame = ablate(tiny_gemma, PROMPT, RESPONSE, instruction_spans=SPANS, how="mean")
    instruction = enc.prompt_positions[span_mask(enc, SPANS)]
    references = []
    for hf in hf_gemma:
        table = hf.get_input_embeddings()
        with torch.no_grad():
            embeds = table(enc.input_ids[None])[0]  # (seq, d), scaled
            embeds[instruction] = table.weight.mean(0) * table.embed_scale
        references.append(hf_logprobs(hf, enc.input_ids, embeds=embeds, positions=enc.response_positions))
    torch.testing.assert_close(mean_embedding(tiny_gemma).cpu(), (hf_gemma[0].get_input_embeddings().weight.mean(0)
                               * tiny_gemma.cfg.d_model ** 0.5).cpu(), rtol=1e-6, atol=0)
    check_part(frame, "instruction", *references)


def test_parts_per_span_partition_the_instruction(tiny_llama):
    frame = ablate(tiny_llama, PROMPT, RESPONSE, instruction_spans=SPANS, how="mask", per_span=True)
    counts = frame.groupby("part", sort=False).n_part_tokens.first()
    assert list(counts.index) == ["instruction", "context", "span 0", "span 1"]
    assert counts["span 0"] + counts["span 1"] == counts["instruction"]
    enc = encode(tiny_llama.tokenizer, PROMPT, RESPONSE)
    assert counts["instruction"] + counts["context"] == len(enc.prompt_positions)
    assert (frame.effect == frame.logprob - frame.logprob_ablated).all()
    assert len(frame) == 4 * len(enc.response_positions)


def test_a_part_without_tokens_has_no_effect(tiny_llama):
    whole = [(0, len(PROMPT))]
    frame = ablate(tiny_llama, PROMPT, RESPONSE, instruction_spans=whole, how="remove")
    context = frame[frame.part == "context"]
    assert (context.n_part_tokens == 0).all() and (context.effect == 0).all()
    assert (frame[frame.part == "instruction"].effect != 0).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(how="zero"), "how must be one of remove, mask, mean"),
    (dict(response=" "), "field 'response' is empty"),
    (dict(instruction_spans=[(0, 999)]), "field 'instruction_spans'"),
])
def test_bad_input_is_one_line_error(tiny_llama, kwargs, message):
    args = dict(prompt=PROMPT, response=RESPONSE, instruction_spans=SPANS) | kwargs
    with pytest.raises(InputError, match=message):
        ablate(tiny_llama, args.pop("prompt"), args.pop("response"), **args)


def test_ablate_prompts_one_frame_for_a_set(tiny_llama):
    records = [
        PromptRecord("a", PROMPT, RESPONSE, tuple(SPANS), "g1"),
        PromptRecord("bad", PROMPT, RESPONSE, ((0, 3),), "g1", error="p.jsonl:2: example 'bad': broken"),
        PromptRecord("gen", "Write a story about the dog:", None, ((0, 28),), "g2"),
    ]
    frame = ablate_prompts(tiny_llama, records, how="mask", progress=False)
    assert frame.columns[:3].tolist() == ["id", "group", "error"]
    assert frame.id.unique().tolist() == ["a", "bad", "gen"]
    single = ablate(tiny_llama, PROMPT, RESPONSE, instruction_spans=SPANS, how="mask")
    assert frame[frame.id == "a"].effect.tolist() == single.effect.tolist()
    bad = frame[frame.id == "bad"]
    assert len(bad) == 1 and "broken" in bad.error.iloc[0] and bad.effect.isna().all()
    generated = frame[frame.id == "gen"]
    assert generated.error.isna().all() and len(generated) >= 2 and set(generated.part) == {"instruction", "context"}
