"""Statistics for per-example scores: Welch tests, paired tests, bootstrap intervals, per-group tables.

Two comparisons of instruction scores (PAPER.md §1.6), per group and over all examples.
Each row reports tests next to the interval of the same design:

- :func:`compare_models` (``comparison="tuned_vs_base"``): tuned (a) vs base (b) on the
  examples scored by both models (paired by id; n = number of pairs). Every number of
  the row is computed over those pairs:

  - the paper's test, as the authors ran it: Welch's t-test, one-sided "tuned > base",
    treating the two models' scores as independent samples (``t``, ``p_value``), with a
    two-sample bootstrap 95 % interval of the difference of means (``ci_low``, ``ci_high``);
  - the test the same-prompt design allows: the paired t-test, one-sided "tuned > base"
    (``paired_t``, ``paired_p``), with a paired bootstrap 95 % interval of the mean
    difference (``paired_ci_low``, ``paired_ci_high``, resampling prompts);
  - per-model means with bootstrap 95 % intervals (``mean_a_ci_*``, ``mean_b_ci_*``).

- :func:`compare_labels` (``comparison="followed_vs_not"``): followed (a) vs not followed
  (b), per model. Welch t-test one-sided "followed > not followed" with a two-sample
  bootstrap interval (the labels split different examples, so there is no paired design:
  the paired columns are NaN); per-label means with their intervals.

Each returns a tidy DataFrame, one row per (comparison, model, group); the group
``"(all)"`` pools every example. Groups with fewer than 2 values on a side get NaN
statistics (n is still reported). Examples without a score (an empty generated response,
status ``"empty_response"``, or a failed example) are left out, and ``n_excluded`` says
how many examples of the group that was (for tuned vs base: examples lacking a score
under either model).

>>> import pandas as pd
>>> rows = pd.DataFrame({"id": ["a", "b", "a", "b"], "group": ["g"] * 4,
...                      "model": ["base", "base", "tuned", "tuned"],
...                      "instruction_score": [0.1, 0.2, 0.4, 0.6]})
>>> compare_models(rows, "base", "tuned")[["group", "n", "mean_diff"]].round(3)
   group  n  mean_diff
0  (all)  2       0.35
1      g  2       0.35
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

ALL = "(all)"
N_BOOT = 10_000

COLUMNS = ["model", "comparison", "group", "n", "n_excluded", "n_a", "n_b", "mean_a", "mean_b", "mean_diff",
           "t", "p_value", "ci_low", "ci_high", "paired_t", "paired_p", "paired_ci_low", "paired_ci_high",
           "mean_a_ci_low", "mean_a_ci_high", "mean_b_ci_low", "mean_b_ci_high"]


def welch(a, b, *, alternative: str = "greater") -> tuple[float, float]:
    """Welch's t statistic and p-value for mean(a) vs mean(b); the one Welch test of mechit.

    ``alternative``: "greater" (the paper's one-sided "mean(a) > mean(b)", default),
    "less" or "two-sided". NaN when a side has fewer than 2 values.

    >>> t, p = welch([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])
    >>> round(t, 4), round(p, 4)
    (2.4495, 0.0352)
    >>> round(welch([3.0, 4.0, 5.0], [1.0, 2.0, 3.0], alternative="less")[1], 4)
    0.9648
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', not {alternative!r}")
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    result = scipy_stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
    return float(result.statistic), float(result.pvalue)


def paired_t(a, b, *, alternative: str = "greater") -> tuple[float, float]:
    """Paired t statistic and p-value for mean(a - b) > 0 (``alternative`` as :func:`welch`),
    pairs (a[k], b[k]); NaN with fewer than 2 pairs. All differences equal (zero variance)
    gives t = ±inf and p = 0 or 1, or NaN when they are all zero.

    >>> t, p = paired_t([3.0, 4.0, 5.5], [1.0, 2.5, 3.0])   # differences 2, 1.5, 2.5: t = 2 / (0.5 / √3)
    >>> round(t, 4), round(p, 4)
    (6.9282, 0.0101)
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', not {alternative!r}")
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2:
        return float("nan"), float("nan")
    diff = a - b
    if np.all(diff == diff[0]):  # zero variance: scipy warns and returns NaN; the sign decides
        if diff[0] == 0:
            return float("nan"), float("nan")
        t = float(np.copysign(np.inf, diff[0]))
        p = {"greater": float(t < 0), "less": float(t > 0), "two-sided": 0.0}[alternative]
        return t, p
    result = scipy_stats.ttest_rel(a, b, alternative=alternative)
    return float(result.statistic), float(result.pvalue)


def paired_bootstrap_ci(a, b, *, n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a - b)``, resampling pairs (a[k], b[k]).

    >>> lo, hi = paired_bootstrap_ci([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.5])
    >>> lo <= 0.875 <= hi
    True
    """
    diff = np.asarray(a, float) - np.asarray(b, float)
    if len(diff) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def two_sample_bootstrap_ci(a, b, *, n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a) - mean(b)``, resampling each sample on its own.

    >>> lo, hi = two_sample_bootstrap_ci([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])
    >>> lo <= 2.0 <= hi
    True
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means_a = a[rng.integers(0, len(a), size=(n_boot, len(a)))].mean(axis=1)
    means_b = b[rng.integers(0, len(b), size=(n_boot, len(b)))].mean(axis=1)
    alpha = (1 - level) / 2
    diff = means_a - means_b
    return float(np.quantile(diff, alpha)), float(np.quantile(diff, 1 - alpha))


def mean_ci(values, *, n_boot: int = N_BOOT, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(values)`` (NaN with fewer than 2 values).

    >>> lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0])
    >>> 1.0 <= lo <= 2.5 <= hi <= 4.0
    True
    """
    values = np.asarray(values, float)
    return paired_bootstrap_ci(values, np.zeros_like(values), n_boot=n_boot, level=level, seed=seed)


def _groups(frame: pd.DataFrame):
    yield ALL, frame
    group = frame["group"].fillna(ALL) if "group" in frame else pd.Series(ALL, index=frame.index)
    for name in sorted(set(group) - {ALL}):
        yield name, frame[group == name]


def _sizes(frame: pd.DataFrame) -> dict[str, int]:
    """Rows of ``frame`` per group of :func:`_groups`."""
    return {name: len(part) for name, part in _groups(frame)}


def _row(comparison, model, group, a, b, *, n, excluded, paired, n_boot, seed) -> dict:
    """One row of :data:`COLUMNS` for samples a and b (``paired``: a[k] and b[k] are one example)."""
    nan = float("nan")
    boot = dict(n_boot=n_boot, seed=seed)
    mean_a = float(np.mean(a)) if len(a) else nan
    mean_b = float(np.mean(b)) if len(b) else nan
    t, p = welch(a, b)
    row = dict(comparison=comparison, model=model, group=group, n=n, n_excluded=excluded, n_a=len(a), n_b=len(b),
               mean_a=mean_a, mean_b=mean_b, t=t, p_value=p, paired_t=nan, paired_p=nan, paired_ci_low=nan,
               paired_ci_high=nan)
    row["mean_diff"] = float(np.mean(a - b)) if paired and len(a) else mean_a - mean_b
    row["ci_low"], row["ci_high"] = two_sample_bootstrap_ci(a, b, **boot)
    if paired:
        row["paired_t"], row["paired_p"] = paired_t(a, b)
        row["paired_ci_low"], row["paired_ci_high"] = paired_bootstrap_ci(a, b, **boot)
    row["mean_a_ci_low"], row["mean_a_ci_high"] = mean_ci(a, **boot)
    row["mean_b_ci_low"], row["mean_b_ci_high"] = mean_ci(b, **boot)
    return row


def compare_models(examples: pd.DataFrame, base: str, tuned: str, *, score: str = "instruction_score",
                   n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Tuned vs base per group, on examples scored by both models (a = tuned, b = base).

    ``examples`` has columns id, group, model and ``score`` (rows with a missing score
    are dropped). Returns :data:`COLUMNS`, ``comparison="tuned_vs_base"``, ``model="tuned vs base"``:
    the paper's Welch test and the paired t-test, each with the interval of its design.

    >>> rows = pd.DataFrame({"id": ["a", "b", "c"] * 2, "group": "g", "model": ["b"] * 3 + ["t"] * 3,
    ...                      "instruction_score": [0.1, 0.2, None, 0.3, 0.5, 0.4]})
    >>> compare_models(rows, "b", "t")[["model", "group", "n", "n_excluded", "mean_diff"]]
        model  group  n  n_excluded  mean_diff
    0  t vs b  (all)  2           1       0.25
    1  t vs b      g  2           1       0.25
    """
    valid = examples.dropna(subset=[score])
    wide = valid.pivot_table(index=["id"], columns="model", values=score, aggfunc="first")
    if base not in wide or tuned not in wide:
        return pd.DataFrame(columns=COLUMNS)
    wide = wide[[base, tuned]].dropna()
    groups = valid.drop_duplicates("id").set_index("id")["group"].reindex(wide.index)
    paired = wide.assign(group=groups.values).reset_index()
    everyone = _sizes(examples[examples["model"].isin([base, tuned])].drop_duplicates("id"))
    rows = []
    for name, part in _groups(paired):
        a, b = part[tuned].to_numpy(float), part[base].to_numpy(float)
        rows.append(_row("tuned_vs_base", f"{tuned} vs {base}", name, a, b, n=len(a),
                         excluded=everyone.get(name, 0) - len(a), paired=True, n_boot=n_boot, seed=seed))
    return pd.DataFrame(rows, columns=COLUMNS)


