"""Word lists built from wordfreq and lemminflect, and word-list validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from wordfreq import zipf_frequency

from mechit.errors import InputError
from mechit.data.wordlists import (
    INSTRUCTION_VERBS,
    frequent_words,
    general_verbs,
    is_stop_verb,
    read_words,
    validate_words,
)


def test_instruction_verbs_are_the_papers_38():
    paper = (Path(__file__).parents[3].parent / "shared" / "PAPER.md")
    assert len(INSTRUCTION_VERBS) == 38 == len(set(INSTRUCTION_VERBS))
    if paper.is_file():  # the paper page lists them after "Instruction verbs used by the authors:"
        text = " ".join(paper.read_text().split())
        listed = re.search(r"Instruction verbs used by the authors: (.*?)\. General", text).group(1)
        assert tuple(w.strip() for w in listed.split(",")) == INSTRUCTION_VERBS
    assert INSTRUCTION_VERBS[:3] == ("translate", "explain", "summarize") and INSTRUCTION_VERBS[-1] == "detect"


def test_general_verbs():
    verbs = general_verbs(300)
    assert len(verbs) == 300 == len(set(verbs))
    assert not set(verbs) & set(INSTRUCTION_VERBS)
    assert {"get", "know", "go", "see", "think", "run", "buy", "remember"} <= set(verbs)
    assert not {"be", "do", "can", "will", "would", "should", "must", "may", "the", "time", "people", "water"} & set(verbs)
    zipf = [zipf_frequency(v, "en") for v in verbs]
    assert zipf == sorted(zipf, reverse=True)  # most frequent first
    assert general_verbs(3000)[:300] == verbs and len(general_verbs(3000)) == 3000
    verbs.clear()  # callers get their own copy: the cached list is untouched
    assert len(general_verbs(300)) == 300


def test_stop_verbs():
    assert [is_stop_verb(w) for w in ("be", "do", "can", "shall", "ought", "run", "make", "table")] == [
        True, True, True, True, True, False, False, False]


def test_frequent_words():
    words = frequent_words()
    assert len(words) == 20_000 == len(set(words))
    assert words[:5] == ["the", "to", "and", "of", "a"]
    assert all(w.isascii() and w.isalpha() and w == w.lower() for w in words)
    assert all(len(w) > 1 for w in words if w not in ("a", "i"))
    assert frequent_words(100) == words[:100]
    zipf = [zipf_frequency(w, "en") for w in words[:2000]]
    assert zipf == sorted(zipf, reverse=True)


@pytest.mark.parametrize("fn", [general_verbs, frequent_words])
def test_sizes_must_be_positive(fn):
    with pytest.raises(InputError, match="n must be positive"):
        fn(0)


@pytest.mark.parametrize("words, message", [
    ([], "word list: the list is empty"),
    (["a", None], "entry 1 is NoneType None, not a string"),
    (["a", b"b"], "entry 1 is bytes"),
    (["", "a"], "entry 0 is empty"),
    ("translate", "single string"),
    (42, "got int"),
])
def test_validate_words_errors(words, message):
    with pytest.raises(InputError, match=message):
        validate_words(words)


def test_validate_words_strips():
    assert validate_words((" cat", "dog\n")) == ["cat", "dog"]


def test_read_words(tmp_path):
    path = tmp_path / "verbs.txt"
    path.write_text("# my verbs\ntranslate\n\n  explain  # trailing comment\n")
    assert read_words(path) == ["translate", "explain"]
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(InputError, match="empty.txt: the list is empty"):
        read_words(empty)
    with pytest.raises(InputError, match="cannot read word list"):
        read_words(tmp_path / "missing.txt")


def test_head_vocabulary_holds_the_verbs_of_finding_2_in_frequency_order():
    from mechit.data.wordlists import N_GENERAL_VERBS, finding_verbs, head_vocabulary

    verbs = finding_verbs()
    assert len(verbs) == 38 + N_GENERAL_VERBS and verbs[:38] == list(INSTRUCTION_VERBS)
    words = head_vocabulary(3000)
    assert set(verbs) <= set(words) and len(words) == len(set(words))
    assert set(frequent_words(3000)) <= set(words)
    missing = set(verbs) - set(frequent_words(3000))
    assert len(words) == 3000 + len(missing)
    assert len(set(INSTRUCTION_VERBS) - set(frequent_words(3000))) == 19  # what compare's old list lacked
    assert {"summarize", "classify", "translate"} <= set(words) and words[:3] == ["the", "to", "and"]
    zipf = [zipf_frequency(w, "en") for w in words]
    assert zipf == sorted(zipf, reverse=True)  # the first 3000 are the most frequent (relatedness thresholds)


def test_paper_top_k_keeps_the_papers_ratio():
    from mechit.data.wordlists import PAPER_VOCABULARY, paper_top_k

    assert PAPER_VOCABULARY == 26_500 and paper_top_k(26_500) == 100
    assert paper_top_k(53_000) == 200 and paper_top_k(13_250) == 50 and paper_top_k(10) == 1
