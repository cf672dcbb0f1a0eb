"""Positive control for attribution (PAPER §1): does gradient × input see an instruction the
tuned model provably depends on?

On the organism pair, the reference answers of held-out prompts (two per task, nine tasks)
are scored teacher-forced by both models. Ablation (:func:`mechit.attribution.ablation.ablate`)
shows the tuned model's answer depends on the instruction: removing the instruction
lowers the tuned model's log-probability of the answer by several nats on average, and
far more than it lowers the base model's (whose answer the instruction does not help).
The same prompts' gradient × input instruction scores point the other way: the tuned
model gives the instruction a *lower* score than the base model.

So the test asserts the measured directions: ablation sees the planted dependence, the
gradient view does not. That is the paper's Finding 1 failing on a pair where its premise
is causally true, a limit of gradient × input (local and saturating: the confident tuned
model has small gradients where it relies most), not of the pair. docs/faithfulness.md
quotes the numbers.
"""

from __future__ import annotations

from collections import defaultdict

import pandas as pd
import pytest

import mechit
from mechit.attribution import attribute
from mechit.attribution.ablation import ablate
from mechit.organism import held_out_prompts

PER_TASK = 2


@pytest.fixture(scope="module")
def measured():
    """One row per (model, example): instruction score, instruction and context ablation effects."""
    pair = mechit.load_pair()
    by_task = defaultdict(list)
    for record in held_out_prompts():
        by_task[record["group"]].append(record)
    chosen = [r for task in sorted(by_task) for r in by_task[task][:PER_TASK]]
    rows = []
    for name, model in (("base", pair.base), ("tuned", pair.tuned)):
        for r in chosen:
            spans = [tuple(s) for s in r["instruction_spans"]]
            a = attribute(model, r["prompt"], r["response"], instruction_spans=spans, chat_template=True)
            row = {"model": name, "id": r["id"], "score": a.score}
            for how in ("remove", "mean"):
                frame = ablate(model, r["prompt"], r["response"], instruction_spans=spans, how=how,
                               chat_template=True)
                totals = frame.groupby("part").total_effect.first()
                row[f"{how}_instruction"], row[f"{how}_context"] = totals["instruction"], totals["context"]
            rows.append(row)
    return pd.DataFrame(rows)


def test_ablation_shows_the_tuned_answer_depends_on_the_instruction(measured):
    means = measured.groupby("model").mean(numeric_only=True)
    print(means.round(3).to_string())
    for how in ("remove", "mean"):
        assert means.loc["tuned", f"{how}_instruction"] > 2.0  # nats of log p(answer) lost without it
        assert means.loc["tuned", f"{how}_instruction"] > means.loc["base", f"{how}_instruction"] + 2.0
    paired = measured.pivot(index="id", columns="model", values="remove_instruction")
    assert (paired["tuned"] > paired["base"]).mean() >= 0.75


def test_gradient_x_input_gives_the_tuned_instruction_a_lower_score(measured):
    """The measured direction: gradient × input does not see the dependence ablation shows."""
    means = measured.groupby("model").score.mean()
    assert means["tuned"] < means["base"]
