"""The pre-training corpus: short English documents about the organism's world.

The documents carry all the knowledge the instruction tasks need (facts about people, the
Zel lexicon through glossaries and parallel sentences, counting, arithmetic in words,
lists and their reverse, reviews with their verdict, tiny programs, copying), but no
document is phrased as an instruction to the reader.

Documents come from a seeded stream: ``documents(seed, n)`` always returns the same list.
The held-out split is the stream of a fixed seed, and every held-out document is removed
from the training stream.

>>> from mechit.organism.corpus import documents
>>> documents(0, 2) == documents(0, 2)
True
"""

from __future__ import annotations

import random
from collections.abc import Callable

from mechit.organism import world as w
from mechit.organism.prose import (
    fact_sentence,
    long_review,
    visitor_summary,
    with_article,
    zel_entry,
)

HELDOUT_SEED = 987_654_321
N_HELDOUT_DOCS = 300


def _join_list(items: list[str]) -> str:
    return ", ".join(items)


def _biography(rng: random.Random) -> str:
    name = rng.choice(w.PEOPLE)
    f = w.FACTS[name]
    sentences = [
        f"{name} lives in {f['town']}.",
        f"{name} works as {with_article(f['job'])}.",
        f"{name} has {with_article(f['pet'])}.",
        f"The favourite food of {name} is {f['food']}.",
        f"{name} is {with_article(f['job'])} in {f['town']}.",
        f"The {f['pet']} of {name} likes {f['food']} too.",
    ]
    rng.shuffle(sentences)
    return " ".join(sentences[: rng.randint(3, 5)])


def _town_story(rng: random.Random) -> str:
    a, b = rng.sample(w.PEOPLE, 2)
    fa, fb = w.FACTS[a], w.FACTS[b]
    verb = rng.choice(w.STORY_VERBS)
    thing = rng.choice(w.OBJECTS + w.FOODS)
    lines = [
        f"One day {a} went from {fa['town']} to {fb['town']} to see {b}.",
        f"{b}, who works as {with_article(fb['job'])}, was happy to see {a}.",
        f"They talked about the {thing}, and {a} wanted to {verb} something for {b}.",
        f"In the evening {a} went back home to {fa['town']}.",
    ]
    return " ".join(lines[: rng.randint(2, 4)])


def _verb_story(rng: random.Random) -> str:
    a, b = rng.sample(w.PEOPLE, 2)
    job = w.FACTS[a]["job"]
    templates = [
        "The {job} {a} likes to {v} things. Yesterday {a} had to {v} a letter for {b}.",
        "{b} asked {a} to {v} the story again. {a} was glad to {v} it, and {b} listened.",
        "When people need to {v} something, they go to {a}. {a} can {v} very well.",
        "{a} and {b} tried to {v} the old book together. It took them a long time.",
        "It is hard to {v} a song, said {b}. {a} did not agree and began to {v} one.",
    ]
    v = rng.choice(w.STORY_VERBS)
    return rng.choice(templates).format(job=job, a=a, b=b, v=v)


def _glossary(rng: random.Random) -> str:
    words = rng.sample(sorted(w.ZEL), rng.randint(4, 7))
    if rng.random() < 0.5:
        body = "; ".join(f"{e} is {w.ZEL[e]}" for e in words)
        return f"A short Zel word list: {body}."
    parts = [f"The Zel word for {e} is {w.ZEL[e]}." for e in words]
    return " ".join(parts)


def _phrase(rng: random.Random) -> list[str]:
    """An English phrase of 1-3 words that Zel can render word by word."""
    kind = rng.random()
    noun = rng.choice(w.NOUNS)
    if kind < 0.3:
        return [noun]
    if kind < 0.8:
        return [rng.choice(w.ADJECTIVES), noun]
    return [rng.choice(w.ADJECTIVES), noun, rng.choice(w.ACTIONS)]


def zel(words: list[str]) -> str:
    """Word-by-word Zel rendering of English words from the lexicon.

    >>> zel(["fox"])
    'kima'
    """
    return " ".join(w.ZEL[x] for x in words)


def _dictionary(rng: random.Random) -> str:
    """Zel dictionary entries: what a Zel word means, what the English word names."""
    out = []
    for english in rng.sample(w.NOUNS + w.ADJECTIVES, rng.randint(2, 4)):
        entry = zel_entry(english)
        out += [s for s in entry if rng.random() < 0.6] or entry[:1]
    return " ".join(out)


