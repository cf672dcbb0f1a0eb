"""Do tuned heads hold more relations about instruction verbs? (PAPER §2.6, the paper's Table 3.)

Input: the ``qk-dims`` pair frames of the two models (:func:`mechit.head_pairs`), or their
:func:`mechit.heads.pairs.head_knowledge` frames. For every head and verb, the verb's *count* is
the number of the head's knowledge pairs (pairs kept in more than one dimension) that
contain the verb as either word (case-insensitive).

- :func:`verb_fractions`: per layer group (``layer // layer_group``) and verb, the fraction
  of heads where the tuned count exceeds the base count, among heads where they differ
  (ties ignored; NaN when every head ties).
- :func:`head_shift`: per layer group, the mean fraction over instruction verbs against
  the mean over general verbs, Welch's t-test (one-sided: instruction > general; verbs
  with a NaN fraction left out, ``n_*`` says how many are in), the paper's Table 3.
- :func:`head_change_scores`: per head, instruction-verb and general-verb counts of both
  models and ``shift`` = mean per-verb change of instruction verbs minus that of general
  verbs (positive: the tuned head gained instruction-verb relations).

>>> import pandas as pd
>>> base = pd.DataFrame({"layer": [0], "head": [0], "word_a": ["write"], "word_b": ["essay"], "n_dims": [2]})
>>> tuned = pd.DataFrame({"layer": [0, 0], "head": [0, 0], "word_a": ["write", "tell"],
...                       "word_b": ["essay", "story"], "n_dims": [2, 3]})
>>> head_change_scores(base, tuned, instruction_verbs=["write", "tell"], general_verbs=["run"])[
...     ["instruction_base", "instruction_tuned", "shift"]].to_dict("records")
[{'instruction_base': 1, 'instruction_tuned': 2, 'shift': 0.5}]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from mechit.data.wordlists import INSTRUCTION_VERBS
from mechit.data.wordlists import general_verbs as frequent_general_verbs
from mechit.errors import InputError
from mechit.heads.pairs import head_knowledge
from mechit.stats import welch

KEYS = ["layer", "head"]


def _knowledge(pairs: pd.DataFrame, which: str) -> pd.DataFrame:
    missing = {"layer", "head", "word_a", "word_b"} - set(pairs.columns)
    if missing:
        raise InputError(f"{which} pairs lack column(s) {sorted(missing)}: pass a head_pairs() or head_knowledge() frame")
    if "n_dims" in pairs.columns:
        return pairs
    if "dim" not in pairs.columns or (len(pairs) and pairs["dim"].isna().all()):
        raise InputError(f"{which} pairs have no 'dim' values: head shift needs method 'qk-dims' pairs")
    return head_knowledge(pairs)


def _verb_lists(instruction_verbs, general_verbs) -> tuple[list[str], list[str]]:
    instruction_verbs = INSTRUCTION_VERBS if instruction_verbs is None else instruction_verbs
    general_verbs = frequent_general_verbs(3000) if general_verbs is None else general_verbs
    instruction = list(dict.fromkeys(v.lower() for v in instruction_verbs))
    general = [v for v in dict.fromkeys(v.lower() for v in general_verbs) if v not in set(instruction)]
    if not instruction or not general:
        raise InputError("head shift needs at least one instruction verb and one general verb")
    return instruction, general


def verb_counts(pairs: pd.DataFrame, verbs: Sequence[str]) -> pd.DataFrame:
    """Per head and verb: how many of the head's knowledge pairs contain the verb.

    Returns a wide frame indexed by (layer, head) with one column per verb (heads with no
    knowledge pair are absent; their counts are 0).

    >>> k = pd.DataFrame({"layer": [0, 0], "head": [1, 1], "word_a": ["Write", "cat"],
    ...                   "word_b": ["essay", "write"], "n_dims": [2, 2]})
    >>> verb_counts(k, ["write", "tell"]).to_dict("records")
    [{'write': 2, 'tell': 0}]
    """
    verbs = list(verbs)
    long = pd.concat([
        pairs[KEYS].assign(word=pairs["word_a"].astype(str).str.lower()),
        pairs[KEYS].assign(word=pairs["word_b"].astype(str).str.lower()),
    ])
    long = long[long["word"].isin(set(verbs))]
    heads = pairs[KEYS].drop_duplicates().set_index(KEYS).index
    counts = long.groupby(KEYS + ["word"], observed=True).size().unstack("word")
    return counts.reindex(index=heads, columns=verbs).fillna(0).astype(int).sort_index()


def _paired_counts(pairs_base, pairs_tuned, verbs):
    base = verb_counts(_knowledge(pairs_base, "base"), verbs)
    tuned = verb_counts(_knowledge(pairs_tuned, "tuned"), verbs)
    heads = base.index.union(tuned.index)
    return base.reindex(heads, fill_value=0), tuned.reindex(heads, fill_value=0)


def verb_fractions(
    pairs_base: pd.DataFrame, pairs_tuned: pd.DataFrame, *, instruction_verbs: Sequence[str] | None = None,
    general_verbs: Sequence[str] | None = None, layer_group: int = 8,
) -> pd.DataFrame:
    """Per layer group and verb: heads where tuned > base (``n_up``), tuned < base (``n_down``),
    and ``fraction`` = n_up / (n_up + n_down) (NaN when all tie). Column ``kind`` is
    "instruction" or "general".

    >>> b = pd.DataFrame({"layer": [0, 1], "head": [0, 0], "word_a": ["write", "write"],
    ...                   "word_b": ["essay", "poem"], "n_dims": [2, 2]})
    >>> t = b.iloc[:1]                                       # head (1, 0) lost its pair
    >>> verb_fractions(b, t, instruction_verbs=["write"], general_verbs=["run"])[
    ...     ["verb", "n_up", "n_down", "fraction"]].to_dict("records")[0]
    {'verb': 'write', 'n_up': 0, 'n_down': 1, 'fraction': 0.0}
    """
    if layer_group < 1:
        raise InputError(f"layer_group must be at least 1, got {layer_group}")
    instruction, general = _verb_lists(instruction_verbs, general_verbs)
    verbs = instruction + general
    base, tuned = _paired_counts(pairs_base, pairs_tuned, verbs)
    group = base.index.get_level_values("layer") // layer_group
    up = (tuned > base).groupby(group).sum()  # (groups, verbs)
    down = (tuned < base).groupby(group).sum()
    frame = pd.DataFrame({
        "n_up": up.stack(), "n_down": down.stack(),
    }).rename_axis(["layer_group", "verb"]).reset_index()
    total = frame["n_up"] + frame["n_down"]
    frame["fraction"] = np.where(total > 0, frame["n_up"] / total.where(total > 0, 1), np.nan)
    frame["kind"] = np.where(frame["verb"].isin(set(instruction)), "instruction", "general")
    return frame[["layer_group", "verb", "kind", "n_up", "n_down", "fraction"]]


def head_shift(
    pairs_base: pd.DataFrame, pairs_tuned: pd.DataFrame, *, instruction_verbs: Sequence[str] | None = None,
    general_verbs: Sequence[str] | None = None, layer_group: int = 8,
) -> pd.DataFrame:
    """The paper's Table 3: per layer group, mean fraction of heads where tuned > base for
    instruction verbs vs general verbs, with Welch's t-test (one-sided, instruction > general).

    Columns: layer_group, layers ("first-last"), instruction_mean, general_mean,
    n_instruction, n_general (verbs with a defined fraction), t, p_value. Defaults: the
    paper's 38 instruction verbs and 3000 frequent general verbs (:mod:`mechit.data.wordlists`).

    >>> b = pd.DataFrame({"layer": [0, 0, 0], "head": [0, 1, 2], "word_a": ["write", "tell", "run"],
    ...                   "word_b": ["essay", "story", "fast"], "n_dims": 2})
    >>> t = pd.DataFrame({"layer": [0, 0, 0, 0], "head": [0, 0, 1, 1], "word_a": ["write", "tell", "tell", "write"],
    ...                   "word_b": ["poem", "joke", "tale", "list"], "n_dims": 2})
    >>> table = head_shift(b, t, instruction_verbs=["write", "tell"], general_verbs=["run", "walk"])
    >>> table[["layers", "instruction_mean", "general_mean", "n_instruction", "n_general"]].to_dict("records")
    [{'layers': '0-0', 'instruction_mean': 1.0, 'general_mean': 0.0, 'n_instruction': 2, 'n_general': 1}]
    """
    fractions = verb_fractions(pairs_base, pairs_tuned, instruction_verbs=instruction_verbs,
                               general_verbs=general_verbs, layer_group=layer_group)
    layers = pd.concat([pairs_base["layer"], pairs_tuned["layer"]]).astype(int)
    rows = []
    for grp, sub in fractions.groupby("layer_group"):
        ins = sub.loc[sub["kind"] == "instruction", "fraction"].dropna().to_numpy(float)
        gen = sub.loc[sub["kind"] == "general", "fraction"].dropna().to_numpy(float)
        t, p = welch(ins, gen, alternative="greater")  # NaN when a side has fewer than 2 verbs
        in_group = layers[layers // layer_group == grp]
        rows.append({
            "layer_group": int(grp), "layers": f"{in_group.min()}-{in_group.max()}",
            "instruction_mean": ins.mean() if len(ins) else np.nan, "general_mean": gen.mean() if len(gen) else np.nan,
            "n_instruction": len(ins), "n_general": len(gen), "t": t, "p_value": p,
        })
    columns = ["layer_group", "layers", "instruction_mean", "general_mean", "n_instruction", "n_general", "t", "p_value"]
    return pd.DataFrame(rows, columns=columns)


def head_change_scores(
    pairs_base: pd.DataFrame, pairs_tuned: pd.DataFrame, *, instruction_verbs: Sequence[str] | None = None,
    general_verbs: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per head: total instruction-verb and general-verb counts in both models' knowledge,
    their changes, and ``shift`` = (instruction change / n instruction verbs) -
    (general change / n general verbs). Sorted by shift, largest first (see module example).
    """
    instruction, general = _verb_lists(instruction_verbs, general_verbs)
    base, tuned = _paired_counts(pairs_base, pairs_tuned, instruction + general)
    out = pd.DataFrame({
        "instruction_base": base[instruction].sum(axis=1), "instruction_tuned": tuned[instruction].sum(axis=1),
        "general_base": base[general].sum(axis=1), "general_tuned": tuned[general].sum(axis=1),
    })
    out["instruction_change"] = out["instruction_tuned"] - out["instruction_base"]
    out["general_change"] = out["general_tuned"] - out["general_base"]
    out["shift"] = out["instruction_change"] / len(instruction) - out["general_change"] / len(general)
    return out.reset_index().sort_values(["shift", "layer", "head"], ascending=[False, True, True],
                                         ignore_index=True)

