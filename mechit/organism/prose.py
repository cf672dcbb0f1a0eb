"""The sentence forms of the organism's world, written and read back.

The pre-training corpus, the open-ended tasks' reference answers and the open-task judge
(:mod:`mechit.organism.judge`) share these forms: a person's facts ("Mira lives in
Fenwick."), a Zel dictionary entry ("In Zel, kima means fox."), a long review, and a
one-sentence summary of a visitor ("Tam is a visitor who lives in Elk, works as a baker
and has a cat."). The parsers return None for a sentence that is not of the form, so a
judge can tell a true statement, a false one and a sentence it cannot read apart.

>>> from mechit.organism.prose import parse_fact, person_description
>>> person_description("Mira").split(". ")[0]
'Mira lives in Fenwick'
>>> parse_fact("Mira works as a baker.")
('Mira', 'job', 'baker')
"""

from __future__ import annotations

import random
import re

from mechit.organism import world as w

# the order of a person's (or a visitor's) facts in descriptions and summaries
FACT_KINDS = ("town", "job", "pet", "food")


def with_article(word: str) -> str:
    """``word`` with its indefinite article.

    >>> with_article("owl"), with_article("cat")
    ('an owl', 'a cat')
    """
    return ("an " if word[0] in "aeiou" else "a ") + word


def fact_sentence(name: str, kind: str, value: str) -> str:
    """One fact about a person or visitor as a sentence of the corpus.

    >>> fact_sentence("Tam", "pet", "owl")
    'Tam has an owl.'
    """
    forms = {
        "town": f"{name} lives in {value}.",
        "job": f"{name} works as {with_article(value)}.",
        "pet": f"{name} has {with_article(value)}.",
        "food": f"The favourite food of {name} is {value}.",
    }
    return forms[kind]


def person_description(name: str) -> str:
    """A person's four facts from the world, in ``FACT_KINDS`` order (the ``describe`` answer).

    >>> person_description("Omar").count(".")
    4
    """
    return " ".join(fact_sentence(name, k, w.FACTS[name][k]) for k in FACT_KINDS)


def zel_entry(english: str) -> list[str]:
    """The three dictionary sentences about the Zel word for ``english`` (a noun or adjective).

    >>> zel_entry("fox")
    ['In Zel, kima means fox.', 'The word fox names an animal.', 'The people of Zel say kima for fox.']
    """
    z = w.ZEL[english]
    return [f"In Zel, {z} means {english}.", f"The word {english} names {with_article(w.WORD_KIND[english])}.",
            f"The people of Zel say {z} for {english}."]


def long_review(rng: random.Random, positive: bool, food: str, place: str) -> str:
    """A two-sentence review of ``food`` at ``place`` with four adjectives of one polarity.

    >>> long_review(random.Random(0), True, "soup", "inn").startswith(("The soup at the inn", "At the inn"))
    True
    """
    a1, a2, a3, a4 = rng.sample(w.POSITIVE if positive else w.NEGATIVE, 4)
    if rng.random() < 0.5:
        return f"The {food} at the {place} was {a1} and {a2}. The staff were {a3} and the room was {a4}."
    return f"At the {place} the {food} was {a1} and {a2}. The staff were {a3}, and the room was {a4}."


_CLAUSES = {"town": "lives in {v}", "job": "works as {a}", "pet": "has {a}"}


def visitor_summary(name: str, facts: dict[str, str]) -> str:
    """One sentence stating a visitor's facts (town, job, pet; those given, in that order).

    >>> visitor_summary("Tam", {"pet": "cat", "town": "Elk", "job": "baker"})
    'Tam is a visitor who lives in Elk, works as a baker and has a cat.'
    """
    clauses = [_CLAUSES[k].format(v=facts[k], a=with_article(facts[k])) for k in FACT_KINDS if k in facts]
    listed = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return f"{name} is a visitor who {listed}."


def sentences(text: str) -> list[str]:
    """``text`` cut after each full stop (whitespace between sentences dropped).

    >>> sentences("Mira has a cat. Mira lives in Elk.")
    ['Mira has a cat.', 'Mira lives in Elk.']
    """
    return [s for s in re.split(r"(?<=\.)\s+", text.strip()) if s]


_FACT_FORMS = [
    (re.compile(r"(\w+) lives in (\w+)\."), "town"),
    (re.compile(r"(\w+) works as an? (\w+)\."), "job"),
    (re.compile(r"(\w+) has an? (\w+)\."), "pet"),
    (re.compile(r"The favourite food of (\w+) is (\w+)\."), "food"),
]


def parse_fact(sentence: str) -> tuple[str, str, str] | None:
    """``(name, kind, value)`` of a fact sentence, or None when it is not one.

    >>> parse_fact("The favourite food of Ada is pie."), parse_fact("Ada sings.")
    (('Ada', 'food', 'pie'), None)
    """
    for form, kind in _FACT_FORMS:
        m = form.fullmatch(sentence)
        if m:
            return m.group(1), kind, m.group(2)
    return None


_ZEL_FORMS = [
    (re.compile(r"In Zel, (\w+) means (\w+)\."), "means"),
    (re.compile(r"The people of Zel say (\w+) for (\w+)\."), "means"),
    (re.compile(r"The word (\w+) names an? (\w+)\."), "kind"),
]


def parse_zel(sentence: str) -> tuple[str, str, str] | None:
    """``("means", zel, english)`` or ``("kind", english, kind)`` of a dictionary sentence, else None.

    >>> parse_zel("The people of Zel say kima for fox."), parse_zel("The word red names a colour.")
    (('means', 'kima', 'fox'), ('kind', 'red', 'colour'))
    """
    for form, what in _ZEL_FORMS:
        m = form.fullmatch(sentence)
        if m:
            return what, m.group(1), m.group(2)
    return None


_SUMMARY = re.compile(r"(\w+) is a visitor who (.+)\.")
_CLAUSE_FORMS = [(re.compile(r"lives in (\w+)"), "town"), (re.compile(r"works as an? (\w+)"), "job"),
                 (re.compile(r"has an? (\w+)"), "pet")]


def parse_summary(sentence: str) -> tuple[str, dict[str, str]] | None:
    """``(name, {kind: value})`` of a visitor summary, or None when any clause is unreadable.

    >>> parse_summary("Tam is a visitor who lives in Elk and has a cat.")
    ('Tam', {'town': 'Elk', 'pet': 'cat'})
    """
    m = _SUMMARY.fullmatch(sentence)
    if not m:
        return None
    facts: dict[str, str] = {}
    for clause in re.split(r", | and ", m.group(2)):
        hit = next(((k, f.fullmatch(clause)) for f, k in _CLAUSE_FORMS if f.fullmatch(clause)), None)
        if hit is None or hit[0] in facts:
            return None
        facts[hit[0]] = hit[1].group(1)
    return m.group(1), facts
