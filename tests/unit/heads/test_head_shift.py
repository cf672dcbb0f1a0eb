"""Instruction-verb shift (the paper's Table 3) against hand-made knowledge tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy.stats import t as student_t

from mechit.errors import InputError
from mechit.heads.shift import head_change_scores, head_shift, verb_counts, verb_fractions

INSTRUCTION = ["write", "tell"]
GENERAL = ["run", "eat", "go"]


def knowledge(rows):
    return pd.DataFrame(rows, columns=["layer", "head", "word_a", "word_b"]).assign(n_dims=2)


# Layer 0 counts (base -> tuned): head 0: write 1->2, tell 0->1, run 1->0;
# head 1: write 1->1, tell 1->0, eat 0->1; head 2: go 1->0, write 0->1.
# Layer 1, head 0: write 1->1 (a tie only).
BASE = knowledge([
    (0, 0, "write", "essay"), (0, 0, "run", "fast"),
    (0, 1, "write", "poem"), (0, 1, "tell", "story"),
    (0, 2, "go", "home"),
    (1, 0, "write", "poem"),
])
TUNED = knowledge([
    (0, 0, "write", "essay"), (0, 0, "letter", "Write"), (0, 0, "tell", "joke"),
    (0, 1, "poem", "write"), (0, 1, "eat", "food"),
    (0, 2, "write", "code"),
    (1, 0, "write", "poem"),
])


def test_verb_counts_count_either_side_case_insensitively():
    counts = verb_counts(TUNED, INSTRUCTION + GENERAL)
    assert counts.loc[(0, 0)].to_dict() == {"write": 2, "tell": 1, "run": 0, "eat": 0, "go": 0}


def test_verb_fractions_ignore_ties():
    f = verb_fractions(BASE, TUNED, instruction_verbs=INSTRUCTION, general_verbs=GENERAL, layer_group=1)
    layer0 = f[f["layer_group"] == 0].set_index("verb")
    assert layer0["fraction"].to_dict() == {"write": 1.0, "tell": 0.5, "run": 0.0, "eat": 1.0, "go": 0.0}
    assert layer0.loc["tell", ["n_up", "n_down"]].tolist() == [1, 1]
    assert layer0["kind"].tolist() == ["instruction"] * 2 + ["general"] * 3
    assert f[f["layer_group"] == 1]["fraction"].isna().all()


def test_head_shift_table_matches_a_hand_welch_test():
    table = head_shift(BASE, TUNED, instruction_verbs=INSTRUCTION, general_verbs=GENERAL, layer_group=1)
    row = table.iloc[0]
    # instruction fractions [1, .5], general [0, 1, 0]; sample variances .125 and 1/3
    a, b = 0.125 / 2, (1 / 3) / 3
    t = (0.75 - 1 / 3) / math.sqrt(a + b)
    df = (a + b) ** 2 / (a**2 / 1 + b**2 / 2)
    assert (row["layer_group"], row["layers"], row["n_instruction"], row["n_general"]) == (0, "0-0", 2, 3)
    assert row["instruction_mean"] == pytest.approx(0.75) and row["general_mean"] == pytest.approx(1 / 3)
    assert row["t"] == pytest.approx(t) and row["p_value"] == pytest.approx(student_t.sf(t, df))
    last = table.iloc[1]
    assert last["n_instruction"] == 0 and math.isnan(last["t"]) and math.isnan(last["p_value"])


def test_layer_groups_pool_layers():
    table = head_shift(BASE, TUNED, instruction_verbs=INSTRUCTION, general_verbs=GENERAL, layer_group=8)
    assert table["layers"].tolist() == ["0-1"] and table["n_instruction"].tolist() == [2]


def test_head_change_scores():
    scores = head_change_scores(BASE, TUNED, instruction_verbs=INSTRUCTION, general_verbs=GENERAL).set_index(["layer", "head"])
    assert scores.loc[(0, 0), ["instruction_base", "instruction_tuned", "general_base", "general_tuned"]].tolist() == [1, 3, 1, 0]
    assert scores.loc[(0, 0), "shift"] == pytest.approx(2 / 2 + 1 / 3)
    assert scores.loc[(0, 1), "shift"] == pytest.approx(-1 / 2 - 1 / 3)
    assert scores.index[0] == (0, 0)  # sorted by shift


def test_pair_frames_count_only_pairs_kept_in_more_than_one_dimension():
    pairs = pd.DataFrame({"layer": 0, "head": 0, "dim": [1, 2, 3], "word_a": ["write", "write", "tell"],
                          "word_b": ["essay", "essay", "joke"], "similarity": 0.5})
    counts = verb_counts(pd.DataFrame({"layer": [0], "head": [0], "word_a": ["write"], "word_b": ["essay"], "n_dims": [2]}),
                         INSTRUCTION)
    scores = head_change_scores(pairs.iloc[:0], pairs, instruction_verbs=INSTRUCTION, general_verbs=GENERAL)
    assert scores["instruction_tuned"].tolist() == [1] and counts["write"].tolist() == [1]


def test_bad_frames_are_clear_errors():
    with pytest.raises(InputError, match="lack column"):
        head_shift(pd.DataFrame({"layer": [0]}), TUNED, instruction_verbs=INSTRUCTION, general_verbs=GENERAL)
    qk = pd.DataFrame({"layer": [0], "head": [0], "dim": [pd.NA], "word_a": ["a"], "word_b": ["b"]})
    with pytest.raises(InputError, match="qk-dims"):
        head_shift(qk, TUNED, instruction_verbs=INSTRUCTION, general_verbs=GENERAL)
    with pytest.raises(InputError, match="layer_group"):
        head_shift(BASE, TUNED, instruction_verbs=INSTRUCTION, general_verbs=GENERAL, layer_group=0)
    with pytest.raises(InputError, match="at least one instruction verb"):
        head_shift(BASE, TUNED, instruction_verbs=[], general_verbs=GENERAL)


def test_public_name_is_the_function_even_after_its_module_is_imported():
    import mechit
    import mechit.heads.shift  # binds mechit.heads.shift (the module), not mechit.head_shift

    expected = head_shift(BASE, TUNED, instruction_verbs=INSTRUCTION, general_verbs=GENERAL, layer_group=1)
    got = mechit.head_shift(BASE, TUNED, instruction_verbs=INSTRUCTION, general_verbs=GENERAL, layer_group=1)
    pd.testing.assert_frame_equal(got, expected)