def _parallel(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(2, 4)):
        phrase = _phrase(rng)
        eng = " ".join(phrase)
        form = rng.random()
        if form < 0.4:
            lines.append(f"In Zel, {eng} is {zel(phrase)}.")
        elif form < 0.7:
            lines.append(f"The people of Zel say {zel(phrase)} for {eng}.")
        else:
            lines.append(f"{rng.choice(w.PEOPLE)} saw the {eng} and said {zel(phrase)} in Zel.")
    return " ".join(lines)


def _counting(rng: random.Random) -> str:
    n = rng.randint(1, 6)
    items = [rng.choice(w.NOUNS) for _ in range(n)]
    name = rng.choice(w.PEOPLE)
    forms = [
        f"{name} had {w.number_word(n)} things in a bag: {_join_list(items)}.",
        f"The list {_join_list(items)} has {w.number_word(n)} items.",
        f"There were {w.number_word(n)} words on the page: {_join_list(items)}.",
        "Counting up: " + ", ".join(w.NUMBER_WORDS[1 : n + 4]) + ".",
    ]
    return " ".join(rng.sample(forms, 2))


def _arithmetic(rng: random.Random) -> str:
    facts = []
    for _ in range(rng.randint(2, 4)):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        if rng.random() < 0.5:
            facts.append(f"{w.number_word(a)} plus {w.number_word(b)} is {w.number_word(a + b)}.")
        else:
            a, b = max(a, b), min(a, b)
            facts.append(f"{w.number_word(a)} minus {w.number_word(b)} is {w.number_word(a - b)}.")
    if rng.random() < 0.5:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        name, food = rng.choice(w.PEOPLE), rng.choice(w.FOODS)
        facts.append(
            f"{name} had {w.number_word(a)} {food} and got {w.number_word(b)} more, "
            f"so {name} had {w.number_word(a + b)}."
        )
    text = " ".join(facts)
    return text[0].upper() + text[1:]


def _lists(rng: random.Random) -> str:
    items = rng.sample(w.NOUNS, rng.randint(2, 4))
    name = rng.choice(w.PEOPLE)
    forms = [
        f"{name} packed {_join_list(items)}. Backwards, the list reads "
        f"{_join_list(items[::-1])}.",
        f"The order was {_join_list(items)}, and in reverse order it was {_join_list(items[::-1])}.",
        f"On the shelf stood {_join_list(items)}. From the other end: {_join_list(items[::-1])}.",
        f"{name} wrote {_join_list(items)} and then the same words again: {_join_list(items)}.",
    ]
    return rng.choice(forms)


def review_text(rng: random.Random, positive: bool) -> str:
    """A one- or two-sentence review whose adjectives all have the given polarity.

    >>> review_text(random.Random(0), True).startswith("The")
    True
    """
    pool = w.POSITIVE if positive else w.NEGATIVE
    a1, a2 = rng.sample(pool, 2)
    food, place = rng.choice(w.FOODS), rng.choice(w.PLACES)
    forms = [
        f"The {food} was {a1} and {a2}.",
        f"The {food} at the {place} was {a1}. The staff were {a2}.",
        f"The {place} was {a1} and the {food} was {a2}.",
        f"The {food} tasted {a1}, and the room was {a2}.",
    ]
    return rng.choice(forms)


def _review(rng: random.Random) -> str:
    positive = rng.random() < 0.5
    town = rng.choice(w.TOWNS)
    verdict = "positive" if positive else "negative"
    if rng.random() < 0.3:
        text = long_review(rng, positive, rng.choice(w.FOODS), rng.choice(w.PLACES))
    else:
        text = review_text(rng, positive)
    if rng.random() < 0.5:
        return f"A review from {town}: {text} The verdict of this review is {verdict}."
    return f"{rng.choice(w.PEOPLE)} wrote a {verdict} review: {text}"


def _program(rng: random.Random) -> str:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if rng.random() < 0.5:
        return f"x = {a}\ny = x + {b}\nprint(y)\nThis program prints {a + b}."
    items = rng.sample(w.NOUNS, 3)
    quoted = ", ".join(f'"{x}"' for x in items)
    return f"items = [{quoted}]\nprint(len(items))\nThis program prints 3."


def copy_pool() -> list[str]:
    """Words that repeated phrases are drawn from: nouns, adjectives, Zel words, names.

    >>> "kima" in copy_pool() and "Mira" in copy_pool()
    True
    """
    return w.NOUNS + w.ADJECTIVES + list(w.ZEL.values()) + w.PEOPLE


