"""The instruction-tuning tasks: prompts made of an instruction and an input, with answers.

Each task draws an input (and its answer) from the world and wraps it in one of several
phrasings that use the paper's instruction verbs. A phrasing is a ``(before, after)`` pair
of templates: the prompt is ``before + input + after``. Most phrasings put the instruction
before the input; some put it after, or around it. The instruction spans of a prompt are
the non-blank parts of ``before`` and ``after``: they cover the instruction's words and its
own punctuation, never the input, and never the whitespace that joins the two.

>>> from mechit.organism.tasks import make_example, TASKS
>>> import random
>>> ex = make_example("arithmetic", random.Random(1))
>>> sorted(ex) == ["answer", "input", "prompt", "spans", "task"]
True
>>> "".join(ex["prompt"][s:e] for s, e in ex["spans"]) in ex["prompt"].replace("\\n", "")
True
"""

from __future__ import annotations

import random
from collections.abc import Callable

from mechit.organism import world as w
from mechit.organism.corpus import copy_pool, review_text, zel
from mechit.organism.prose import (
    FACT_KINDS,
    fact_sentence,
    long_review,
    person_description,
    visitor_summary,
    with_article,
    zel_entry,
)

HELDOUT_SEED = 424_242

Phrasing = tuple[str, str]


def _translate(rng: random.Random) -> tuple[dict, str, str]:
    words = [rng.choice(w.NOUNS)] if rng.random() < 0.3 else [rng.choice(w.ADJECTIVES), rng.choice(w.NOUNS)]
    return {}, " ".join(words), zel(words)


def _subject(rng: random.Random) -> tuple[dict, str, str]:
    name, other = rng.sample(w.PEOPLE, 2)
    noun, town = rng.choice(w.NOUNS), rng.choice(w.TOWNS)
    vp = rng.choice([f"sells {noun}", f"finds the {noun}", f"looks at the {noun}",
                     f"waits by the {noun}", f"talks to {other}"])
    form = rng.choice([
        f"{name} {vp}.",
        f"In {town}, {name} {vp}.",
        f"Yesterday {name} gave the {noun} to {other}.",
        f"The {rng.choice(w.JOBS)} {name} {vp}.",
    ])
    return {}, form, name


def _sentiment(rng: random.Random) -> tuple[dict, str, str]:
    positive = rng.random() < 0.5
    return {}, review_text(rng, positive), "positive" if positive else "negative"


def _count(rng: random.Random) -> tuple[dict, str, str]:
    n = rng.randint(2, 6)
    return {}, ", ".join(rng.choice(w.NOUNS) for _ in range(n)), w.number_word(n)


def _arithmetic(rng: random.Random) -> tuple[dict, str, str]:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if rng.random() < 0.5:
        return {}, f"{w.number_word(a)} plus {w.number_word(b)}", w.number_word(a + b)
    a, b = max(a, b), min(a, b)
    return {}, f"{w.number_word(a)} minus {w.number_word(b)}", w.number_word(a - b)


def _reverse(rng: random.Random) -> tuple[dict, str, str]:
    items = rng.sample(w.NOUNS, rng.randint(2, 3))
    return {}, ", ".join(items), ", ".join(items[::-1])


def _repeat(rng: random.Random) -> tuple[dict, str, str]:
    phrase = " ".join(rng.sample(copy_pool(), rng.randint(2, 4)))
    return {}, phrase, phrase


# questions about a text on one visitor (no fixed facts, so never world knowledge): the
# text states two or three of the visitor's facts, the question asks for one of them
_QA = {
    "town": (w.TOWNS, "{n} lives in {v}.", "where {n} lives"),
    "job": (w.JOBS, "{n} works as {a}.", "what job {n} has"),
    "pet": (w.ANIMALS, "{n} has {a}.", "which animal {n} has"),
}


def _qa(rng: random.Random) -> tuple[dict, str, str]:
    name = rng.choice(w.VISITORS)
    kinds = rng.sample(sorted(_QA), rng.randint(2, 3))
    values = {k: rng.choice(_QA[k][0]) for k in kinds}
    text = " ".join(_QA[k][1].format(n=name, v=values[k], a=with_article(values[k])) for k in kinds)
    asked = rng.choice(kinds)
    return {"q": _QA[asked][2].format(n=name)}, text, values[asked]


_FACT_QUESTIONS = {
    "town": "where {n} lives",
    "job": "what job {n} has",
    "pet": "which animal {n} has",
    "food": "which food {n} likes best",
}


