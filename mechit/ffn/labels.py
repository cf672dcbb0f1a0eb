"""Concept labels: the label sets, label proportions, and the base-vs-tuned table (PAPER §3.3).

A *concept* is the word list of one principal component of an FFN layer
(:func:`mechit.ffn.concepts.ffn_concepts`). The authors had an LLM label every concept with a
**task** (writing, math, coding, translation, none) and a **level** (phonology,
morphology, syntax, semantics), five labelling seeds, and compared label proportions per
layer group (``layer // 4``) between the two models (their Table 5 and Figure 3).

Here: the label sets and the labeller interface (:class:`Labeller`),
:func:`label_proportions` (Figure 3), :func:`label_table` (Table 5, a Welch t-test
across seeds) and :func:`resample_words` (the seeds of a deterministic labeller). The
labellers are in :mod:`mechit.ffn.embedding_labeller` (offline default),
:mod:`mechit.ffn.lexicon` (offline baseline) and :mod:`mechit.ffn.labellers` (an HTTP
endpoint or a local model, and :func:`~mechit.ffn.labellers.label_concepts`, which labels
a concept frame).

>>> QUESTIONS["task"]
('writing', 'math', 'coding', 'translation', 'none')
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from mechit.errors import MechitError
from mechit.stats import welch

TASK_LABELS = ("writing", "math", "coding", "translation", "none")
LEVEL_LABELS = ("phonology", "morphology", "syntax", "semantics")
QUESTIONS = {"task": TASK_LABELS, "level": LEVEL_LABELS}
USER_TASKS = ("writing", "math", "coding", "translation")  # every task label but "none" (PAPER §3.3)


class LabellerError(MechitError):
    """A labeller failed: endpoint unreachable, bad replies after retries, reply not a label."""


def check_question(question: str) -> tuple[str, ...]:
    """The labels a question allows; a one-line :class:`MechitError` for an unknown question.

    >>> check_question("level")
    ('phonology', 'morphology', 'syntax', 'semantics')
    """
    if question not in QUESTIONS:
        raise MechitError(f"unknown question {question!r}: use one of {sorted(QUESTIONS)}")
    return QUESTIONS[question]


class Labeller(Protocol):
    """What every labeller provides."""

    name: str

    def label(self, words: Sequence[str], question: str, seed: int = 0) -> str:
        """One label from ``QUESTIONS[question]`` for a concept's word list."""



def concept_word_lists(concepts: pd.DataFrame, *, max_components: int | None = None) -> pd.DataFrame:
    """One row per concept: [model,] layer, component, words (ordered by rank).

    >>> concepts = pd.DataFrame({"layer": 0, "component": [0, 0, 1], "rank": [1, 0, 0], "word": ["b", "a", "c"]})
    >>> concept_word_lists(concepts).values.tolist()
    [[0, 0, ['a', 'b']], [0, 1, ['c']]]
    """
    keys = [c for c in ("model", "layer", "component") if c in concepts]
    frame = concepts
    if max_components is not None:
        frame = frame[frame["component"] < max_components]
    frame = frame.sort_values(keys + ["rank"])
    return frame.groupby(keys, sort=True)["word"].agg(list).rename("words").reset_index()



def resample_words(words: Sequence[str], seed: int, *, key: Sequence[int] = ()) -> list[str]:
    """A bootstrap resample of a concept's word list for labelling seed ``seed`` (seed 0: the list itself).

    Draws ``len(words)`` positions with replacement from a generator seeded by ``(seed, *key)``
    (``key``: e.g. the concept's layer and component, so concepts get different draws) and
    keeps the rank order. Deterministic labellers are given these resamples as their seeds.

    >>> resample_words(["a", "b", "c"], 0)
    ['a', 'b', 'c']
    >>> resample_words(["a", "b", "c", "d"], 1, key=(0, 2)) == resample_words(["a", "b", "c", "d"], 1, key=(0, 2))
    True
    >>> set(resample_words(["a", "b", "c", "d"], 1)) <= {"a", "b", "c", "d"}
    True
    """
    words = list(words)
    if seed == 0 or not words:
        return words
    rng = np.random.default_rng([int(seed), *map(int, key)])
    return [words[i] for i in np.sort(rng.integers(0, len(words), len(words)))]


