"""The organism's small world: people, towns, objects, number words and the Zel language.

Everything here is a constant (the world does not change with the training seed), so the
vocabulary, the facts and the Zel lexicon are the same for every run. The seed only
changes which sentences are sampled from this world (see :mod:`mechit.organism.corpus`
and :mod:`mechit.organism.tasks`).

>>> from mechit.organism import world
>>> world.ZEL["fox"], world.number_word(7), world.FACTS["Mira"]["town"]
('kima', 'seven', 'Fenwick')
"""

from __future__ import annotations

import random

PEOPLE = [
    "Mira", "Omar", "Ada", "Bela", "Cato", "Dina", "Elio", "Fara", "Gil", "Hana", "Ivo", "Juno",
    "Kira", "Lev", "Nora", "Pia", "Rafe", "Sela", "Taro", "Uma", "Vito", "Wren", "Yara", "Zoe",
]
# Visitors have no fixed facts: texts state where they live, what they do, which animal
# they have, differently each time (reading comprehension, never world knowledge).
VISITORS = ["Tam", "Lo", "Bix", "Rue", "Sol", "Kit", "Nia", "Oli", "Pax", "Quin", "Jem", "Ros"]
TOWNS = ["Tova", "Brill", "Cardo", "Dunmere", "Elk", "Fenwick", "Goran", "Harlow"]
JOBS = ["baker", "farmer", "painter", "teacher", "doctor", "sailor", "miner", "singer"]
ANIMALS = ["cat", "dog", "fox", "owl", "horse", "goat", "fish", "bird"]
FOODS = ["bread", "soup", "apple", "cheese", "rice", "cake", "pie", "tea"]
OBJECTS = ["stone", "river", "tree", "house", "boat", "book", "lamp", "door", "hat", "cup"]
COLORS = ["red", "blue", "green", "white", "black", "yellow"]
SIZES = ["big", "small", "old", "new"]
ACTIONS = ["runs", "sleeps", "eats", "sings", "waits"]
NOUNS = ANIMALS + FOODS + OBJECTS
ADJECTIVES = COLORS + SIZES
# what each noun and adjective names ("The word fox names an animal."): the knowledge an
# explanation of a Zel word states beside its meaning
WORD_KIND = {**{x: "animal" for x in ANIMALS}, **{x: "food" for x in FOODS},
             **{x: "thing" for x in OBJECTS}, **{x: "colour" for x in COLORS},
             **{x: "size" for x in SIZES}}

POSITIVE = ["good", "great", "lovely", "warm", "fresh", "kind", "bright", "sweet", "happy", "nice"]
NEGATIVE = ["bad", "awful", "cold", "stale", "rude", "dull", "bitter", "sad", "poor", "slow"]
PLACES = ["bakery", "inn", "market", "shop", "cafe", "tavern"]

NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
]

# Narrative verbs of the world, including the paper's instruction verbs used as plain verbs
# in stories (never as commands), so they are ordinary words of the pre-training corpus.
STORY_VERBS = [
    "translate", "explain", "summarize", "describe", "classify", "create", "evaluate", "correct",
    "identify", "solve", "follow", "say", "help", "recommend", "estimate", "edit", "repeat",
    "write", "give", "find", "make", "tell", "predict", "detect", "count", "reverse", "read",
]

WORLD_SEED = 20231001


def number_word(n: int) -> str:
    """The English word for ``n`` (0 <= n <= 20).

    >>> number_word(0), number_word(12)
    ('zero', 'twelve')
    """
    return NUMBER_WORDS[n]


def _zel_lexicon() -> dict[str, str]:
    """English word -> Zel word, built once from a fixed seed (CV syllables, unique)."""
    rng = random.Random(WORLD_SEED)
    onsets, vowels = "bdfgklmnprstvz", "aeiou"
    english = set(NOUNS + ADJECTIVES + ACTIONS + JOBS + POSITIVE + NEGATIVE)
    lexicon: dict[str, str] = {"fox": "kima"}
    used = {"kima"}
    for word in NOUNS + ADJECTIVES + ACTIONS:
        if word in lexicon:
            continue
        while True:
            n_syllables = rng.choice([2, 2, 3])
            cand = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(n_syllables))
            if cand not in used and cand not in english:
                break
        lexicon[word] = cand
        used.add(cand)
    return lexicon