def _fact(rng: random.Random) -> tuple[dict, str, str]:
    name = rng.choice(w.PEOPLE)
    kind = rng.choice(sorted(_FACT_QUESTIONS))
    return {"q": _FACT_QUESTIONS[kind].format(n=name)}, "", w.FACTS[name][kind]


# --- open-ended tasks: long answers that state what pre-training taught, chosen by the instruction


def _describe(rng: random.Random) -> tuple[dict, str, str]:
    name = rng.choice(w.PEOPLE)
    return {}, name, person_description(name)


def _review(rng: random.Random) -> tuple[dict, str, str]:
    positive = rng.random() < 0.5
    food, place = rng.choice(w.FOODS), rng.choice(w.PLACES)
    fields = {"s": "positive" if positive else "negative"}
    return fields, f"the {food} at the {place}", long_review(rng, positive, food, place)


def _explain(rng: random.Random) -> tuple[dict, str, str]:
    english = rng.choice(w.NOUNS + w.ADJECTIVES)
    return {}, w.ZEL[english], " ".join(zel_entry(english))


def visitor_paragraph(rng: random.Random) -> tuple[str, str, dict[str, str]]:
    """A paragraph about a visitor stating its town, job and pet: ``(text, name, facts)``.

    >>> text, name, facts = visitor_paragraph(random.Random(0))
    >>> text.startswith("A visitor came to town.") and all(v in text for v in facts.values())
    True
    """
    name = rng.choice(w.VISITORS)
    facts = {"town": rng.choice(w.TOWNS), "job": rng.choice(w.JOBS), "pet": rng.choice(w.ANIMALS)}
    kinds = rng.sample(FACT_KINDS[:3], 3)
    later = rng.choice([f"Later that day {name} went home to {facts['town']}.",
                        f"Everyone knew {name} as the {facts['job']}.", f"At home, {name} fed the {facts['pet']}."])
    text = " ".join(["A visitor came to town."] + [fact_sentence(name, k, facts[k]) for k in kinds] + [later])
    return text, name, facts


def _summarize(rng: random.Random) -> tuple[dict, str, str]:
    text, name, facts = visitor_paragraph(rng)
    return {}, text, visitor_summary(name, facts)


# task -> (input sampler, phrasings). "{x}" never appears: the input goes between the two parts.
TASKS: dict[str, tuple[Callable[[random.Random], tuple[dict, str, str]], list[Phrasing]]] = {
    "translate": (_translate, [
        ("Translate to Zel: ", ""),
        ("Translate this phrase into Zel: ", ""),
        ("Give the Zel words for this: ", ""),
        ("Tell me how to say ", " in Zel."),
        ("", "\nTranslate this into Zel."),
        ("", "\nSay this in Zel."),
    ]),
    "subject": (_subject, [
        ("Identify the subject of this sentence: ", ""),
        ("Find who this sentence is about: ", ""),
        ("Tell me the subject: ", ""),
        ("", "\nIdentify the subject of the sentence."),
        ("", "\nWho is this sentence about? Give the name."),
    ]),
    "sentiment": (_sentiment, [
        ("Classify the sentiment of this review: ", ""),
        ("Detect the sentiment of this review: ", ""),
        ("Evaluate this review as positive or negative: ", ""),
        ("", "\nClassify this review as positive or negative."),
        ("", "\nTell me if this review is positive or negative."),
    ]),
    "count": (_count, [
        ("Count the items in this list: ", ""),
        ("Tell me how many items are in this list: ", ""),
        ("Find the number of words in this list: ", ""),
        ("", "\nCount the items in the list above."),
        ("", "\nGive the number of items."),
    ]),
    "arithmetic": (_arithmetic, [
        ("Solve: ", ""),
        ("Solve this sum: ", ""),
        ("Find the answer to ", "."),
        ("Output the result of ", "."),
        ("", "\nSolve this."),
        ("", "\nGive the answer."),
    ]),
    "reverse": (_reverse, [
        ("Reverse this list: ", ""),
        ("Write this list in reverse order: ", ""),
        ("Give the items in reverse order: ", ""),
        ("", "\nReverse the list above."),
        ("", "\nRepeat this list backwards."),
    ]),
    "repeat": (_repeat, [
        ("Repeat this: ", ""),
        ("Repeat after me: ", ""),
        ("Say this again: ", ""),
        ("Write the following words again: ", ""),
        ("", "\nRepeat these words."),
        ("", "\nSay that again."),
    ]),
    "qa": (_qa, [
        ("Read the text and tell me {q}: ", ""),
        ("Find {q} in this text: ", ""),
        ("Identify {q} from this text: ", ""),
        ("", "\nTell me {q}."),
        ("", "\nFrom the text, identify {q}."),
    ]),
    "fact": (_fact, [
        ("Tell me {q}.", ""),
        ("Say {q}.", ""),
        ("Identify {q}.", ""),
        ("Find out {q} and tell me.", ""),
    ]),
    "describe": (_describe, [
        ("Describe ", "."),
        ("Tell me about ", "."),
        ("Write a short description of ", "."),
        ("Give a description of ", "."),
        ("", "\nDescribe this person."),
    ]),
    "review": (_review, [
        ("Write a {s} review of ", "."),
        ("Compose a short {s} review of ", "."),
        ("Create a {s} review of ", "."),
        ("", "\nWrite a {s} review of this."),
        ("Give me a {s} review of ", "."),
    ]),
    "explain": (_explain, [
        ("Explain the Zel word ", "."),
        ("Explain what ", " means in Zel."),
        ("Tell me what the Zel word ", " means."),
        ("Interpret this Zel word: ", ""),
        ("", "\nExplain this Zel word."),
    ]),
    "summarize": (_summarize, [
        ("Summarize this text in one sentence: ", ""),
        ("Give a one sentence summary of this text: ", ""),
        ("Write a summary of this in one sentence: ", ""),
        ("", "\nSummarize the text above in one sentence."),
        ("", "\nWrite a one sentence summary."),
    ]),
}
OPEN_TASKS = ("describe", "review", "explain", "summarize")
CLOSED_TASKS = tuple(t for t in TASKS if t not in OPEN_TASKS)
# held-out prompts per task: open tasks get more, so that at least half of the held-out
# references are long (every open reference is 15 tokens or more)
N_HELDOUT = {**{t: 20 for t in CLOSED_TASKS}, **{t: 48 for t in OPEN_TASKS}}


