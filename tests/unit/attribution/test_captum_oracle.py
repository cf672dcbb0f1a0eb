"""captum 0.9 as an oracle for mechit's attribution and ablation, on the tiny Llama, GPT-2 and Gemma.

- Gradient: captum's ``InputXGradient`` on the input embeddings of a plain Hugging Face
  model (loaded from the same directory, not through TransformerLens), with the
  teacher-forced probability of each response token as the target, must equal
  ``mechit.attribute(...).raw``.
- Ablation: captum's ``FeatureAblation`` through ``LLMAttribution`` (teacher-forced,
  ``forward_in_tokens=False``, log-probability target), with mechit's baseline token and a
  feature mask that groups the prompt tokens by part, must equal
  ``ablate(..., how="mask")`` per part and response token, and in total.

Tolerances come from measurements on the same example: captum's own float32 result
against captum on a float64 copy of the model (``fp32_error``, relative to the largest
entry). mechit's float32 result must be as close to captum's float64 value as a float32
evaluation is, allowing twice captum's own error for a different order of operations
(mechit's batched products, block by block).
"""

from __future__ import annotations

import copy

import pytest
import torch
from captum.attr import FeatureAblation, InputXGradient, LLMAttribution, TextTokenInput
from transformers import AutoModelForCausalLM

from mechit.attribution import attribute
from mechit.attribution.ablation import ablate, mask_token_id, parts
from mechit.tokens import encode

PROMPT = "Translate this text into french: the cat sat on the mat."
RESPONSE = " answer the dog"
SPANS = [(0, 31)]
FAMILIES = ["llama", "gpt2", "gemma"]


def rel_diff(a, b) -> float:
    """Largest absolute difference relative to the largest entry of ``b``."""
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def models(family, request):
    """(mechit's TransformerBridge, plain HF float32 model, the same in float64)."""
    bridge = request.getfixturevalue(f"tiny_{family}")
    directory = request.getfixturevalue(f"tiny_{family}_dir")
    hf32 = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
    return bridge, hf32, copy.deepcopy(hf32).double()


def captum_input_x_gradient(hf, ids, prompt_positions, response_positions):
    """captum's InputXGradient of each response token's probability, summed over d_model: [n_prompt, m]."""
    targets = ids[response_positions]
    rows = torch.arange(len(response_positions))

    def probabilities(embedded):  # (1, seq, d) -> (1, m)
        logits = hf(inputs_embeds=embedded).logits[0, response_positions - 1]
        return torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)[rows, targets][None]

    embedded = hf.get_input_embeddings()(ids[None]).detach()  # Gemma's √d_model scale included
    explainer = InputXGradient(probabilities)
    columns = [explainer.attribute(embedded, target=j)[0, prompt_positions].sum(-1)
               for j in range(len(response_positions))]
    return torch.stack(columns, dim=1).detach()


def test_input_x_gradient_equals_mechit_raw(models, family):
    bridge, hf32, hf64 = models
    enc = encode(bridge.tokenizer, PROMPT, RESPONSE)
    a = attribute(bridge, PROMPT, RESPONSE, instruction_spans=SPANS)
    args = (enc.input_ids, enc.prompt_positions, enc.response_positions)
    captum32, captum64 = captum_input_x_gradient(hf32, *args), captum_input_x_gradient(hf64, *args)
    fp32_error = rel_diff(captum32, captum64)
    assert a.raw.shape == captum32.shape and a.raw.abs().max() > 0
    print(f"{family}: mechit vs captum max rel diff {rel_diff(a.raw, captum32):.2e} (fp32), "
          f"{rel_diff(a.raw.double(), captum64):.2e} (vs captum fp64); captum fp32 error {fp32_error:.2e}")
    assert rel_diff(a.raw.double(), captum64) <= 2 * fp32_error


