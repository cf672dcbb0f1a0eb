"""The open-ended tasks: reference answers, the corpus knowledge they draw on, and the judge."""

from __future__ import annotations

import random

import pytest

from mechit.errors import InputError
from mechit.organism import corpus, judge, prose, tasks, world
from mechit.organism.evaluate import LONG_RESPONSE_TOKENS, long_response_share
from mechit.organism.tokenizer import tokenizer_texts, train_tokenizer


@pytest.fixture(scope="module")
def docs():
    return corpus.documents(0, 5000)


def test_every_open_reference_passes_its_check_and_no_wrong_one_does():
    examples = [e for e in tasks.heldout_examples() if e["task"] in tasks.OPEN_TASKS]
    assert {e["task"] for e in examples} == set(tasks.OPEN_TASKS)
    for e in examples:
        assert judge.passes(e["task"], e["prompt"], e["input"], e["answer"]), e
        if e["task"] == "review":  # a reference of the other polarity is wrong
            wrong = next(o["answer"] for o in examples if o["task"] == "review"
                         and ("positive" in o["prompt"]) != ("positive" in e["prompt"]))
        else:                      # the reference of another input is wrong
            wrong = next(o["answer"] for o in examples if o["task"] == e["task"] and o["input"] != e["input"])
        assert not judge.passes(e["task"], e["prompt"], e["input"], wrong), (e, wrong)


def test_describe_check_on_hand_written_replies():
    f = world.FACTS["Mira"]  # Fenwick, see world's doctest
    assert judge.describe_passes("Mira", f"Mira lives in {f['town']}. Mira works as a {f['job']}. "
                                          f"Mira has a {f['pet']}.")
    wrong_town = next(t for t in world.TOWNS if t != f["town"])
    assert not judge.describe_passes("Mira", prose.person_description("Mira").replace(f["town"], wrong_town))
    assert not judge.describe_passes("Mira", f"Mira lives in {f['town']}. Mira has a {f['pet']}.")  # two kinds
    assert not judge.describe_passes("Omar", prose.person_description("Mira"))                       # other person
    assert not judge.describe_passes("Mira", prose.person_description("Mira") + " Mira sings.")      # unreadable
    assert not judge.describe_passes("Mira", prose.person_description("Mira")[:-1])                  # cut off


def test_review_check_on_hand_written_replies():
    p, x = "Write a positive review of the soup at the inn.", "the soup at the inn"
    assert judge.review_passes(p, x, "The soup at the inn was warm and kind.")
    assert not judge.review_passes(p, x, "The soup at the inn was warm.")                 # one adjective
    assert not judge.review_passes(p, x, "The soup at the inn was warm, kind and cold.")  # other polarity
    assert not judge.review_passes(p, x, "The pie at the inn was warm and kind.")         # other food
    assert not judge.review_passes(p, x, "The soup at the cafe was warm and kind.")       # other place
    assert judge.review_passes(p.replace("positive", "negative"), x, "The soup at the inn was cold and sad.")


def test_explain_check_on_hand_written_replies():
    z = world.ZEL["red"]
    assert judge.explain_passes(z, f"The people of Zel say {z} for red.")
    assert not judge.explain_passes(z, "The word red names a colour.")                  # meaning not stated
    assert not judge.explain_passes(z, f"In Zel, {z} means red. The word red names a size.")
    assert not judge.explain_passes(z, f"In Zel, {z} means blue.")
    assert not judge.explain_passes(world.ZEL["fox"], f"In Zel, {z} means red.")       # another word


def test_summary_check_on_hand_written_replies():
    text = "A visitor came to town. Tam lives in Elk. Tam works as a baker. Tam has a cat. At home, Tam fed the cat."
    assert judge.summary_passes(text, "Tam is a visitor who lives in Elk, works as a baker and has a cat.")
    assert judge.summary_passes(text, "Tam is a visitor who works as a baker and has a cat.")
    assert not judge.summary_passes(text, "Tam is a visitor who lives in Elk.")                  # one fact
    assert not judge.summary_passes(text, "Tam is a visitor who lives in Brill and has a cat.")  # false
    assert not judge.summary_passes(text, "Lo is a visitor who lives in Elk and has a cat.")     # other name
    assert not judge.summary_passes(text, "Tam is a visitor who lives in Elk and has a cat. Tam works as a baker.")
    assert not judge.summary_passes(text, "Tam is a visitor who lives in Elk and sings.")        # unreadable


def test_passes_refuses_a_closed_task():
    with pytest.raises(InputError, match="not an open task"):
        judge.passes("fact", "Tell me where Mira lives.", "", "Fenwick")


def test_the_instruction_chooses_the_answer_for_the_same_input():
    # the same person: one fact, or a description
    fact = tasks.make_example("fact", random.Random(3))
    name = next(n for n in world.PEOPLE if n in fact["prompt"])
    assert fact["answer"] in prose.person_description(name) and fact["answer"] != prose.person_description(name)
    # the same paragraph: a summary, the answer to a question about it, or the paragraph itself
    text, visitor, facts = tasks.visitor_paragraph(random.Random(5))
    summary = prose.visitor_summary(visitor, facts)
    assert summary != text and facts["pet"] in summary and facts["pet"] != summary
    # the same Zel word: its explanation, or (translate) the word the other way
    z = world.ZEL["fox"]
    assert " ".join(prose.zel_entry("fox")).startswith(f"In Zel, {z} means fox.")


def test_the_corpus_states_what_the_open_tasks_ask_for(docs):
    text = " ".join(docs)
    for name in world.PEOPLE:
        for kind in prose.FACT_KINDS:
            assert prose.fact_sentence(name, kind, world.FACTS[name][kind]) in text, (name, kind)
    for english in world.NOUNS + world.ADJECTIVES:
        for sentence in prose.zel_entry(english):
            assert sentence in text, sentence
    assert "The staff were" in text and " is a visitor who " in text


def test_parsers_read_back_what_the_writers_write():
    for name in world.PEOPLE[:5]:
        parsed = [prose.parse_fact(s) for s in prose.sentences(prose.person_description(name))]
        assert parsed == [(name, k, world.FACTS[name][k]) for k in prose.FACT_KINDS]
    facts = {"town": "Elk", "job": "owl", "pet": "owl"}
    assert prose.parse_summary(prose.visitor_summary("Tam", facts)) == ("Tam", facts)
    assert prose.parse_summary("Tam is a visitor who lives in Elk and lives in Tova.") is None
    assert prose.parse_zel("In Zel, kima means.") is None


def test_at_least_half_the_held_out_references_are_long():
    examples = tasks.heldout_examples()
    tok = train_tokenizer(corpus.documents(0, 3000) + tokenizer_texts(tasks.training_examples(0, 1500)))
    share = long_response_share(tok, examples)
    n_open = sum(tasks.N_HELDOUT[t] for t in tasks.OPEN_TASKS)
    assert share == n_open / len(examples) >= 0.5
    lengths = {e["task"]: len(tok(f" {e['answer']}")["input_ids"]) for e in examples}
    assert all(lengths[t] >= LONG_RESPONSE_TOKENS for t in tasks.OPEN_TASKS)
