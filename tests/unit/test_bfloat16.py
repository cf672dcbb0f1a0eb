"""Every analysis runs on a bfloat16 model on the CPU and agrees with the float32 run (issue 17).

The same tiny Llama pair is loaded twice, in float32 and in bfloat16 (``load_model(...,
dtype="bfloat16")``). Nothing may crash on dtype mixing, and each analysis's numbers agree
within ``GROWTH * U * scale``: ``U = 2^-8`` is bfloat16's unit roundoff (8 significand bits),
``scale`` the largest magnitude of the float32 numbers compared, and ``GROWTH`` the
documented growth factor of the rounding through the analysis (weights rounded once, a
forward pass of bf16 products with float32 accumulation, a backward pass for attribution).

Compared: attribution's raw matrix and target probabilities; ablation's log-probabilities;
the sorted scores of qk/ov pairs (the k-th largest entry moves by at most the largest
change of any entry, so it is comparable even where near-ties reorder pairs); qk-dims and
neuron-token scores on the pairs/words both runs found; the explained variance of FFN
concepts (Weyl: singular values move by at most the change of the matrix); the rotation's
neuron cosines. Discrete choices (which words pass a threshold) may differ under rounding
and are not compared. Measured worst ``error / (U * scale)`` per analysis: see
``MEASURED`` and docs/loading.md ("bfloat16 on the CPU").
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from wordfreq import top_n_list

from mechit.attribution.ablation import ablate
from mechit.attribution.example import attribute
from mechit.ffn.concepts import ffn_concepts
from mechit.ffn.neurons import neuron_tokens
from mechit.ffn.rotation import ffn_rotation
from mechit.heads.pairs import head_pairs
from mechit.models import ModelPair, load_model

U = 2.0**-8
# worst error / U measured on the tiny pair (x86 CPU, torch 2.13); GROWTH covers the worst
# (attribution: a backward pass through bf16 blocks) about 3.6 times over
MEASURED = {"attribute": 2.22, "qk": 1.57, "ov": 1.09, "ffn_rotation": 0.91, "neuron_tokens": 0.63,
            "qk-dims": 0.60, "ablate": 0.08, "ffn_concepts": 0.07}
GROWTH = 8

PROMPT, RESPONSE, SPANS = "Translate the cat into French, please.", " le chat", [(0, 9)]
WORDS = ["cat", "dog", "translate", "French", "the", "house", "red", "blue", "sun", "moon", "water", "fire"]
FREQUENT = [w for w in top_n_list("en", 300) if w.isalpha()][:200]  # enough words for qk-dims pairs on tiny


@pytest.fixture(scope="module")
def pairs(tiny_pair_dirs) -> dict[str, ModelPair]:
    out = {}
    for dtype in ("float32", "bfloat16"):
        base, tuned = (load_model(d, device="cpu", dtype=dtype) for d in tiny_pair_dirs)
        assert base.W_E.dtype == getattr(torch, dtype)
        out[dtype] = ModelPair(base=base, tuned=tuned)
    return out


def _relative(low, ref) -> float:
    """max |low - ref| / max |ref| (arrays of equal shape)."""
    low, ref = np.asarray(low, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert low.shape == ref.shape and np.isfinite(low).all()
    return float(np.abs(low - ref).max() / max(np.abs(ref).max(), 1e-30)) if ref.size else 0.0


def _on_common(low: pd.DataFrame, ref: pd.DataFrame, keys: list[str], column: str) -> float:
    both = ref.merge(low, on=keys, suffixes=("_ref", "_low"))
    assert len(both) > 0, "the bf16 and float32 runs share no rows"
    return _relative(both[f"{column}_low"], both[f"{column}_ref"])


def _concepts(pair):
    return pair.run(ffn_concepts, 0, n_components=3, top_k=3, words=WORDS, progress=False)


def attribution(pair):
    a = attribute(pair.tuned, PROMPT, RESPONSE, instruction_spans=SPANS)
    return a.raw.double().numpy(), a.probs.double().numpy()


def errors(name, low: ModelPair, ref: ModelPair) -> list[float]:
    """The relative differences of one analysis between the bf16 and float32 pairs."""
    if name == "attribute":
        (raw_l, p_l), (raw_r, p_r) = attribution(low), attribution(ref)
        return [_relative(raw_l, raw_r), _relative(p_l, p_r)]
    if name == "ablate":
        run = lambda pair: ablate(pair.tuned, PROMPT, RESPONSE, instruction_spans=SPANS, per_span=True)
        a, b = run(low), run(ref)
        return [_relative(a[c], b[c]) for c in ("logprob", "logprob_ablated")]
    if name in ("qk", "ov"):
        run = lambda pair: head_pairs(pair.tuned, WORDS, method=name, top_k=4, progress=False)
        a, b = run(low), run(ref)
        order = ["layer", "head", "rank"]
        return [_relative(a.sort_values(order)["score"], b.sort_values(order)["score"])]
    if name == "qk-dims":
        run = lambda pair: head_pairs(pair.tuned, FREQUENT, method="qk-dims", similarity="embedding", top_k=10,
                                      n_frequent=100, layers=0, progress=False)
        return [_on_common(run(low), run(ref), ["layer", "head", "dim", "word_a", "word_b"], "score")]
    if name == "ffn_concepts":
        a, b = (c.drop_duplicates(["model", "layer", "component"]) for c in (_concepts(low), _concepts(ref)))
        return [_relative(a["explained_variance"], b["explained_variance"])]
    if name == "neuron_tokens":
        run = lambda pair: neuron_tokens(pair.tuned, [0, 1], [0, 3, 5], k=5)
        return [_on_common(run(low), run(ref), ["layer", "neuron", "direction", "word"], "score")]
    if name == "ffn_rotation":
        run = lambda pair: ffn_rotation(pair, _concepts(pair), 0, k=3, n_changed=2, n_tokens=2, progress=False)
        a, b = run(low).neurons, run(ref).neurons
        return [_relative(a[c], b[c]) for c in ("cos_out", "cos_in")]
    raise AssertionError(name)


NAMES = ["attribute", "ablate", "qk", "ov", "qk-dims", "ffn_concepts", "neuron_tokens", "ffn_rotation"]


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_agrees_with_float32(pairs, name):
    worst = max(errors(name, pairs["bfloat16"], pairs["float32"]))
    assert worst <= GROWTH * U, f"{name}: bf16 differs by {worst:.3g} = {worst / U:.2f} U (bound {GROWTH} U)"
    assert worst > 0, f"{name}: the bf16 run equals the float32 run exactly: it did not run in bf16"