def test_input_x_gradient_of_log_probability_converts_with_p(models):
    """A wrapper that attributes log p gives d log p / de; times mechit's p it is mechit's dp/de (dp = p · d log p)."""
    bridge, hf32, hf64 = models
    enc = encode(bridge.tokenizer, PROMPT, RESPONSE)
    a = attribute(bridge, PROMPT, RESPONSE)
    ids, pp, rp = enc.input_ids, enc.prompt_positions, enc.response_positions
    targets, rows = ids[rp], torch.arange(len(rp))

    def log_probabilities(embedded):
        return torch.log_softmax(hf32(inputs_embeds=embedded).logits[0, rp - 1].float(), -1)[rows, targets][None]

    embedded = hf32.get_input_embeddings()(ids[None]).detach()
    explainer = InputXGradient(log_probabilities)
    by_log = torch.stack([explainer.attribute(embedded, target=j)[0, pp].sum(-1) for j in range(len(rp))], dim=1)
    converted = by_log.detach() * a.probs[None, :]
    direct64 = captum_input_x_gradient(hf64, ids, pp, rp)
    fp32_error = rel_diff(captum_input_x_gradient(hf32, ids, pp, rp), direct64)
    assert rel_diff(converted.double(), direct64) <= 2 * fp32_error
    assert rel_diff(by_log.detach().double(), direct64) > 0.05  # without the factor p they differ


def captum_mask_ablation(hf, tokenizer, prompt_ids, response_ids, groups, baseline):
    """LLMAttribution(FeatureAblation) of the response's log-probability: (per token [m, n], total [n])."""
    bos = tokenizer.bos_token
    text = PROMPT if tokenizer.encode(PROMPT)[0] == tokenizer.bos_token_id else bos + PROMPT  # GPT-2 adds none
    inp = TextTokenInput(text, tokenizer, baselines=baseline, skip_tokens=[int(prompt_ids[0])])
    assert inp.inp_tensor[0].tolist() == prompt_ids.tolist()  # captum sees mechit's token ids
    explainer = LLMAttribution(FeatureAblation(hf), tokenizer, attr_target="log_prob")
    result = explainer.attribute(inp, target=response_ids, forward_in_tokens=False, feature_mask=groups[None])
    return result.token_attr, result.seq_attr


def test_feature_ablation_equals_mask_ablation(models, family):
    bridge, hf32, hf64 = models
    tokenizer = bridge.tokenizer
    enc = encode(tokenizer, PROMPT, RESPONSE)
    first = int(enc.response_positions[0])
    assert enc.prompt_positions.tolist() == list(range(1, first))  # BOS, prompt, then the response
    prompt_ids, response_ids = enc.input_ids[:first], enc.input_ids[first:]
    masks = parts(enc, SPANS)
    groups = torch.where(masks["instruction"], 0, 1)  # feature 0 = instruction, 1 = context
    baseline = mask_token_id(tokenizer)
    per_token32, total32 = (t.cpu() for t in captum_mask_ablation(hf32, tokenizer, prompt_ids, response_ids, groups,
                                                                  baseline))  # compared on the host
    per_token64, total64 = (t.cpu() for t in captum_mask_ablation(hf64, tokenizer, prompt_ids, response_ids, groups,
                                                                  baseline))
    frame = ablate(bridge, PROMPT, RESPONSE, instruction_spans=SPANS, how="mask")
    scale = float(per_token64.abs().max())
    fp32_error = float((per_token32.double() - per_token64).abs().max()) / scale
    worst = 0.0
    for part, feature in (("instruction", 0), ("context", 1)):
        column = int(torch.nonzero(groups.cpu() == feature)[0])
        rows = frame[frame.part == part].sort_values("response_index")
        ours = torch.tensor(rows.effect.to_numpy(), device="cpu")
        assert ours.abs().max() > 0
        worst = max(worst, float((ours - per_token32[:, column].double()).abs().max()) / scale)
        torch.testing.assert_close(ours, per_token64[:, column].double(), rtol=0, atol=2 * fp32_error * scale)
        torch.testing.assert_close(torch.tensor(rows.total_effect.iloc[0], device="cpu").double(), total64[column].double(),
                                   rtol=0, atol=2 * fp32_error * scale * len(rows))
    assert worst <= 2 * fp32_error
    print(f"{family}: FeatureAblation vs ablate(mask) max rel diff {worst:.2e}, captum fp32 error {fp32_error:.2e}")