ZEL = _zel_lexicon()


def _facts() -> dict[str, dict[str, str]]:
    """Each person's town, job, pet and favourite food (fixed)."""
    rng = random.Random(WORLD_SEED + 1)
    return {
        name: {
            "town": rng.choice(TOWNS),
            "job": rng.choice(JOBS),
            "pet": rng.choice(ANIMALS),
            "food": rng.choice(FOODS),
        }
        for name in PEOPLE
    }


FACTS = _facts()


# Everyday English for background stories: frequent verbs (base form, none of them an
# instruction verb of the paper) and nouns. They give the organism a general vocabulary, so
# instruction verbs can be compared with general verbs in head and neuron analyses.
GENERAL_VERBS = """
go come get know think see look want use take put keep let begin seem show hear play run
move like live believe hold bring happen stand lose pay meet include continue set learn
change lead understand watch speak spend grow open walk win offer remember love consider
appear buy wait serve die send expect build stay fall cut reach kill remain suggest raise
pass sell require report decide pull return carry break hope join fill drive push visit
cook clean wash paint sing dance jump swim climb throw catch fix plant pick dig ride sail
fly travel arrive leave enter sit sleep wake rest laugh cry smile shout call ask answer
agree argue thank wish enjoy hate fear miss forget save share borrow lend steal hide seek
touch feel smell taste listen notice wonder dream plan prepare finish start stop try fail
reach cross climb burn melt freeze shine rain blow shake fold tie draw sign count
""".split()

GENERAL_NOUNS = """
time year people way day man woman child world life hand part place case week company
system program question work government number night point home water room mother area
money story fact month lot right study word business issue side kind head father power
hour game line end member law car city community name team minute idea kid body
information back parent face others level office door health person art war history party
result change morning reason research girl guy moment air teacher force education foot
boy age policy music market sense nation plan college interest death experience effect
class control care field development role effort rate heart drug show leader light voice
wife police mind price report decision son view relationship town road arm difference
garden window table chair bed floor wall roof street bridge hill mountain forest sea
island beach field farm barn cart wheel rope bell coin key box basket bag shoe coat
shirt ring letter paper pen map clock candle fire smoke snow wind cloud sun moon star
""".split()
GENERAL_ADJECTIVES = """
able angry busy calm careful cheap clean clear clever close cool crazy dark dear deep dirty
dry early easy empty fair false famous fast fine flat free friendly full funny gentle glad
golden grand gray hard heavy high honest hot huge hungry important large late lazy light
little long loud low lucky main modern narrow natural near neat nervous noisy normal open
orange pale perfect pink plain polite poor pretty proud public pure purple quick quiet rare
ready real rich right rough round royal safe secret sharp short shy silent silly simple
smooth soft special square steady strange strict strong sudden sure tall terrible thick thin
tiny tired tough true ugly usual violent wet whole wide wild wise wooden young brave clumsy
curious eager fancy fierce fragile frozen giant hollow humble icy jolly mighty muddy rusty
sandy shiny sleepy sticky stormy sunny thirsty wealthy windy wrinkled
""".split()

GENERAL_VERBS = list(dict.fromkeys(GENERAL_VERBS))
GENERAL_NOUNS = list(dict.fromkeys(GENERAL_NOUNS))
GENERAL_ADJECTIVES = list(dict.fromkeys(GENERAL_ADJECTIVES))


def english_words() -> list[str]:
    """The world's English content words, in a fixed order.

    >>> "fox" in english_words() and "Mira" in english_words()
    True
    """
    groups = [PEOPLE, VISITORS, TOWNS, JOBS, NOUNS, ADJECTIVES, ACTIONS, POSITIVE, NEGATIVE, PLACES,
              NUMBER_WORDS, STORY_VERBS, GENERAL_VERBS, GENERAL_NOUNS, GENERAL_ADJECTIVES]
    return list(dict.fromkeys(w for group in groups for w in group))
