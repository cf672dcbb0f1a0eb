"""The attribution finding states how many prompts were left out for lack of a score."""

import numpy as np
import pandas as pd

from mechit.views.findings import _finding_attribution
from mechit.stats import compare_models


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
