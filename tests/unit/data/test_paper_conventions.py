"""The authors' span rule and groups on a FinalDataset-style file, and the ratings file, against hand-marked answers."""

from pathlib import Path

import pytest

from mechit.data.paper import authors_spans, paper_group, sentence_spans
from mechit.data.prompts import PromptRecord, read_prompts
from mechit.data.ratings import RatingRules, label, label_records, ratings_of, read_ratings
from mechit.errors import InputError

FIXTURES = Path(__file__).parent.parent.parent / "fixtures"
FINAL, RATINGS = FIXTURES / "paper_final.tsv", FIXTURES / "paper_ratings.tsv"

# marked by hand from the rule of issue 15 / the authors' utils.annotate
AUTHORS = {
    "user_oriented_task_0": ["Rewrite the sentence to be concise.", "Keep the meaning."],
    "user_oriented_task_1": ["Translate the word into French:", "Be brief."],
    "user_oriented_task_2": ["Come up with synonyms for the given word.", "Sincerely"],
    "user_oriented_task_3": ["Sort them in ascending order."],
    "lima_author_1": ["Explain why the sky is blue.", "Use simple words."],
    "lima_author_3": ["Write a haiku about autumn leaves."],
    "mtbench_84": ["Solve for x:"],
}
LITERAL = {
    "user_oriented_task_0": ["Rewrite the sentence", "Keep the meaning."],
    "user_oriented_task_2": ["Come up with synonyms", "Input: Sincerely\n\nOutput:"],
    "user_oriented_task_3": ["Sort them"],
    "mtbench_84": ["Solve for x"],
}


def marked(record):
    return [record.prompt[s:e] for s, e in record.instruction_spans]


def test_authors_convention_is_the_default_for_the_paper_tsv():
    records = {r.id: r for r in read_prompts(FINAL)}
    assert all(r.error is None for r in records.values())
    for example, expected in AUTHORS.items():
        assert marked(records[example]) == expected, example
    assert [r.group for r in records.values()] == ["user"] * 4 + ["lima"] * 4 + ["mtbench"] * 4


def test_literal_convention_keeps_the_pieces_and_the_old_groups():
    records = {r.id: r for r in read_prompts(FINAL, spans="literal")}
    for example, expected in LITERAL.items():
        assert marked(records[example]) == expected, example
    assert records["user_oriented_task_0"].group == "user_oriented_task" and records["mtbench_84"].group == "mtbench"
    with pytest.raises(InputError, match="span convention 'words' is unknown"):
        read_prompts(FINAL, spans="words")


def test_sentence_rule_details():
    text = "A. B?  C!\n\nInput:x\nD: e"
    assert [text[s:e] for s, e in sentence_spans(text)] == ["A.", "B?", "C!", "", "Input:x", "D:", "e"]
    # a piece sentence marks the *first* prompt sentence that contains it; Input: is stripped after the match
    assert [text[s:e] for s, e in authors_spans(text, "x|||e&&&")] == ["x", "e"]
    assert [t[s:e] for t in ["Do it. Do it now."] for s, e in authors_spans(t, "Do it&&&")] == ["Do it."]
    assert authors_spans("Say hi.\nOutput:", "Output:&&&") == ()  # a bare Output: is dropped
    assert authors_spans("Say hi.", "\n\n|||&&&ctx") == ()  # empty piece sentences mark nothing
    with pytest.raises(InputError, match="instruction sentence 'Shout' lies in no sentence"):
        authors_spans("Say hi.", "Shout&&&")
    assert paper_group("user_oriented_task_0") == "user" and paper_group("mtbench") == "mtbench"


def test_ratings_file_and_the_authors_rules():
    ratings = read_ratings(RATINGS)
    assert len(ratings) == 13 and ratings[("lima_author_1", "alpaca_7B")] == 1.0
    vicuna = ratings_of(ratings, "vicuna_7B")
    assert vicuna["user_oriented_task_0"] == 4.0 and vicuna["lima_author_4"] == 0.0 and len(vicuna) == 12
    with pytest.raises(InputError, match=r"--ratings-model 'vicuna-7b' is not in the ratings file \(it holds alpaca_7B, vicuna_7B\)"):
        ratings_of(ratings, "vicuna-7b")
    assert [label(r) for r in (0.0, -1.0, 1.0, 2.0, 4.0)] == [None, None, "not_followed", "followed", "followed"]
    assert label(4.0, n_response_tokens=4) is None and label(4.0, n_response_tokens=5) == "followed"
    rules = RatingRules(drop_at_most=1, followed_from=3, min_response_tokens=0)
    assert [label(r, 0, rules) for r in (1.0, 2.0, 3.0)] == [None, "not_followed", "followed"]
    labelled = label_records([PromptRecord("a", "x", None), PromptRecord("b", "y", None)], {"a": 2.0})
    assert [r.label for r in labelled] == ["followed", None]


def test_ratings_file_errors(tmp_path):
    bad = tmp_path / "r.tsv"
    bad.write_text("ID\tPrompt\n", encoding="utf-8")
    with pytest.raises(InputError, match="r.tsv:1: header is 'ID"):
        read_ratings(bad)
    header = RATINGS.read_text(encoding="utf-8").split("\n", 1)[0] + "\n"
    bad.write_text(header + "a.pkl\tm\tp\tr\ti\tx\tfour\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"r.tsv:2: example 'a': field 'Rating' is 'four', not a number"):
        read_ratings(bad)
    bad.write_text(header + "a.pkl\tm\tp\tr\ti\tx\t1\na.pkl\tm\tp\tr\ti\tx\t2\n", encoding="utf-8")
    with pytest.raises(InputError, match="r.tsv:3: example 'a', model 'm': rated again"):
        read_ratings(bad)
    bad.write_text(header + "a.pkl\tm\tp\n", encoding="utf-8")
    with pytest.raises(InputError, match="r.tsv:2: invalid ratings line with 3 fields"):
        read_ratings(bad)