def _per_seed(labels: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Proportion of each label per (by..., seed, question), zeros included."""
    out = []
    for question, group in labels.groupby("question"):
        counts = pd.crosstab([group[c] for c in by + ["seed"]], group["label"], normalize="index")
        counts = counts.reindex(columns=list(QUESTIONS[question]), fill_value=0.0)
        long = counts.stack().rename("proportion").reset_index()
        long.insert(len(by) + 1, "question", question)
        out.append(long)
    return pd.concat(out, ignore_index=True)


def label_proportions(labels: pd.DataFrame, *, group_size: int = 4) -> pd.DataFrame:
    """Label proportions per [model,] layer group (``layer // group_size``), mean and std over seeds.

    Columns: [model,] layer_group, question, label, proportion, std, n_seeds. The paper's
    Figure 3 plots ``proportion`` per layer group for both models.

    >>> labels = pd.DataFrame({"layer": [0, 1, 4], "component": 0, "seed": 0,
    ...                        "question": "task", "label": ["math", "none", "math"]})
    >>> p = label_proportions(labels)
    >>> p[p.label == "math"][["layer_group", "proportion"]].values.tolist()
    [[0.0, 0.5], [1.0, 1.0]]
    """
    frame = labels.assign(layer_group=labels["layer"] // group_size)
    by = [c for c in ("model",) if c in frame] + ["layer_group"]
    per_seed = _per_seed(frame, by)
    stats = per_seed.groupby(by + ["question", "label"], sort=False)["proportion"]
    out = stats.agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"mean": "proportion", "count": "n_seeds"})


def label_table(labels: pd.DataFrame, *, group_size: int | None = None) -> pd.DataFrame:
    """Base vs tuned label proportions, with a Welch t-test across seeds (the paper's Table 5).

    ``labels`` holds both models (a ``model`` column with "base" and "tuned"). Columns:
    [layer_group,] question, label, base, base_std, tuned, tuned_std, diff (tuned − base),
    t, p. Proportions pool all layers, or each ``layer // group_size`` group when
    ``group_size`` is given. With one seed, or labels identical across seeds, t and p are NaN.

    >>> labels = pd.DataFrame({"model": ["base", "tuned"] * 2, "layer": 0, "component": [0, 0, 1, 1],
    ...                        "seed": 0, "question": "task", "label": ["none", "math", "none", "math"]})
    >>> label_table(labels).query("label == 'math'")[["base", "tuned", "diff"]].values.tolist()
    [[0.0, 1.0, 1.0]]
    """
    if "model" not in labels or not {"base", "tuned"} <= set(labels["model"]):
        raise MechitError("label_table needs labels of both models: a 'model' column with 'base' and 'tuned'")
    frame = labels if group_size is None else labels.assign(layer_group=labels["layer"] // group_size)
    by = ["model"] + ([] if group_size is None else ["layer_group"])
    per_seed = _per_seed(frame, by)
    groups = [None] if group_size is None else sorted(per_seed["layer_group"].unique())
    rows = []
    for group in groups:
        sub = per_seed if group is None else per_seed[per_seed["layer_group"] == group]
        for question, labs in QUESTIONS.items():
            if question not in set(sub["question"]):
                continue
            for lab in labs:
                sel = sub[(sub["question"] == question) & (sub["label"] == lab)]
                b = sel[sel["model"] == "base"]["proportion"].to_numpy()
                t_ = sel[sel["model"] == "tuned"]["proportion"].to_numpy()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # zero variance on both sides: NaN, said in the docstring
                    stat, p = welch(t_, b, alternative="greater")
                row = {} if group is None else {"layer_group": int(group)}
                row.update(question=question, label=lab,
                           base=b.mean(), base_std=b.std(ddof=1) if len(b) > 1 else np.nan,
                           tuned=t_.mean(), tuned_std=t_.std(ddof=1) if len(t_) > 1 else np.nan,
                           diff=t_.mean() - b.mean(), t=stat, p=p)
                rows.append(row)
    return pd.DataFrame(rows)


def user_task_shares(labels: pd.DataFrame, *, group_size: int = 4,
                     tasks: Sequence[str] = USER_TASKS) -> pd.DataFrame:
    """Share of concepts with a user-task label, base vs tuned, per layer group and over all layers,
    with Welch's one-sided t-test across labelling seeds (tuned > base, as the paper tested).

    ``labels`` holds both models (:func:`mechit.ffn.labellers.label_concepts`). Per model,
    seed and layer group (``layer // group_size``) the share is the fraction of task labels in
    ``tasks``; the test compares the per-seed shares of the two models. Columns:
    layer_group (``<NA>`` for the row over all layers, first), base, base_std, tuned, tuned_std,
    diff (tuned − base), t, p, n_seeds (the fewer of the two models'). With one seed, or shares
    constant across seeds on both sides, t and p are NaN.

    >>> labels = pd.DataFrame({"model": ["base"] * 4 + ["tuned"] * 4, "layer": [0, 0, 4, 4] * 2,
    ...                        "component": [0, 1] * 4, "seed": 0, "question": "task",
    ...                        "label": ["none", "none", "math", "none", "math", "coding", "none", "math"]})
    >>> user_task_shares(labels)[["layer_group", "base", "tuned", "diff"]].values.tolist()
    [[<NA>, 0.25, 0.75, 0.5], [0, 0.0, 1.0, 1.0], [1, 0.5, 0.5, 0.0]]
    """
    if "model" not in labels or not {"base", "tuned"} <= set(labels["model"]):
        raise MechitError("user_task_shares needs labels of both models: a 'model' column with 'base' and 'tuned'")
    task = labels[labels["question"] == "task"]
    frame = task.assign(user=task["label"].isin(list(tasks)).astype(float),
                        layer_group=task["layer"] // group_size)
    scopes = [(pd.NA, frame)] + [(int(g), part) for g, part in frame.groupby("layer_group", sort=True)]
    rows = []
    for group, part in scopes:
        per_seed = part.groupby(["model", "seed"])["user"].mean()
        b, t_ = (per_seed.get(m, pd.Series(dtype=float)).to_numpy() for m in ("base", "tuned"))
        if len(b) > 1 and len(t_) > 1 and np.ptp(b) == 0 and np.ptp(t_) == 0:
            stat, p = np.nan, np.nan  # no spread on either side: scipy's ±inf, p 0 or 1, would overclaim
        else:
            stat, p = welch(t_, b, alternative="greater")
        rows.append({"layer_group": group, "base": b.mean() if len(b) else np.nan,
                     "base_std": b.std(ddof=1) if len(b) > 1 else np.nan, "tuned": t_.mean() if len(t_) else np.nan,
                     "tuned_std": t_.std(ddof=1) if len(t_) > 1 else np.nan,
                     "diff": (t_.mean() - b.mean()) if len(b) and len(t_) else np.nan,
                     "t": stat, "p": p, "n_seeds": int(min(len(b), len(t_)))})
    out = pd.DataFrame(rows)
    out["layer_group"] = out["layer_group"].astype("Int64")
    return out
