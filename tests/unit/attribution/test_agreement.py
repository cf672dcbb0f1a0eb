"""Agreement of the gradient view and the causal view on constructed frames whose answer is known by hand."""

import math

import pandas as pd
import pytest

from mechit.attribution.agreement import EXAMPLE_COLUMNS, agreement, gradient_vs_ablation

# model "m": five scored examples, e4 ablated with an error, e5 had no response to score
IDS = ["e0", "e1", "e2", "e3", "e4"]
SCORES = [0.1, 0.2, 0.3, 0.4, 0.5]
INSTRUCTION_EFFECT = [1.0, 3.0, 2.0, 2.5, None]
CONTEXT_EFFECT = [2.0, 1.0, 4.0, 2.5, None]  # causal part: context, instruction, context, tie
# (instruction density, context density) per token; gradient part: context, instruction, instruction, tie
DENSITY = {"e0": [(0.5, 0.0), (0.0, 1.0)], "e1": [(1.0, 0.0), (0.0, 0.25), (0.0, 0.25)],
           "e2": [(1.0, 0.0), (0.0, 0.5)], "e3": [(0.0, 0.0), (0.0, 0.0)], "e4": [(1.0, 0.0), (0.0, 1.0)]}


def _frames():
    examples = pd.DataFrame({
        "model": "m", "id": IDS + ["e5"], "group": "g", "status": ["ok"] * 5 + ["empty_response"],
        "instruction_score": SCORES + [None], "n_response_tokens": [3] * 5 + [0],
    })
    tokens = pd.DataFrame([
        {"model": "m", "id": i, "density": inst + ctx, "in_instruction": inst > 0 or (ctx == 0 and k == 0)}
        for i, rows in DENSITY.items() for k, (inst, ctx) in enumerate(rows)
    ])
    ablation = []
    for i, a, c in zip(IDS, INSTRUCTION_EFFECT, CONTEXT_EFFECT):
        if a is None:
            ablation.append({"model": "m", "id": i, "group": "g", "error": f"example {i!r}: too long"})
            continue
        for part, total in (("instruction", a), ("context", c)):
            for j in range(3):  # one row per response token, the total repeated
                ablation.append({"model": "m", "id": i, "group": "g", "error": None, "how": "mask", "part": part,
                                 "response_index": j, "total_effect": total})
    return examples, tokens, pd.DataFrame(ablation)


def test_per_example_views_and_parts():
    frame = gradient_vs_ablation(*_frames())
    assert frame.columns.tolist() == EXAMPLE_COLUMNS
    assert frame["id"].tolist() == IDS  # e5 (no response) has no gradient view to compare
    assert frame["instruction_mass"].tolist() == [0.5, 1.0, 1.0, 0.0, 1.0]
    assert frame["context_mass"].tolist() == [1.0, 0.5, 0.5, 0.0, 1.0]
    assert frame["gradient_part"].tolist() == ["context", "instruction", "instruction", "tie", "tie"]
    assert frame["causal_part"].tolist() == ["context", "instruction", "context", "tie", None]
    assert frame["same_part"].tolist() == [True, True, False, False, False]
    assert frame["instruction_effect"].tolist()[:4] == [1.0, 3.0, 2.0, 2.5]
    assert math.isnan(frame["instruction_effect"].iloc[4]) and frame["error"].iloc[4] == "example 'e4': too long"
    assert frame["error"].iloc[:4].isna().all() and frame["how"].iloc[:4].eq("mask").all()


def test_summary_numbers_by_hand():
    summary = agreement(gradient_vs_ablation(*_frames()))
    row = summary.iloc[0]
    assert (row["model"], row["how"], row["n"]) == ("m", "mask", 4)  # e4 failed to ablate
    assert row["instruction_effect"] == pytest.approx((1 + 3 + 2 + 2.5) / 4, rel=1e-15)
    assert row["context_effect"] == pytest.approx((2 + 1 + 4 + 2.5) / 4, rel=1e-15)
    # ranks of the scores 1 2 3 4, of the effects 1 4 2 3: sum d^2 = 6, rho = 1 - 6 * 6 / (4 * 15)
    assert row["rank_correlation"] == pytest.approx(0.4, rel=1e-12)
    assert 0 < row["rank_p_value"] < 1
    assert row["same_part_share"] == 0.5  # e0, e1 agree; e2 disagrees; e3 is a tie in both views: no part named


def test_models_are_summarised_apart_and_too_few_examples_give_nan():
    examples, tokens, ablation = _frames()
    other = [frame.assign(model="b") for frame in (examples, tokens, ablation)]
    examples, tokens, ablation = (pd.concat([o[o["id"].isin(["e0", "e1"])], f]) for o, f in
                                  zip(other, (examples, tokens, ablation)))
    summary = agreement(gradient_vs_ablation(examples, tokens, ablation))
    assert summary["model"].tolist() == ["b", "m"] and summary["n"].tolist() == [2, 4]
    assert math.isnan(summary["rank_correlation"].iloc[0]) and math.isnan(summary["rank_p_value"].iloc[0])
    assert summary["same_part_share"].iloc[0] == 1.0 and summary["rank_correlation"].iloc[1] == pytest.approx(0.4)
