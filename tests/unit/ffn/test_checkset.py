"""The check set (mechit/ffn/checkset.py) and its scores (mechit/ffn/labeller_check.py)."""

import json

import pytest
from lemminflect import getAllLemmas

from mechit.cli import main
from mechit.errors import InputError
from mechit.ffn import checkset_words as typed
from mechit.ffn.checkset import ENGLISH_ZIPF_LIMIT, _pools, check_set
from mechit.ffn.labeller_check import check_labeller, classification_scores
from mechit.ffn.lexicon import LexiconLabeller


NOISE = {unit[0] for unit in _pools()[1]}


@pytest.fixture(scope="module")
def check():
    return check_set()


def test_scores_of_a_hand_made_case():
    # truth  a a a b b c ; predicted a a b b c c
    # a: P 2/2, R 2/3, F1 0.8 ; b: P 1/2, R 1/2, F1 0.5 ; c: P 1/2, R 1/1, F1 2/3
    s = classification_scores(list("aaabbc"), list("aabbcc"))
    assert s["accuracy"] == round(4 / 6, 4)
    assert s["f1"] == {"a": 0.8, "b": 0.5, "c": round(2 / 3, 4)}
    assert s["macro_f1"] == round((0.8 + 0.5 + 2 / 3) / 3, 4)
    assert s["precision"]["a"] == 1.0 and s["recall"]["a"] == round(2 / 3, 4)


def test_a_label_only_predicted_counts_in_the_macro_mean():
    s = classification_scores(["a", "a"], ["a", "z"])      # z: never true, F1 0
    assert s["f1"] == {"a": round(2 / 3, 4), "z": 0.0}
    assert s["macro_f1"] == round(1 / 3, 4)


def test_scores_refuse_mismatched_lengths():
    with pytest.raises(InputError, match="same positive number"):
        classification_scores(["a"], ["a", "b"])


def test_check_set_is_deterministic_and_balanced(check):
    again = check_set()
    assert check.drop(columns="words").equals(again.drop(columns="words"))
    assert check["words"].tolist() == again["words"].tolist()
    assert check_set(seed=1)["words"].tolist() != check["words"].tolist()
    counts = check.groupby(["split", "question", "truth"]).size()
    assert set(counts) == {16}
    assert check["words"].map(len).eq(20).all()
    assert set(check["noise"]) == {0.0, 0.1, 0.3, 0.5}


def test_halves_share_no_signal_word(check):
    for (question, truth), group in check.groupby(["question", "truth"]):
        if truth == "none":
            continue
        cal, test = set(), set()
        for row in group.itertuples():
            (cal if row.split == "calibration" else test).update(row.words)
        assert not (cal & test) - NOISE, (question, truth)


def test_labels_are_right_by_construction(check):
    test = check[check.split == "test"]
    fr = test[test.kind == "fr"].iloc[0]
    signal = [w for w in fr.words if w not in NOISE]
    assert len(signal) == 20 - round(20 * fr.noise)
    import wordfreq

    assert all(wordfreq.zipf_frequency(w, "en") < ENGLISH_ZIPF_LIMIT for w in signal)
    assert all(wordfreq.zipf_frequency(w, "fr") > 3 for w in signal)         # frequent French words
    for row in test[test.kind == "inflection:VBG"].itertuples():
        forms = [w for w in row.words if w.endswith("ing")]
        assert len(forms) >= 20 - round(20 * row.noise)
        assert all("VERB" in getAllLemmas(w) for w in forms)
    for row in test[test.kind == "animals"].itertuples():
        assert sum(w in typed.TOPICS["animals"] for w in row.words) == 20 - round(20 * row.noise)
    for row in test[test.kind == "rime:-ght"].itertuples():
        assert sum(w.endswith("ght") for w in row.words) >= 20 - round(20 * row.noise)
    for row in test[test.kind == "pronouns"].itertuples():
        assert sum(w in typed.FUNCTION_WORD_KINDS["pronouns"] for w in row.words) >= 20 - round(20 * row.noise)


def test_check_set_refuses_a_bad_size():
    with pytest.raises(InputError, match="needed"):
        check_set(n_words=200)


def test_lexicon_on_the_check_set(check):
    # the lexicon's known gaps show: writing and coding concepts beyond its word lists
    result = check_labeller(LexiconLabeller(foreign_words=()), check)
    assert result["n_task"] == 80 and result["n_level"] == 64
    assert result["task_recall"]["none"] == 1.0
    assert result["task_recall"]["writing"] < 0.5


def test_command_prints_the_json_line(capsys):
    assert main(["ffn-labels", "--check-set", "--labeller", "lexicon", "--per-label", "3", "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert list(result) == ["labeller", "task_accuracy", "task_macro_f1", "level_accuracy", "level_macro_f1"]
    direct = check_labeller(LexiconLabeller(foreign_words=()), per_label=3)
    assert result == {k: direct[k] for k in result}
    assert result["labeller"] == "lexicon"
