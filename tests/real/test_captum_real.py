"""captum's InputXGradient as an oracle for mechit's raw attribution on SmolLM2-135M-Instruct
(one short example; the tiny-model version and its reasoning: tests/unit/attribution/test_captum_oracle.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from captum.attr import InputXGradient

from mechit.attribution import attribute
from mechit.tokens import encode

pytestmark = pytest.mark.real

PROMPT = "Summarize in one sentence: The cat sat on the warm mat."
RESPONSE = " A cat sat."


def rel_diff(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def captum_raw(hf, ids, prompt_positions, response_positions):
    targets, rows = ids[response_positions], torch.arange(len(response_positions))

    def probabilities(embedded):
        logits = hf(inputs_embeds=embedded).logits[0, response_positions - 1]
        return torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)[rows, targets][None]

    embedded = hf.get_input_embeddings()(ids[None]).detach()
    explainer = InputXGradient(probabilities)
    return torch.stack([explainer.attribute(embedded, target=j)[0, prompt_positions].sum(-1)
                        for j in range(len(response_positions))], dim=1).detach()


def test_input_x_gradient_equals_mechit_raw_on_smollm2(smollm2, smollm2_hf):
    enc = encode(smollm2.tokenizer, PROMPT, RESPONSE)
    args = (enc.input_ids, enc.prompt_positions, enc.response_positions)
    ours = attribute(smollm2, PROMPT, RESPONSE).raw
    captum32 = captum_raw(smollm2_hf, *args)
    captum64 = captum_raw(copy.deepcopy(smollm2_hf).double(), *args)
    fp32_error = rel_diff(captum32, captum64)
    print(f"SmolLM2: mechit vs captum max rel diff {rel_diff(ours, captum32):.2e}, "
          f"vs captum fp64 {rel_diff(ours.double(), captum64):.2e}, captum fp32 error {fp32_error:.2e}")
    assert rel_diff(ours.double(), captum64) <= 2 * fp32_error
