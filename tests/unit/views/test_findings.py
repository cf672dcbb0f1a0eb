"""The findings' verdicts: every branch of Findings 1 and 2 on constructed frames whose answer
is known, and the attribution finding's count of prompts left out for lack of a score."""

import numpy as np
import pandas as pd
import pytest

from mechit.heads.shift import head_shift
from mechit.stats import compare_models
from mechit.views.findings import _finding_attribution, fmt, headline


def _examples(base_scores, tuned_scores):
    ids = [f"p{i}" for i in range(len(base_scores))]
    return pd.DataFrame({
        "id": ids * 2, "group": ["g"] * (2 * len(ids)), "model": ["base"] * len(ids) + ["tuned"] * len(ids),
        "instruction_score": list(base_scores) + list(tuned_scores),
    })


def test_excluded_prompts_are_counted_and_named_in_the_finding():
    examples = _examples([0.2, 0.4, 0.3, np.nan], [0.5, 0.7, 0.6, 0.9])  # p3: base gave no response
    finding = _finding_attribution(examples, compare_models(examples, "base", "tuned", n_boot=200))
    assert "n = 3 prompts (1 left out: a model gave no scorable response)" in finding["measured"]


def test_no_exclusion_note_when_every_prompt_is_scored():
    examples = _examples([0.2, 0.4, 0.3], [0.5, 0.7, 0.6])
    finding = _finding_attribution(examples, compare_models(examples, "base", "tuned", n_boot=200))
    assert "n = 3 prompts; higher in" in finding["measured"]
    assert "left out" not in finding["measured"]


# ------------------------------------------------ Finding 1: every verdict branch, on constructed frames


def _finding_1(base, tuned):
    examples = _examples(base, tuned)
    stats = compare_models(examples, "base", "tuned", n_boot=2000)
    return _finding_attribution(examples, stats), stats[stats["group"] == "(all)"].iloc[0]


def test_finding_1_holds_when_every_prompt_scores_higher():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.5, 20)
    finding, row = _finding_1(base, base + 0.1 + rng.normal(0, 0.02, 20))
    assert row["paired_p"] < 1e-6 and row["paired_ci_low"] > 0
    assert finding["holds"] is True
    assert finding["verdict"] == ("Holds on this pair: the tuned model's responses rest more on the instruction part "
                                  "of the prompt (paired t-test, one-sided p < 0.05).")
    assert finding["numbers"]["test"] == "paired t-test" and finding["numbers"]["p_value"] == row["paired_p"]


def test_finding_1_points_the_other_way():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 0.7, 20)
    finding, row = _finding_1(base, base - 0.1 + rng.normal(0, 0.02, 20))
    assert row["mean_diff"] < 0 and row["paired_p"] > 0.999
    assert finding["holds"] is False
    assert finding["verdict"].startswith("Does not hold on this pair: the difference points the other way "
                                         "(paired t-test, one-sided p = 1")


def test_finding_1_not_significant():
    base = np.linspace(0.2, 0.6, 20)
    diffs = np.array([0.3, -0.29] * 10)  # mean +0.005, sd 0.30: t = 0.074, p = 0.47
    finding, row = _finding_1(base, base + diffs)
    assert row["mean_diff"] == pytest.approx(0.005) and 0.4 < row["paired_p"] < 0.5
    assert finding["holds"] is False
    assert finding["verdict"].startswith("Not shown on this pair: the difference points the paper's way but is not "
                                         "significant (paired t-test, one-sided p = 0.47")


def test_finding_1_too_few_examples():
    finding, row = _finding_1([0.2], [0.6])
    assert np.isnan(row["paired_p"]) and np.isnan(row["p_value"])
    assert finding["holds"] is None
    assert finding["verdict"] == ("Not tested on this pair: too few examples for the paired t-test "
                                  "(it needs at least 2 on each side).")


