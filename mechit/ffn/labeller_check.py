"""How well a concept labeller does on the check set (:mod:`mechit.ffn.checkset`).

:func:`classification_scores` gives accuracy and macro-F1 (the unweighted mean of each
label's F1, over the labels that occur in the truth or the predictions, as scikit-learn's
``f1_score(average="macro")`` with ``zero_division=0``). :func:`check_labeller` labels the
check set's concepts and scores each question; :func:`labeller_accuracy` does it once per
offline labeller and keeps the scores on disk (``mechit compare`` quotes them beside
Finding 3).

>>> scores = classification_scores(["math", "math", "none"], ["math", "none", "none"])
>>> scores["accuracy"], round(scores["macro_f1"], 4)
(0.6667, 0.6667)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mechit.errors import InputError
from mechit.ffn.checkset import check_set
from mechit.ffn.labels import Labeller, LabellerError
from mechit.store import write_json

NO_LABEL = "(no label)"


def classification_scores(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-label precision, recall and F1 of predicted labels.

    A label's F1 is 0 when it has no true positive. Numbers are rounded to 4 decimals.

    >>> s = classification_scores(["a", "a", "b", "c"], ["a", "b", "b", "b"])
    >>> s["accuracy"], s["f1"]          # a: P 1, R 1/2; b: P 1/3, R 1; c: never predicted
    (0.5, {'a': 0.6667, 'b': 0.5, 'c': 0.0})
    >>> s["macro_f1"]
    0.3889
    """
    truth, predicted = np.asarray(truth, dtype=object), np.asarray(predicted, dtype=object)
    if truth.shape != predicted.shape or truth.size == 0:
        raise InputError(f"classification_scores: {truth.size} true and {predicted.size} predicted labels; "
                         "give the same positive number of each")
    labels = sorted(set(truth) | set(predicted))
    precision, recall, f1 = {}, {}, {}
    for label in labels:
        hits = float(np.sum((truth == label) & (predicted == label)))
        precision[label] = hits / max(np.sum(predicted == label), 1)
        recall[label] = hits / max(np.sum(truth == label), 1)
        f1[label] = 2 * precision[label] * recall[label] / (precision[label] + recall[label]) if hits else 0.0

    def rounded(values: dict[str, float]) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in values.items()}

    return {"accuracy": round(float(np.mean(truth == predicted)), 4),
            "macro_f1": round(float(np.mean(list(f1.values()))), 4),
            "precision": rounded(precision), "recall": rounded(recall), "f1": rounded(f1)}


def _subset(check: pd.DataFrame, per_label: int | None) -> pd.DataFrame:
    if per_label is None:
        return check
    return check.groupby(["question", "truth"], sort=False).head(per_label)


def label_check_set(labeller: Labeller, check: pd.DataFrame, *, seed: int = 0,
                    progress: bool = False) -> pd.DataFrame:
    """The check set with a ``predicted`` column (``"(no label)"`` where the labeller failed).

    >>> from mechit.ffn.lexicon import LexiconLabeller
    >>> check = check_set(n_words=10, per_label=1)
    >>> bool(label_check_set(LexiconLabeller(), check).predicted.notna().all())
    True
    """
    predicted = []
    for row in tqdm(list(check.itertuples(index=False)), desc=f"check set ({labeller.name})",
                    unit="concept", disable=not progress):
        try:
            predicted.append(labeller.label(list(row.words), row.question, seed))
        except LabellerError:
            predicted.append(NO_LABEL)
    return check.assign(predicted=predicted)


def check_labeller(labeller: Labeller, check: pd.DataFrame | None = None, *, split: str = "test",
                   per_label: int | None = None, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Label the check set's ``split`` and score each question.

    ``per_label`` keeps the first concepts of each true label (for slow labellers).
    Returns labeller (its name), split, n_task, n_level, task_accuracy, task_macro_f1,
    level_accuracy, level_macro_f1 and the per-label recall of each question.

    >>> from mechit.ffn.lexicon import LexiconLabeller
    >>> result = check_labeller(LexiconLabeller(), per_label=2)
    >>> result["n_task"], result["n_level"], 0 <= result["task_accuracy"] <= 1
    (10, 8, True)
    """
    check = check_set() if check is None else check
    if split not in set(check["split"]):
        raise InputError(f"check set has no split {split!r}: use one of {sorted(set(check['split']))}")
    done = label_check_set(labeller, _subset(check[check["split"] == split], per_label), seed=seed,
                           progress=progress)
    out: dict[str, Any] = {"labeller": labeller.name, "split": split}
    for question in ("task", "level"):
        rows = done[done["question"] == question]
        out[f"n_{question}"] = len(rows)
        if len(rows):
            scores = classification_scores(rows["truth"].tolist(), rows["predicted"].tolist())
            out[f"{question}_accuracy"] = scores["accuracy"]
            out[f"{question}_macro_f1"] = scores["macro_f1"]
            out[f"{question}_recall"] = {k: scores["recall"][k] for k in sorted(set(rows["truth"]))}
    return out


def labeller_accuracy(labeller: Labeller, *, cache_dir: str | Path | None | bool = True) -> dict[str, Any]:
    """:func:`check_labeller` on the test split, computed once per labeller identity and kept on disk.

    The identity is the labeller's name, its ``thresholds`` and ``foreign_words`` (offline
    labellers), and the check set's words; the scores live in ``cache_dir`` (default
    ``$MECHIT_CACHE`` or ``~/.cache/mechit``, under ``labeller_check/``; ``False`` or
    ``None``: no cache).

    >>> from mechit.ffn.lexicon import LexiconLabeller
    >>> labeller_accuracy(LexiconLabeller(), cache_dir=False)["task_accuracy"]
    0.7125
    """
    check = check_set()
    lexicon = getattr(labeller, "lexicon", labeller)
    identity = [labeller.name, getattr(labeller, "thresholds", None),
                sorted(getattr(lexicon, "foreign_words", ())), check["words"].map(list).tolist()]
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    if cache_dir is True:
        cache_dir = Path(os.environ.get("MECHIT_CACHE", Path.home() / ".cache" / "mechit"))
    path = Path(cache_dir) / "labeller_check" / f"{key}.json" if cache_dir else None
    if path is not None and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    result = check_labeller(labeller, check)
    if path is not None:
        write_json(path, result)
    return result
