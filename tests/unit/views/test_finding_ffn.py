"""Finding 3 (views/findings.py::_finding_ffn) and the per-group user-task test it rests on
(ffn/labels.py::user_task_shares), on constructed label frames with known answers."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from mechit.ffn.labels import label_proportions, user_task_shares
from mechit.views.findings import _finding_ffn, user_task_test

LABELLER = pd.DataFrame([{"labeller": "embedding", "n_seeds": 3, "seeds": "resampled word lists",
                          "task_accuracy": 0.9375, "task_macro_f1": 0.9364, "level_accuracy": 0.9844,
                          "level_macro_f1": 0.9844, "n_task": 80, "n_level": 64}])


def planted(user: dict[tuple[str, int, int], int], n: int = 10) -> pd.DataFrame:
    """Task labels: for (model, layer group, seed), ``user[...]`` of ``n`` concepts get a user task
    (cycling writing, math, coding, translation), the rest "none"; 4 layers per group."""
    rows = []
    tasks = itertools.cycle(["writing", "math", "coding", "translation"])
    for (model, group, seed), k in user.items():
        for c in range(n):
            rows.append({"model": model, "layer": 4 * group + c % 4, "component": c, "seed": seed,
                         "question": "task", "label": next(tasks) if c < k else "none"})
    return pd.DataFrame(rows)


def frame(base: list[list[int]], tuned: list[list[int]]) -> pd.DataFrame:
    """``base[g][s]``: user-task concepts (of 10) in layer group g at seed s; likewise tuned."""
    user = {}
    for model, counts in (("base", base), ("tuned", tuned)):
        for g, per_seed in enumerate(counts):
            for s, k in enumerate(per_seed):
                user[(model, g, s)] = k
    return planted(user)


def test_user_task_shares_against_scipy():
    labels = frame(base=[[1, 2, 3], [4, 4, 5]], tuned=[[5, 6, 6], [4, 5, 5]])
    table = user_task_shares(labels)
    assert table["layer_group"].isna().tolist() == [True, False, False]
    g0 = table[table["layer_group"] == 0].iloc[0]
    assert g0["base"] == pytest.approx(0.2) and g0["tuned"] == pytest.approx(17 / 30)
    ref = scipy_stats.ttest_ind([0.5, 0.6, 0.6], [0.1, 0.2, 0.3], equal_var=False, alternative="greater")
    assert g0["t"] == pytest.approx(ref.statistic, rel=1e-12) and g0["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    overall = table.iloc[0]  # per seed, over both groups: base (1+4, 2+4, 3+5)/20, tuned (5+4, 6+5, 6+5)/20
    ref = scipy_stats.ttest_ind([0.45, 0.55, 0.55], [0.25, 0.3, 0.4], equal_var=False, alternative="greater")
    assert overall["diff"] == pytest.approx(0.2) and overall["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert (table["n_seeds"] == 3).all()


def test_every_task_but_none_counts_as_a_user_task():
    # tuned concepts are coding and translation only: cutting USER_TASKS to one task loses them
    labels = pd.DataFrame({"model": ["base"] * 4 + ["tuned"] * 4, "layer": 0, "component": [0, 1, 2, 3] * 2,
                           "seed": 0, "question": "task",
                           "label": ["none"] * 4 + ["coding", "translation", "coding", "none"]})
    assert user_task_shares(labels).iloc[0]["tuned"] == pytest.approx(0.75)
    assert user_task_test(labels)["tuned_user"] == 3


def test_fisher_counts_and_one_sided_p():
    # tuned 6 of 8 user tasks, base 1 of 8: P(X >= 6) for the hypergeometric (16 concepts, 7 user, 8 drawn)
    labels = pd.DataFrame({"model": ["base"] * 8 + ["tuned"] * 8, "seed": 0, "question": "task",
                           "label": ["math"] + ["none"] * 7 + ["writing"] * 6 + ["none"] * 2})
    result = user_task_test(labels)
    p = scipy_stats.hypergeom(16, 7, 8).sf(5)
    assert (result["base_user"], result["tuned_user"]) == (1, 6)
    assert result["p_value"] == pytest.approx(p, rel=1e-12) and result["p_value"] < 0.05


def test_proportions_sum_to_one_per_group_model_and_question():
    rng = np.random.default_rng(0)
    n = 400
    labels = pd.DataFrame({"model": rng.choice(["base", "tuned"], n), "layer": rng.integers(0, 12, n),
                           "component": np.arange(n), "seed": rng.integers(0, 3, n),
                           "question": rng.choice(["task", "level"], n)})
    labels["label"] = [rng.choice(["writing", "math", "none"]) if q == "task" else rng.choice(["syntax", "semantics"])
                       for q in labels["question"]]
    props = label_proportions(labels)
    sums = props.groupby(["model", "layer_group", "question"])["proportion"].sum()
    assert len(sums) == 2 * 3 * 2 and np.allclose(sums, 1.0, atol=1e-12)


@pytest.mark.parametrize("base, tuned, holds, phrase", [
    ([[1, 2, 1], [2, 2, 3]], [[5, 6, 5], [6, 5, 7]], True, "Holds on this pair"),
    ([[5, 6, 5], [6, 5, 7]], [[1, 2, 1], [2, 2, 3]], False, "points the other way"),
    ([[3, 5, 1], [2, 4, 3]], [[4, 2, 5], [3, 4, 2]], False, "not significant"),
    ([[1], [2]], [[5], [6]], None, "needs at least 2"),
    ([[1, 1, 1], [2, 2, 2]], [[5, 5, 5], [6, 6, 6]], None, "do not vary across seeds"),
])
def test_verdict_follows_the_test_across_seeds(base, tuned, holds, phrase):
    finding = _finding_ffn(frame(base, tuned), None, None, labeller=LABELLER)
    assert finding["holds"] is holds, finding["verdict"]
    assert phrase in finding["verdict"]
    numbers = finding["numbers"]
    assert numbers["n_seeds"] == len(base[0]) and numbers["n_groups"] == 2
    assert numbers["groups_up"] == sum(np.mean(t) > np.mean(b) for b, t in zip(base, tuned))
    # the verdict names the labeller, its seeds and its check-set accuracy
    assert "embedding labeller" in finding["verdict"] and f"over {len(base[0])} seed(s)" in finding["verdict"]
    assert "task 0.938, level 0.984" in finding["verdict"]


def test_verdict_reads_the_stage_table_and_quotes_its_groups():
    labels = frame(base=[[1, 2, 1], [5, 5, 6]], tuned=[[6, 7, 6], [5, 6, 5]])
    table = user_task_shares(labels)
    finding = _finding_ffn(labels, None, None, table, LABELLER)
    assert finding["numbers"]["groups_up"] == 1 and finding["numbers"]["groups_significant"] == 1
    assert [g["layer_group"] for g in finding["numbers"]["groups"]] == [0, 1]
    assert "tuned ahead in 1 of 2 layer groups (1 significant)" in finding["measured"]
    # a table that says otherwise wins over the labels: the verdict reads the stage's table
    flipped = table.assign(diff=-table["diff"], p=0.9)
    assert _finding_ffn(labels, None, None, flipped, LABELLER)["holds"] is False
