"""Statistics for per-example scores: Welch tests, bootstrap intervals, per-group tables.

Two comparisons of instruction scores (PAPER.md §1.6), per group and over all examples:

- :func:`compare_models`: tuned vs base on the same examples (paired by id). Welch
  t-test, one-sided "tuned > base" as the paper; the mean of the paired differences; a
  paired bootstrap 95 % interval (resampling examples); n = number of pairs.
- :func:`compare_labels`: followed vs not followed, per model. Welch t-test one-sided
  "followed > not followed"; difference of means; a two-sample bootstrap 95 % interval
  (each label resampled separately); n per label.

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
           "t", "p_value", "ci_low", "ci_high"]


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


def _groups(frame: pd.DataFrame):
    yield ALL, frame
    group = frame["group"].fillna(ALL) if "group" in frame else pd.Series(ALL, index=frame.index)
    for name in sorted(set(group) - {ALL}):
        yield name, frame[group == name]


def _sizes(frame: pd.DataFrame) -> dict[str, int]:
    """Rows of ``frame`` per group of :func:`_groups`."""
    return {name: len(part) for name, part in _groups(frame)}


def _row(comparison, model, group, a, b, n, ci, diff, excluded):
    t, p = welch(a, b)
    return dict(comparison=comparison, model=model, group=group, n=n, n_excluded=excluded, n_a=len(a), n_b=len(b),
                mean_a=float(np.mean(a)) if len(a) else float("nan"),
                mean_b=float(np.mean(b)) if len(b) else float("nan"),
                mean_diff=diff, t=t, p_value=p, ci_low=ci[0], ci_high=ci[1])


def compare_models(examples: pd.DataFrame, base: str, tuned: str, *, score: str = "instruction_score",
                   n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Tuned vs base per group, on examples scored by both models (a = tuned, b = base).

    ``examples`` has columns id, group, model and ``score`` (rows with a missing score
    are dropped). Returns :data:`COLUMNS`, ``comparison="tuned_vs_base"``, ``model="tuned vs base"``.

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
        diff = float(np.mean(a - b)) if len(a) else float("nan")
        ci = paired_bootstrap_ci(a, b, n_boot=n_boot, seed=seed)
        rows.append(_row("tuned_vs_base", f"{tuned} vs {base}", name, a, b, len(a), ci, diff,
                         everyone.get(name, 0) - len(a)))
    return pd.DataFrame(rows, columns=COLUMNS)


def compare_labels(examples: pd.DataFrame, *, score: str = "instruction_score",
                   n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Followed (a) vs not followed (b) per model and group, on labelled examples.

    >>> rows = pd.DataFrame({"id": list("abcd"), "group": "g", "model": "tuned", "instruction_score": [0.6, 0.8, 0.1, 0.3],
    ...                      "label": ["followed", "followed", "not_followed", "not_followed"]})
    >>> compare_labels(rows)[["model", "comparison", "group", "n", "mean_diff"]].round(3)
       model                comparison  group  n  mean_diff
    0  tuned  followed_vs_not_followed  (all)  4        0.5
    1  tuned  followed_vs_not_followed      g  4        0.5
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
            diff = float(np.mean(a) - np.mean(b)) if len(a) and len(b) else float("nan")
            ci = two_sample_bootstrap_ci(a, b, n_boot=n_boot, seed=seed)
            rows.append(_row("followed_vs_not_followed", model, name, a, b, len(a) + len(b), ci, diff,
                             excluded.get(name, 0)))
    return pd.DataFrame(rows, columns=COLUMNS)