def compare_labels(examples: pd.DataFrame, *, score: str = "instruction_score",
                   n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Followed (a) vs not followed (b) per model and group, on labelled examples (Welch, two-sample
    bootstrap interval; the paired columns are NaN).

    >>> rows = pd.DataFrame({"id": list("abcd"), "group": "g", "model": "tuned", "instruction_score": [0.6, 0.8, 0.1, 0.3],
    ...                      "label": ["followed", "followed", "not_followed", "not_followed"]})
    >>> compare_labels(rows)[["model", "comparison", "group", "n", "mean_diff"]].round(3)
       model       comparison  group  n  mean_diff
    0  tuned  followed_vs_not  (all)  4        0.5
    1  tuned  followed_vs_not      g  4        0.5
    """
    labels = examples["label"] if "label" in examples else pd.Series(None, index=examples.index, dtype=object)
    labelled = examples[labels.isin(["followed", "not_followed"])]
    unscored = labelled[labelled[score].isna()]
    labelled = labelled.dropna(subset=[score])
    rows = []
    for model in sorted(labelled["model"].unique()):
        excluded = _sizes(unscored[unscored["model"] == model])
        for name, part in _groups(labelled[labelled["model"] == model]):
            a = part.loc[part["label"] == "followed", score].to_numpy(float)
            b = part.loc[part["label"] == "not_followed", score].to_numpy(float)
            rows.append(_row("followed_vs_not", model, name, a, b, n=len(a) + len(b), excluded=excluded.get(name, 0),
                             paired=False, n_boot=n_boot, seed=seed))
    return pd.DataFrame(rows, columns=COLUMNS)