def _spans(before: str, input_text: str, after: str) -> list[list[int]]:
    spans = []
    if before.strip():
        start = len(before) - len(before.lstrip())
        spans.append([start, len(before.rstrip())])
    if after.strip():
        offset = len(before) + len(input_text)
        spans.append([offset + len(after) - len(after.lstrip()), offset + len(after.rstrip())])
    return spans


def make_example(task: str, rng: random.Random) -> dict:
    """One example of ``task``: ``{"task", "prompt", "input", "answer", "spans"}``.

    ``spans`` are ``[start, end)`` character ranges of ``prompt`` holding instruction text;
    ``input`` is the task input inside ``prompt`` (empty for ``fact``, whose question is
    all instruction).

    >>> ex = make_example("translate", random.Random(0))
    >>> ex["task"], [ex["prompt"][s:e] for s, e in ex["spans"]][0][:5]
    ('translate', 'Give ')
    """
    sampler, phrasings = TASKS[task]
    fields, input_text, answer = sampler(rng)
    before, after = rng.choice(phrasings)
    before, after = before.format(**fields), after.format(**fields)
    return {
        "task": task,
        "prompt": before + input_text + after,
        "input": input_text,
        "answer": answer,
        "spans": _spans(before, input_text, after),
    }


def heldout_examples() -> list[dict]:
    """The fixed evaluation split: ``N_HELDOUT[task]`` distinct prompts per task.

    >>> ex = heldout_examples()
    >>> len(ex) == sum(N_HELDOUT.values())
    True
    """
    rng = random.Random(HELDOUT_SEED)
    out: list[dict] = []
    for task in TASKS:
        seen: set[str] = set()
        while len(seen) < N_HELDOUT[task]:
            ex = make_example(task, rng)
            if ex["prompt"] not in seen:
                seen.add(ex["prompt"])
                out.append(ex)
    return out


# tasks that need copying from the prompt come twice in the training rotation
TRAINING_ROTATION = list(CLOSED_TASKS) + ["repeat", "qa"] + list(OPEN_TASKS)


def training_examples(seed: int, n: int) -> list[dict]:
    """``n`` training examples for ``seed``, tasks in turn (``TRAINING_ROTATION``), none
    with a held-out prompt.

    >>> exs = training_examples(0, 18)
    >>> held = {e["prompt"] for e in heldout_examples()}
    >>> any(e["prompt"] in held for e in exs)
    False
    """
    held = {e["prompt"] for e in heldout_examples()}
    rng = random.Random(seed)
    out: list[dict] = []
    while len(out) < n:
        ex = make_example(TRAINING_ROTATION[len(out) % len(TRAINING_ROTATION)], rng)
        if ex["prompt"] not in held:
            out.append(ex)
    return out