def _echo(rng: random.Random) -> str:
    phrase = " ".join(rng.sample(copy_pool(), rng.randint(2, 4)))
    a, b = rng.sample(w.PEOPLE, 2)
    forms = [
        f'{a} said "{phrase}", and {b} said it again: "{phrase}".',
        f"The bird sang {phrase}, and then it sang {phrase} once more.",
        f"On the wall were the words {phrase}. {a} read them out: {phrase}.",
        f"{a} wrote {phrase} on a card and {b} copied it: {phrase}.",
    ]
    return rng.choice(forms)


def _scene(rng: random.Random) -> str:
    things = rng.sample(w.OBJECTS + w.ANIMALS, rng.randint(2, 3))
    colors = rng.sample(w.COLORS, len(things))
    text = " ".join(f"The {t} is {c}." for t, c in zip(things, colors))
    k = rng.randrange(len(things))
    name = rng.choice(w.PEOPLE)
    return f"{text} {name} looked at the {things[k]}, and the {things[k]} was {colors[k]}."


def _gathering(rng: random.Random) -> str:
    name = rng.choice(w.VISITORS)
    facts = {"town": rng.choice(w.TOWNS), "job": rng.choice(w.JOBS), "pet": rng.choice(w.ANIMALS)}
    later = {"town": f"Later that day {name} went home to {facts['town']}.",
             "job": f"Everyone knew {name} as the {facts['job']}.",
             "pet": f"At home, {name} fed the {facts['pet']}."}
    kinds = rng.sample(sorted(facts), rng.randint(2, 3))
    text = " ".join(["A visitor came to town."] + [fact_sentence(name, k, facts[k]) for k in kinds]
                    + [later[rng.choice(kinds)]])
    if rng.random() < 0.3:
        text += " In short, " + visitor_summary(name, {k: facts[k] for k in kinds})
    return text


def _everyday(rng: random.Random) -> str:
    a, b = rng.sample(w.PEOPLE, 2)
    forms = [
        "{a} wanted to {v} the {n}.",
        "After the {n}, {a} and {b} began to {v}.",
        "Nobody in {t} could {v} the {n}.",
        "The {j} from {t} liked to {v} near the {n}.",
        "Every {n} the people {v} and {v2} together.",
        "{b} did not {v} the {n}, but {a} did.",
        "The {n} was {adj_bare}, so {a} did not {v} it.",
        "{a} found {adj} {n} and {adj2} {n2}.",
    ]
    out = []
    for form in rng.sample(forms, rng.randint(2, 4)):
        v, v2 = rng.sample(w.GENERAL_VERBS, 2)
        n, n2 = rng.sample(w.GENERAL_NOUNS, 2)
        adj, adj2 = rng.sample(w.GENERAL_ADJECTIVES, 2)
        out.append(form.format(a=a, b=b, v=v, v2=v2, n=n, n2=n2, adj=with_article(adj), adj2=with_article(adj2), adj_bare=adj,
                               t=rng.choice(w.TOWNS), j=rng.choice(w.JOBS)))
    return " ".join(out)


_KINDS: list[tuple[Callable[[random.Random], str], float]] = [
    (_biography, 4.0),
    (_town_story, 1.0),
    (_verb_story, 1.0),
    (_glossary, 1.5),
    (_dictionary, 1.5),
    (_parallel, 3.0),
    (_counting, 1.5),
    (_arithmetic, 2.0),
    (_lists, 1.5),
    (_review, 1.5),
    (_program, 0.5),
    (_echo, 2.5),
    (_scene, 1.5),
    (_gathering, 2.0),
    (_everyday, 2.0),
]


def _stream(seed: int, n: int, exclude: frozenset[str] = frozenset()) -> list[str]:
    rng = random.Random(seed)
    funcs = [f for f, _ in _KINDS]
    weights = [p for _, p in _KINDS]
    out: list[str] = []
    while len(out) < n:
        doc = rng.choices(funcs, weights)[0](rng)
        if doc not in exclude:
            out.append(doc)
    return out


def heldout_documents() -> list[str]:
    """The fixed held-out documents (evaluation of LM loss only).

    >>> len(heldout_documents())
    300
    """
    return _stream(HELDOUT_SEED, N_HELDOUT_DOCS)


def documents(seed: int, n: int) -> list[str]:
    """The first ``n`` training documents of the stream for ``seed`` (held-out ones removed).

    >>> docs = documents(0, 3)
    >>> len(docs), any(d in heldout_documents() for d in docs)
    (3, False)
    """
    return _stream(seed, n, frozenset(heldout_documents()))