def test_finding_1_rests_on_the_paired_design_when_welch_misses_a_consistent_gain():
    """The issue's case: 30 of 30 prompts higher, paired CI about [0.050, 0.056], Welch p about 0.26."""
    rng = np.random.default_rng(4)
    base = rng.normal(0.5, 0.32, 30)
    finding, row = _finding_1(base, base + 0.053 + rng.normal(0, 0.008, 30))
    assert (row["n"], (np.array(finding["numbers"]["diff_ci"]) > 0).all()) == (30, True)
    assert 0.049 < row["paired_ci_low"] < row["paired_ci_high"] < 0.057
    assert 0.2 < row["p_value"] < 0.35  # the paper's unpaired Welch test sees nothing
    assert row["ci_low"] < 0 < row["ci_high"]  # ... and its own (two-sample) interval agrees with it
    assert finding["holds"] is True and "not significant" not in finding["verdict"]
    assert "paired t-test" in finding["verdict"]
    measured = finding["measured"]
    assert f"paired bootstrap 95 % CI [{fmt(row['paired_ci_low'])}, {fmt(row['paired_ci_high'])}]" in measured
    assert f"the paper's test (Welch, one-sided, unpaired): p = {fmt(row['p_value'])}" in measured


def test_finding_1_means_and_intervals_cover_the_same_prompts():
    examples = _examples([0.2, 0.4, 0.3, np.nan], [0.5, 0.7, 0.6, 0.0])  # p3 scored by tuned only
    finding = _finding_attribution(examples, compare_models(examples, "base", "tuned", n_boot=2000))
    numbers = finding["numbers"]
    assert numbers["tuned_mean"] == pytest.approx(0.6) and numbers["base_mean"] == pytest.approx(0.3)
    assert 0.5 <= numbers["tuned_ci"][0] <= 0.6 <= numbers["tuned_ci"][1] <= 0.7  # p3's 0.0 is not in it
    assert numbers["diff"] == pytest.approx(numbers["tuned_mean"] - numbers["base_mean"])


# ------------------------------------------------ Finding 2: every verdict branch, on constructed frames


def _overall(instruction_mean, general_mean, p, n_instruction=38, n_general=200):
    return pd.DataFrame({"instruction_mean": [instruction_mean], "general_mean": [general_mean], "t": [0.0],
                         "p_value": [p], "n_instruction": [n_instruction], "n_general": [n_general]})


def _finding_2(*args, **kwargs):
    return headline({"head_shift_overall": _overall(*args, **kwargs)})["findings"][1]


def test_finding_2_holds():
    finding = _finding_2(0.6, 0.4, 0.01)
    assert finding["holds"] is True
    assert finding["verdict"] == ("Holds on this pair: tuning adds head knowledge about instruction verbs more than "
                                  "about other verbs (Welch t-test, one-sided p < 0.05).")


def test_finding_2_points_the_other_way():
    finding = _finding_2(0.435, 0.455, 0.73)
    assert finding["holds"] is False
    assert finding["verdict"] == ("Does not hold on this pair: the difference points the other way "
                                  "(Welch t-test, one-sided p = 0.73).")


def test_finding_2_not_significant():
    finding = _finding_2(0.52, 0.5, 0.4)
    assert finding["holds"] is False
    assert finding["verdict"] == ("Not shown on this pair: the difference points the paper's way but is not "
                                  "significant (Welch t-test, one-sided p = 0.4 ≥ 0.05).")


def test_finding_2_too_few_verbs():
    finding = _finding_2(0.6, 0.4, float("nan"), n_instruction=1)
    assert finding["holds"] is None and finding["verdict"].startswith("Not tested on this pair: too few examples")


def test_finding_2_from_head_shift_on_planted_pairs():
    """Tuned heads gain pairs with the instruction verbs and lose pairs with the general verbs."""
    instruction, general = ["write", "tell", "give"], ["run", "walk", "eat"]
    rows = lambda verbs, heads: [dict(layer=0, head=h, word_a=v, word_b=f"x{h}", n_dims=2)  # noqa: E731
                                 for v in verbs for h in heads]
    base = pd.DataFrame(rows(instruction, [0]) + rows(general, [0, 1, 2, 3]) + rows(["eat"], [4]))
    tuned = pd.DataFrame(rows(instruction, [0, 1, 2, 3]) + rows(["write", "give"], [4]) + rows(general, [0])
                         + rows(["run"], [1]))
    overall = head_shift(base, tuned, instruction_verbs=instruction, general_verbs=general, layer_group=1)
    finding = headline({"head_shift_overall": overall})["findings"][1]
    assert overall["instruction_mean"][0] > 0.9 and overall["general_mean"][0] < 0.2
    assert finding["holds"] is True and finding["numbers"]["p_value"] < 0.05
    swapped = head_shift(tuned, base, instruction_verbs=instruction, general_verbs=general, layer_group=1)
    assert headline({"head_shift_overall": swapped})["findings"][1]["holds"] is False
