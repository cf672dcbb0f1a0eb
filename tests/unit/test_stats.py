"""Statistics against scipy and numpy computed independently."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from mechit.stats import (
    ALL,
    compare_labels,
    compare_models,
    mean_ci,
    paired_bootstrap_ci,
    paired_t,
    two_sample_bootstrap_ci,
    welch,
)


def test_welch_against_scipy_and_formula():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1.0, 12), rng.normal(0.5, 2.0, 9)
    t, p = welch(a, b)
    ref = scipy_stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    # by hand: t = (ma - mb) / sqrt(va/na + vb/nb); Welch-Satterthwaite df
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t_hand = (a.mean() - b.mean()) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    assert t == pytest.approx(t_hand) and p == pytest.approx(scipy_stats.t.sf(t_hand, df))
    assert np.isnan(welch([1.0], [1.0, 2.0])[0])


def test_bootstrap_intervals():
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, 200)
    b = a - 0.3 + rng.normal(0, 0.1, 200)
    lo, hi = paired_bootstrap_ci(a, b)
    d = a - b
    se = d.std(ddof=1) / np.sqrt(len(d))
    assert lo == pytest.approx(d.mean() - 1.96 * se, abs=0.01) and hi == pytest.approx(d.mean() + 1.96 * se, abs=0.01)
    assert paired_bootstrap_ci(a, b) == paired_bootstrap_ci(a, b)  # seeded
    lo2, hi2 = two_sample_bootstrap_ci(a, b)
    se2 = np.sqrt(a.var(ddof=1) / 200 + b.var(ddof=1) / 200)
    assert lo2 == pytest.approx(0.3 - 1.96 * se2, abs=0.04) and hi2 - lo2 > hi - lo  # unpaired is wider


def example_frame():
    rng = np.random.default_rng(3)
    rows = []
    for k in range(20):
        group = "g1" if k < 12 else "g2"
        label = "followed" if k % 2 else "not_followed"
        base = rng.uniform(0, 1)
        rows.append(dict(id=f"e{k}", group=group, label=label, model="base", instruction_score=base))
        rows.append(dict(id=f"e{k}", group=group, label=label, model="tuned",
                         instruction_score=base + 0.2 + rng.normal(0, 0.05)))
    rows.append(dict(id="e99", group="g1", label=None, model="tuned", instruction_score=None))  # failed example
    return pd.DataFrame(rows)


def test_compare_models_per_group():
    frame = example_frame()
    result = compare_models(frame, "base", "tuned", n_boot=2000)
    assert list(result.group) == [ALL, "g1", "g2"] and list(result.n) == [20, 12, 8]
    for _, row in result.iterrows():
        part = frame if row.group == ALL else frame[frame.group == row.group]
        a = part[part.model == "tuned"].sort_values("id").instruction_score.dropna().to_numpy()
        b = part[part.model == "base"].sort_values("id").instruction_score.to_numpy()
        ref = scipy_stats.ttest_ind(a, b, equal_var=False, alternative="greater")
        assert row.t == pytest.approx(ref.statistic) and row.p_value == pytest.approx(ref.pvalue)
        assert row.mean_diff == pytest.approx((a - b).mean())
        assert row.ci_low < row.mean_diff < row.ci_high
    assert compare_models(frame, "base", "nope").empty


def test_compare_labels_per_model_and_group():
    frame = example_frame()
    result = compare_labels(frame, n_boot=2000)
    assert list(zip(result.model, result.group)) == [("base", ALL), ("base", "g1"), ("base", "g2"),
                                                      ("tuned", ALL), ("tuned", "g1"), ("tuned", "g2")]
    row = result.iloc[4]
    part = frame[(frame.model == "tuned") & (frame.group == "g1")]
    a = part[part.label == "followed"].instruction_score.to_numpy()
    b = part[part.label == "not_followed"].instruction_score.to_numpy()
    ref = scipy_stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert (row.n_a, row.n_b, row.n) == (6, 6, 12)
    assert row.t == pytest.approx(ref.statistic) and row.p_value == pytest.approx(ref.pvalue)
    assert row.mean_diff == pytest.approx(a.mean() - b.mean())


def test_paired_t_against_scipy_and_formula():
    rng = np.random.default_rng(5)
    a = rng.normal(1.0, 1.0, 15)
    b = a - 0.2 + rng.normal(0, 0.3, 15)
    t, p = paired_t(a, b)
    ref = scipy_stats.ttest_rel(a, b, alternative="greater")
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    d = a - b  # by hand: t = mean(d) / (sd(d) / sqrt(n)), n - 1 degrees of freedom
    t_hand = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    assert t == pytest.approx(t_hand) and p == pytest.approx(scipy_stats.t.sf(t_hand, len(d) - 1))
    assert paired_t(a, b, alternative="less")[1] == pytest.approx(1 - p)
    assert np.isnan(paired_t([1.0], [0.0])[1])
    assert paired_t([1.0, 2.0], [0.5, 1.5]) == (np.inf, 0.0)  # every pair 0.5 higher: no variance, no doubt
    assert paired_t([0.5, 1.5], [1.0, 2.0]) == (-np.inf, 1.0)
    assert np.isnan(paired_t([1.0, 2.0], [1.0, 2.0])[1])
    with pytest.raises(ValueError, match="alternative"):
        paired_t(a, b, alternative="more")


def test_compare_models_reports_each_test_with_the_interval_of_its_design():
    frame = example_frame()
    row = compare_models(frame, "base", "tuned", n_boot=2000, seed=7).iloc[0]
    paired = frame[frame.id != "e99"].pivot(index="id", columns="model", values="instruction_score")
    a, b = paired["tuned"].to_numpy(), paired["base"].to_numpy()
    ref = scipy_stats.ttest_rel(a, b, alternative="greater")
    assert row.paired_t == pytest.approx(ref.statistic) and row.paired_p == pytest.approx(ref.pvalue)
    assert (row.paired_ci_low, row.paired_ci_high) == paired_bootstrap_ci(a, b, n_boot=2000, seed=7)
    assert (row.ci_low, row.ci_high) == two_sample_bootstrap_ci(a, b, n_boot=2000, seed=7)
    # the same rows everywhere: e99 (scored by one model only) is in no mean and no interval
    assert row.mean_a == pytest.approx(a.mean()) and row.mean_b == pytest.approx(b.mean())
    assert (row.mean_a_ci_low, row.mean_a_ci_high) == mean_ci(a, n_boot=2000, seed=7)
    assert (row.mean_b_ci_low, row.mean_b_ci_high) == mean_ci(b, n_boot=2000, seed=7)
    # the paired design is the sharper one here: its interval is narrower, its p smaller
    assert row.paired_ci_high - row.paired_ci_low < row.ci_high - row.ci_low and row.paired_p < row.p_value


def test_compare_labels_has_no_paired_design():
    result = compare_labels(example_frame(), n_boot=200)
    assert set(result.comparison) == {"followed_vs_not"}
    assert result[["paired_t", "paired_p", "paired_ci_low", "paired_ci_high"]].isna().all().all()
    assert result[["ci_low", "mean_a_ci_low", "mean_b_ci_high"]].notna().all().all()


def test_mean_ci_against_the_normal_interval():
    values = np.random.default_rng(6).normal(2.0, 1.0, 400)
    lo, hi = mean_ci(values)
    se = values.std(ddof=1) / np.sqrt(len(values))
    # percentile bootstrap vs mean ± 1.96 se: they differ by the bootstrap's Monte Carlo error
    # (about se / sqrt(N_BOOT) * 3 ≈ 0.0015 here) plus the sample's skew; 0.01 covers both
    assert lo == pytest.approx(values.mean() - 1.96 * se, abs=0.01)
    assert hi == pytest.approx(values.mean() + 1.96 * se, abs=0.01)
