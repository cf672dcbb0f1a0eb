"""The paper's three findings, measured on a pair: headline numbers and plain verdicts.

:func:`headline` takes the tables of a comparison (``{name: DataFrame}``, as
:func:`mechit.pipeline.compare` makes them) and returns
``{"headline": {...numbers...}, "findings": [...]}``; ``summary.json`` and the report
show them. Each finding is a dict: key, title, measured (one sentence with the numbers),
verdict (plain words, naming the test it rests on), holds (True / False / None when its
stage has not run or its test had too few examples), and the numbers it quotes. A finding
holds when the difference points the paper's way with a one-sided p below :data:`ALPHA`.

1. **Attribution** (PAPER §1.6): the tuned model's instruction score exceeds the base
   model's on the same prompts. The verdict rests on the paired t-test and quotes the
   paired bootstrap interval; the paper's unpaired Welch test is quoted beside it with its
   two-sample interval; means and intervals of both models are over the same prompts
   (:mod:`mechit.stats`).
2. **Heads** (PAPER §2.6): over all heads, the fraction of heads where tuning raised a
   verb's count is higher for instruction verbs than for general verbs (Welch;
   :mod:`mechit.heads.shift`).
3. **FFN** (PAPER §3.3): the tuned model holds a larger share of concepts labelled with a
   user task (writing, math, coding, translation), as the paper tested it: the share per
   labelling seed, per layer group (``layer // 4``) and over all layers, and Welch's one-sided
   t-test across seeds (:func:`mechit.ffn.labels.user_task_shares`). The verdict rests on
   the test over all layers, quotes the layer groups, and names the labeller, its seeds and
   its check-set accuracy (for the offline labeller the seeds are resampled word lists: they
   measure its stability). Seed 0's concept counts with a one-sided Fisher exact test and
   the measured rotation (principal angles, neuron cosines) are quoted beside it.

>>> overall = pd.DataFrame({"instruction_mean": [0.6], "general_mean": [0.4], "t": [2.5], "p_value": [0.01],
...                         "n_instruction": [38], "n_general": [200]})
>>> headline({"head_shift_overall": overall})["findings"][1]["verdict"]
'Holds on this pair: tuning adds head knowledge about instruction verbs more than about other verbs (Welch t-test, one-sided p < 0.05).'
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import fisher_exact

from mechit.ffn.labels import USER_TASKS, user_task_shares
from mechit.stats import ALL

ALPHA = 0.05
ATTRIBUTION_TEST = "paired t-test"  # Finding 1: the same prompts under both models
HEADS_TEST = "Welch t-test"  # Finding 2: instruction verbs and general verbs are different samples


def plain(value):
    """A JSON-able value for ``summary.json``: numpy scalars as Python numbers, NaN as None.

    >>> plain(np.int64(3)), plain(np.float64("nan")), plain("base")
    (3, None, 'base')
    """
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def fmt(x: float | None, digits: int = 3) -> str:
    """A number for prose: 3 significant digits, p-values in scientific form when tiny.

    >>> fmt(0.31415), fmt(2.5e-7), fmt(None), fmt(float("nan"))
    ('0.314', '2.5e-07', 'n/a', 'n/a')
    """
    if x is None or not np.isfinite(x):
        return "n/a"
    if x != 0 and abs(x) < 10 ** -(digits):
        return f"{x:.{max(1, digits - 2)}e}"
    return f"{x:.{digits}g}"


def _verdict(diff: float | None, p: float | None, claim: str, test: str | None = None) -> tuple[bool | None, str]:
    """(holds, plain verdict) for a difference that the paper predicts to be positive, judged by
    ``test`` (named in the verdict) with one-sided p-value ``p``. A NaN p means the test had
    too few examples (fewer than 2 on a side): holds None.

    >>> _verdict(0.2, 0.01, "it holds", "paired t-test")
    (True, 'Holds on this pair: it holds (paired t-test, one-sided p < 0.05).')
    >>> _verdict(0.2, float("nan"), "it holds", "paired t-test")[0] is None
    True
    """
    named = f"{test}, one-sided p" if test else "p"
    if diff is None or not np.isfinite(diff):
        return None, "Not measured."
    if p is None or not np.isfinite(p):
        return None, (f"Not tested on this pair: too few examples for the {test or 'test'} "
                      "(it needs at least 2 on each side).")
    if diff == 0:
        return False, "Does not hold on this pair: no difference between the two models."
    direction_ok = diff > 0
    significant = p < ALPHA
    if direction_ok and significant:
        return True, f"Holds on this pair: {claim} ({named} < {ALPHA})."
    if direction_ok:
        return False, (f"Not shown on this pair: the difference points the paper's way but is not significant "
                       f"({named} = {fmt(p)} ≥ {ALPHA}).")
    return False, f"Does not hold on this pair: the difference points the other way ({named} = {fmt(p)})."


def _not_run(key: str, title: str, stage: str) -> dict:
    return {"key": key, "title": title, "measured": f"The {stage} stage has not run.", "verdict": "Not measured.",
            "holds": None, "numbers": {}}


def _ci(pair) -> str:
    return f"[{fmt(pair[0])}, {fmt(pair[1])}]"


def _finding_attribution(examples: pd.DataFrame | None, stats: pd.DataFrame | None) -> dict:
    """Finding 1 from attribution_stats (group "(all)"; attribution_examples says the stage ran).

    Every number comes from the prompts scored by both models. The verdict rests on the
    paired t-test (:data:`ATTRIBUTION_TEST`) and quotes the paired bootstrap interval; the
    paper's unpaired Welch test is quoted beside it with its two-sample interval.
    """
    title = "Instruction tuning makes responses depend on the instruction"
    if examples is None or stats is None:
        return _not_run("attribution", title, "attribution")
    row = stats[(stats["comparison"] == "tuned_vs_base") & (stats["group"] == ALL)]
    if row.empty:
        return {**_not_run("attribution", title, "attribution"),
                "measured": "No prompt was scored by both models."}
    row = row.iloc[0]
    numbers = {"n": int(row["n"]), "n_excluded": int(row["n_excluded"]), "test": ATTRIBUTION_TEST,
               "tuned_mean": float(row["mean_a"]), "base_mean": float(row["mean_b"]),
               "tuned_ci": [float(row["mean_a_ci_low"]), float(row["mean_a_ci_high"])],
               "base_ci": [float(row["mean_b_ci_low"]), float(row["mean_b_ci_high"])],
               "diff": float(row["mean_diff"]), "diff_ci": [float(row["paired_ci_low"]), float(row["paired_ci_high"])],
               "paired_t": float(row["paired_t"]), "p_value": float(row["paired_p"]),
               "welch_t": float(row["t"]), "welch_p_value": float(row["p_value"]),
               "welch_ci": [float(row["ci_low"]), float(row["ci_high"])]}
    groups = stats[(stats["comparison"] == "tuned_vs_base") & (stats["group"] != ALL)]
    up = int((groups["mean_diff"] > 0).sum())
    sig = int(((groups["mean_diff"] > 0) & (groups["paired_p"] < ALPHA)).sum())
    numbers.update(groups_up=up, groups_significant=sig, n_groups=int(len(groups)))
    measured = (
        f"Instruction score on the prompts scored by both models: base {fmt(numbers['base_mean'])} "
        f"(95 % CI {_ci(numbers['base_ci'])}), tuned {fmt(numbers['tuned_mean'])} (95 % CI {_ci(numbers['tuned_ci'])}); "
        f"tuned − base = {numbers['diff']:+.3g} (paired bootstrap 95 % CI {_ci(numbers['diff_ci'])}), "
        f"{ATTRIBUTION_TEST} one-sided p = {fmt(numbers['p_value'])}; the paper's test (Welch, one-sided, unpaired): "
        f"p = {fmt(numbers['welch_p_value'])} (two-sample bootstrap 95 % CI {_ci(numbers['welch_ci'])}); "
        f"n = {numbers['n']} prompts"
        + (f" ({numbers['n_excluded']} left out: a model gave no scorable response)" if numbers["n_excluded"] else "")
        + "; "
        f"higher in {up} of {len(groups)} groups ({sig} significant, paired)."
    )
    labelled = stats[(stats["comparison"] == "followed_vs_not") & (stats["group"] == ALL)]
    for r in labelled.itertuples():
        measured += (f" Followed vs not followed ({r.model}): {r.mean_diff:+.3g}, Welch one-sided p = {fmt(r.p_value)}, "
                     f"n = {r.n}.")
    holds, verdict = _verdict(numbers["diff"], numbers["p_value"],
                              "the tuned model's responses rest more on the instruction part of the prompt",
                              ATTRIBUTION_TEST)
    return {"key": "attribution", "title": title, "measured": measured, "verdict": verdict, "holds": holds,
            "numbers": numbers}


def _finding_heads(overall: pd.DataFrame | None, per_group: pd.DataFrame | None) -> dict:
    """Finding 2 from head_shift_overall (one layer group spanning all layers) and head_shift."""
    title = "Tuned attention heads hold more relations about instruction verbs"
    if overall is None or overall.empty:
        return _not_run("heads", title, "heads")
    row = overall.iloc[0]
    numbers = {"instruction_mean": float(row["instruction_mean"]), "general_mean": float(row["general_mean"]),
               "welch_t": float(row["t"]), "p_value": float(row["p_value"]),
               "n_instruction": int(row["n_instruction"]), "n_general": int(row["n_general"])}
    groups = per_group if per_group is not None else overall.iloc[:0]
    up = int((groups["instruction_mean"] > groups["general_mean"]).sum())
    numbers.update(groups_up=up, n_groups=int(len(groups)))
    measured = (
        f"Fraction of heads where tuning raised a verb's count: instruction verbs {fmt(numbers['instruction_mean'])} "
        f"(n = {numbers['n_instruction']} verbs) vs general verbs {fmt(numbers['general_mean'])} "
        f"(n = {numbers['n_general']}), Welch one-sided p = {fmt(numbers['p_value'])}; instruction verbs ahead in "
        f"{up} of {len(groups)} layer groups."
    )
    holds, verdict = _verdict(numbers["instruction_mean"] - numbers["general_mean"], numbers["p_value"],
                              "tuning adds head knowledge about instruction verbs more than about other verbs",
                              HEADS_TEST)
    return {"key": "heads", "title": title, "measured": measured, "verdict": verdict, "holds": holds,
            "numbers": numbers}


def user_task_test(labels: pd.DataFrame) -> dict:
    """Counts of user-task concepts per model (task question, first seed) and a one-sided Fisher test.

    >>> labels = pd.DataFrame({"model": ["base"] * 4 + ["tuned"] * 4, "seed": 0, "question": "task",
    ...                        "label": ["none"] * 4 + ["math", "coding", "writing", "none"]})
    >>> r = user_task_test(labels)
    >>> r["base_share"], r["tuned_share"], round(r["p_value"], 4)
    (0.0, 0.75, 0.0714)
    """
    task = labels[(labels["question"] == "task") & (labels["seed"] == labels["seed"].min())]
    counts = {}
    for model in ("base", "tuned"):
        part = task[task["model"] == model]["label"]
        counts[model] = (int(part.isin(USER_TASKS).sum()), int(len(part)))
    (ub, nb), (ut, nt) = counts["base"], counts["tuned"]
    p = float(fisher_exact([[ut, nt - ut], [ub, nb - ub]], alternative="greater")[1]) if nb and nt else math.nan
    return {"base_user": ub, "base_n": nb, "tuned_user": ut, "tuned_n": nt,
            "base_share": ub / nb if nb else math.nan, "tuned_share": ut / nt if nt else math.nan, "p_value": p}


def _labeller_text(labeller: pd.DataFrame | None, n_seeds: int) -> tuple[dict, str]:
    """(numbers, sentence) naming the labeller, its seeds and its check-set accuracy."""
    if labeller is None or labeller.empty:
        return {"n_seeds": n_seeds}, f"Rests on {n_seeds} labelling seed(s) of an unrecorded labeller."
    row = labeller.iloc[0]
    numbers = {"labeller": str(row["labeller"]), "n_seeds": n_seeds, "seeds": str(row["seeds"]),
               "labeller_task_accuracy": float(row["task_accuracy"]),
               "labeller_level_accuracy": float(row["level_accuracy"])}
    stability = " (resampled word lists: they measure the labeller's stability)" \
        if row["seeds"] == "resampled word lists" else " (sampling seeds)"
    text = (f"Rests on the {row['labeller']} labeller over {n_seeds} seed(s){stability}; its accuracy on the check "
            f"set of known labels: task {fmt(numbers['labeller_task_accuracy'])}, level "
            f"{fmt(numbers['labeller_level_accuracy'])}.")
    return numbers, text


def _finding_ffn(labels: pd.DataFrame | None, rotation: pd.DataFrame | None, angles: pd.DataFrame | None,
                 user_tasks: pd.DataFrame | None = None, labeller: pd.DataFrame | None = None) -> dict:
    """Finding 3 from ffn_user_tasks (:func:`mechit.ffn.labels.user_task_shares`; computed from
    ffn_labels with 4 layers per group when absent) and ffn_labeller, with seed 0's Fisher test
    and the rotation (ffn_rotation, ffn_angles) beside it.

    Holds when the user-task share over all layers is higher for the tuned model with a
    one-sided Welch p below :data:`ALPHA` across seeds; not tested (``holds`` None) with fewer
    than 2 seeds, or when the shares do not vary across seeds.
    """
    title = "The FFN concepts rotate toward user tasks"
    if labels is None:
        return _not_run("ffn", title, "ffn")
    tests = user_task_shares(labels) if user_tasks is None else user_tasks
    overall, groups = tests[tests["layer_group"].isna()].iloc[0], tests[tests["layer_group"].notna()]
    n_seeds = int(overall["n_seeds"])
    numbers, rests_on = _labeller_text(labeller, n_seeds)
    numbers.update({name: float("nan") if pd.isna(overall[col]) else float(overall[col]) for name, col in
                    (("base_share", "base"), ("tuned_share", "tuned"), ("diff", "diff"), ("welch_t", "t"),
                     ("p_value", "p"))})
    up = int((groups["diff"] > 0).sum())
    sig = int(((groups["diff"] > 0) & (groups["p"] < ALPHA)).sum())
    numbers.update(groups_up=up, groups_significant=sig, n_groups=int(len(groups)),
                   groups=[{"layer_group": int(g.layer_group), "base": float(g.base), "tuned": float(g.tuned),
                            "p_value": float("nan") if pd.isna(g.p) else float(g.p)} for g in groups.itertuples()])
    fisher = user_task_test(labels)
    numbers.update({f"seed0_{k}": v for k, v in fisher.items() if k != "p_value"}, fisher_p=fisher["p_value"])
    measured = (
        f"Share of concepts labelled with a user task ({', '.join(USER_TASKS)}), mean over {n_seeds} seed(s): "
        f"base {numbers['base_share']:.1%}, tuned {numbers['tuned_share']:.1%}, Welch one-sided p across seeds = "
        f"{fmt(numbers['p_value'])}; tuned ahead in {up} of {len(groups)} layer groups ({sig} significant). "
        f"Seed 0 counts: base {fisher['base_user']} of {fisher['base_n']}, tuned {fisher['tuned_user']} of "
        f"{fisher['tuned_n']}, one-sided Fisher exact p = {fmt(fisher['p_value'])}."
    )
    if angles is not None and not angles.empty:
        numbers["mean_angle_deg"] = float(angles["angle_deg"].mean())
        numbers["max_angle_deg"] = float(angles["angle_deg"].max())
        measured += (f" Measured rotation: principal angles between base and tuned FFN subspaces average "
                     f"{numbers['mean_angle_deg']:.1f}° (largest {numbers['max_angle_deg']:.1f}°)")
        if rotation is not None and "median_cos_out" in rotation:
            numbers["median_neuron_cos"] = float(rotation["median_cos_out"].median())
            measured += f"; median neuron cosine {numbers['median_neuron_cos']:.3f}"
        measured += "."
    if n_seeds < 2:
        holds, verdict = None, f"Not tested: {n_seeds} labelling seed; the Welch test across seeds needs at least 2."
    elif not np.isfinite(numbers["p_value"]) and numbers["diff"] != 0:
        holds, verdict = None, "Not tested: the user-task shares do not vary across seeds, so the Welch test is undefined."
    else:
        holds, verdict = _verdict(numbers["diff"], numbers["p_value"],
                                  "the tuned model's FFN holds more concepts suited to user tasks")
    return {"key": "ffn", "title": title, "measured": measured, "verdict": f"{verdict} {rests_on}", "holds": holds,
            "numbers": numbers}


def head_settings(tables: dict[str, pd.DataFrame]) -> dict:
    """What the heads stage used, from its ``head_settings`` table: ``{"heads": {words, n_words,
    top_k, top_k_rule, similarity, similarity_id}}`` (empty before the stage has run), for
    ``summary.json``'s options and the report.

    >>> settings = pd.DataFrame([{"words": "default", "n_words": 26_900, "top_k": 102, "similarity": "minilm",
    ...                           "similarity_id": "minilm:all-MiniLM-L6-v2"}])
    >>> head_settings({"head_settings": settings})["heads"]["top_k_rule"]
    "the paper's ratio, K = 100 per 26,500 words, unless given"
    """
    frame = tables.get("head_settings")
    if frame is None or frame.empty:
        return {}
    row = {k: (v.item() if hasattr(v, "item") else v) for k, v in frame.iloc[0].to_dict().items()}
    return {"heads": {**row, "top_k_rule": "the paper's ratio, K = 100 per 26,500 words, unless given"}}


def headline(tables: dict[str, pd.DataFrame]) -> dict:
    """``{"headline": {key: numbers}, "findings": [finding, ...]}`` from the tables of a comparison
    (a finding whose tables are missing is "not measured")."""
    get = tables.get
    findings = [
        _finding_attribution(get("attribution_examples"), get("attribution_stats")),
        _finding_heads(get("head_shift_overall"), get("head_shift")),
        _finding_ffn(get("ffn_labels"), get("ffn_rotation"), get("ffn_angles"), get("ffn_user_tasks"),
                     get("ffn_labeller")),
    ]
    return {"headline": {f["key"]: f["numbers"] for f in findings}, "findings": findings}
