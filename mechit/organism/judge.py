"""Score an answer to an open-ended task by checks stated against the world.

An open task has many right answers, so a reply passes when it says only true things in
the forms of the world (:mod:`mechit.organism.prose`) and says what was asked:

* ``describe`` (a person): every sentence is a fact sentence about that person, true in
  :data:`mechit.organism.world.FACTS`, and at least three of the four kinds of fact
  (town, job, pet, food) are stated;
* ``review`` (a food at a place, positive or negative): the food and the place are named,
  at least two review adjectives of the asked polarity are used and none of the other;
* ``explain`` (a Zel word): every sentence is a dictionary sentence true in the world, and
  one of them says what the asked word means;
* ``summarize`` (a paragraph about a visitor): exactly one sentence, a visitor summary of
  the paragraph's visitor, every stated fact as the paragraph gives it, at least two of its
  three facts.

Replies that do not end a sentence (cut off at the token limit) fail every check.

>>> from mechit.organism.judge import passes
>>> passes("describe", "Describe Mira.", "Mira", "Mira lives in Fenwick. Mira has a cat.")
False
>>> from mechit.organism.prose import person_description
>>> passes("describe", "Describe Mira.", "Mira", person_description("Mira"))
True
"""

from __future__ import annotations

import re

from mechit.errors import InputError
from mechit.organism import world as w
from mechit.organism.prose import parse_fact, parse_summary, parse_zel, sentences


def describe_passes(name: str, reply: str) -> bool:
    """Every sentence a true fact about ``name``; at least three kinds of fact stated.

    >>> describe_passes("Mira", "Mira lives in Fenwick. Mira works as a baker. Mira has a dog.")
    False
    """
    kinds = set()
    for sentence in sentences(reply):
        fact = parse_fact(sentence)
        if fact is None or fact[0] != name or w.FACTS[name][fact[1]] != fact[2]:
            return False
        kinds.add(fact[1])
    return len(kinds) >= 3


def review_passes(prompt: str, input_text: str, reply: str) -> bool:
    """The food and place of ``input_text`` named; two or more adjectives of the asked polarity, none of the other.

    >>> review_passes("Write a negative review of the pie at the inn.", "the pie at the inn",
    ...               "The pie at the inn was cold and stale. The staff were rude.")
    True
    """
    positive = "positive" in prompt
    words = re.findall(r"\w+", reply)
    wanted = [x for x in words if x in (w.POSITIVE if positive else w.NEGATIVE)]
    unwanted = [x for x in words if x in (w.NEGATIVE if positive else w.POSITIVE)]
    named = all(x in words for x in re.findall(r"\w+", input_text) if x in w.FOODS + w.PLACES)
    return named and len(wanted) >= 2 and not unwanted and reply.endswith(".")


def explain_passes(zel_word: str, reply: str) -> bool:
    """Every sentence a true dictionary sentence; one says what ``zel_word`` means.

    >>> explain_passes("kima", "In Zel, kima means fox. The word fox names an animal.")
    True
    """
    english = {z: e for e, z in w.ZEL.items()}
    said_meaning = False
    for sentence in sentences(reply):
        parsed = parse_zel(sentence)
        if parsed is None:
            return False
        what, a, b = parsed
        if what == "means":
            if english.get(a) != b:
                return False
            said_meaning |= a == zel_word
        elif w.WORD_KIND.get(a) != b:
            return False
    return said_meaning


def summary_passes(paragraph: str, reply: str) -> bool:
    """One visitor-summary sentence about the paragraph's visitor; its facts those of the paragraph, two or more.

    >>> text = "A visitor came to town. Tam lives in Elk. Tam has a cat. Tam works as a baker."
    >>> summary_passes(text, "Tam is a visitor who lives in Elk and has a cat."), summary_passes(text, "Tam has a cat.")
    (True, False)
    """
    said = sentences(reply)
    parsed = parse_summary(said[0]) if len(said) == 1 else None
    if parsed is None:
        return False
    name, facts = parsed
    stated = {}
    for sentence in sentences(paragraph):
        fact = parse_fact(sentence)
        if fact is not None and fact[0] == name:
            stated[fact[1]] = fact[2]
    return bool(stated) and len(facts) >= 2 and all(stated.get(k) == v for k, v in facts.items())


def passes(task: str, prompt: str, input_text: str, reply: str) -> bool:
    """Whether ``reply`` passes the check of the open task ``task`` for this prompt and input.

    >>> passes("explain", "Explain the Zel word kima.", "kima", "In Zel, kima means owl.")
    False
    """
    if task == "describe":
        return describe_passes(input_text, reply)
    if task == "review":
        return review_passes(prompt, input_text, reply)
    if task == "explain":
        return explain_passes(input_text, reply)
    if task == "summarize":
        return summary_passes(input_text, reply)
    raise InputError(f"{task!r} is not an open task; use describe, review, explain or summarize")
