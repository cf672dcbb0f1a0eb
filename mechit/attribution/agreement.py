"""Do the gradient view and the causal view of a prompt set agree? Per example, then per model.

The gradient view (:func:`mechit.attribute`, run over a set by
:func:`mechit.attribution.dataset.attribute_dataset`) gives each example an instruction
score and an importance density per prompt token; the causal view
(:func:`mechit.attribution.ablation.ablate_prompts`) gives the drop in
``log p(response | prompt)`` when the instruction or the context is ablated, on the same
response. :func:`gradient_vs_ablation` puts the two side by side, one row per (model,
example):

- ``instruction_mass``, ``context_mass``: the sum of the example's importance density
  (rescaled by its maximum over the prompt, as the instruction score uses it) over the
  instruction tokens, and over the other prompt tokens (the context);
- ``gradient_part``: the part with the larger mass, ``"instruction"`` or ``"context"``
  (``"tie"`` when equal, e.g. both 0);
- ``instruction_effect``, ``context_effect``: the drop in ``log p(response)`` in nats when
  the part is ablated (``total_effect`` of :func:`~mechit.attribution.ablation.ablate`);
- ``causal_part``: the part with the larger effect (``"tie"`` when equal);
- ``same_part``: both views name the same part, neither a tie.

Both views compare whole parts: the mass sums density over all of a part's tokens, as the
ablation takes all of them away (the instruction score divides the instruction's mass by
``log2(2 + n_instruction_tokens)`` instead, so it is not compared with the context).

:func:`agreement` summarises each model over the examples that both views scored:
``n``, the mean ``instruction_effect`` and ``context_effect``, the Spearman rank
correlation between ``instruction_score`` and ``instruction_effect`` over examples
(``rank_correlation``, ``rank_p_value``: :func:`scipy.stats.spearmanr`, two-sided; NaN
with fewer than 3 examples or a constant column), and ``same_part_share`` (the share of
examples where ``same_part`` holds; a tie in either view counts as no agreement).

>>> examples = pd.DataFrame({"model": "m", "id": ["a", "b", "c"], "group": "g", "status": "ok",
...                          "instruction_score": [0.1, 0.5, 0.9], "n_response_tokens": 2})
>>> tokens = pd.DataFrame({"model": "m", "id": ["a", "a", "b", "b", "c", "c"],
...                        "density": [0.2, 1.0, 1.0, 0.4, 1.0, 0.1],
...                        "in_instruction": [True, False] * 3})
>>> ablation = pd.DataFrame({"model": "m", "id": ["a", "a", "b", "b", "c", "c"], "error": None, "how": "remove",
...                          "part": ["instruction", "context"] * 3, "total_effect": [1.0, 3.0, 2.0, 1.0, 4.0, 0.5]})
>>> per_example = gradient_vs_ablation(examples, tokens, ablation)
>>> per_example[["id", "gradient_part", "causal_part", "same_part"]].values.tolist()
[['a', 'context', 'context', True], ['b', 'instruction', 'instruction', True], ['c', 'instruction', 'instruction', True]]
>>> agreement(per_example)[["model", "n", "instruction_effect", "rank_correlation", "same_part_share"]]
  model  n  instruction_effect  rank_correlation  same_part_share
0     m  3            2.333333               1.0              1.0
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

PARTS = ("instruction", "context")
EXAMPLE_COLUMNS = ["model", "id", "group", "how", "instruction_score", "instruction_mass", "context_mass",
                   "gradient_part", "instruction_effect", "context_effect", "causal_part", "same_part",
                   "n_response_tokens", "error"]
SUMMARY_COLUMNS = ["model", "how", "n", "instruction_effect", "context_effect", "rank_correlation", "rank_p_value",
                   "same_part_share"]


def larger_part(instruction: pd.Series, context: pd.Series) -> pd.Series:
    """Per row, the part with the larger value: "instruction", "context", "tie" when equal, None when either is missing.

    >>> larger_part(pd.Series([2.0, 1.0, 1.0, float("nan")]), pd.Series([1.0, 2.0, 1.0, 1.0])).tolist()
    ['instruction', 'context', 'tie', None]
    """
    a, b = instruction.to_numpy(float), context.to_numpy(float)
    named = np.where(a > b, "instruction", np.where(b > a, "context", "tie")).astype(object)
    named[np.isnan(a) | np.isnan(b)] = None
    return pd.Series(named, index=instruction.index, dtype=object)


def part_masses(tokens: pd.DataFrame) -> pd.DataFrame:
    """Per (model, id): the density summed over instruction tokens and over context tokens.

    ``tokens``: rows of ``attribution_tokens`` (model, id, density, in_instruction).

    >>> part_masses(pd.DataFrame({"model": "m", "id": "a", "density": [1.0, 0.5, 0.25],
    ...                           "in_instruction": [True, False, False]}))
      model id  instruction_mass  context_mass
    0     m  a               1.0          0.75
    """
    inside = tokens["in_instruction"].astype(bool)
    density = tokens["density"].astype(float)
    masses = tokens[["model", "id"]].assign(instruction_mass=density.where(inside, 0.0),
                                            context_mass=density.where(~inside, 0.0))
    return masses.groupby(["model", "id"], sort=False, as_index=False)[["instruction_mass", "context_mass"]].sum()


def part_effects(ablation: pd.DataFrame) -> pd.DataFrame:
    """Per (model, id): how, instruction_effect, context_effect (the parts' total effects) and error.

    ``ablation``: rows of :func:`~mechit.attribution.ablation.ablate_prompts` with a ``model``
    column; an example that could not be ablated (``error`` set) has NaN effects.

    >>> part_effects(pd.DataFrame({"model": "m", "id": ["a", "a", "b"], "how": ["mask", "mask", None],
    ...                            "part": ["instruction", "context", None], "total_effect": [1.5, 0.5, None],
    ...                            "error": [None, None, "example 'b': too long"]}))
      model id   how  instruction_effect  context_effect                  error
    0     m  a  mask                 1.5             0.5                   None
    1     m  b  None                 NaN             NaN  example 'b': too long
    """
    keys = ["model", "id"]
    heads = ablation.groupby(keys, sort=False, as_index=False).agg(how=("how", "first"), error=("error", "first"))
    scored = ablation[ablation["part"].isin(PARTS)]
    totals = scored.pivot_table(index=keys, columns="part", values="total_effect", aggfunc="first")
    totals = totals.reindex(columns=list(PARTS)).rename(columns=lambda part: f"{part}_effect")
    frame = heads.merge(totals.reset_index(), on=keys, how="left")
    frame = frame.astype({"instruction_effect": float, "context_effect": float})
    for column in ("how", "error"):  # text or None, never NaN
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame[["model", "id", "how", "instruction_effect", "context_effect", "error"]]


def gradient_vs_ablation(examples: pd.DataFrame, tokens: pd.DataFrame, ablation: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, example) the gradient view scored: both views side by side (module docstring).

    ``examples``, ``tokens``: the ``attribution_examples`` and ``attribution_tokens`` tables
    (rows with ``status == "ok"`` are used); ``ablation``: :func:`ablate_prompts` rows of the
    same models and examples with a ``model`` column. Columns: :data:`EXAMPLE_COLUMNS`.
    An example the ablation did not score keeps NaN effects (and its ``error``).
    The module docstring has an example.
    """
    keys = ["model", "id"]
    scored = examples[examples["status"] == "ok"][["model", "id", "group", "instruction_score", "n_response_tokens"]]
    frame = scored.merge(part_masses(tokens), on=keys, how="left").merge(part_effects(ablation), on=keys, how="left")
    frame["gradient_part"] = larger_part(frame["instruction_mass"], frame["context_mass"])
    frame["causal_part"] = larger_part(frame["instruction_effect"], frame["context_effect"])
    named = frame["gradient_part"].isin(PARTS)
    frame["same_part"] = named & (frame["gradient_part"] == frame["causal_part"])
    frame["instruction_score"] = frame["instruction_score"].astype(float)
    return frame[EXAMPLE_COLUMNS].reset_index(drop=True)


def rank_correlation(x: pd.Series, y: pd.Series) -> tuple[float, float]:
    """Spearman's rho between ``x`` and ``y`` and its two-sided p-value; (NaN, NaN) with fewer
    than 3 pairs or a constant column (where rho is undefined).

    >>> round(rank_correlation(pd.Series([1.0, 2.0, 3.0, 4.0]), pd.Series([10.0, 30.0, 20.0, 40.0]))[0], 12)
    0.8
    >>> rank_correlation(pd.Series([1.0, 2.0, 3.0]), pd.Series([5.0, 5.0, 5.0]))
    (nan, nan)
    """
    if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:
        return math.nan, math.nan
    result = spearmanr(x.to_numpy(float), y.to_numpy(float))
    return float(result.statistic), float(result.pvalue)


def agreement(per_example: pd.DataFrame) -> pd.DataFrame:
    """Per model (in order of appearance), over the examples both views scored: the columns
    :data:`SUMMARY_COLUMNS` (module docstring). The module docstring has an example."""
    rows = []
    for model, part in per_example.groupby("model", sort=False):
        both = part.dropna(subset=["instruction_score", "instruction_effect", "context_effect"])
        rho, p = rank_correlation(both["instruction_score"], both["instruction_effect"])
        hows = both["how"].dropna().unique()
        rows.append({
            "model": model, "how": hows[0] if len(hows) else None, "n": len(both),
            "instruction_effect": both["instruction_effect"].mean(), "context_effect": both["context_effect"].mean(),
            "rank_correlation": rho, "rank_p_value": p,
            "same_part_share": both["same_part"].astype(float).mean() if len(both) else math.nan,
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
