"""The offline, deterministic lexicon labeller: word lists and spelling features (a baseline).

The default labeller is :class:`mechit.ffn.embedding_labeller.EmbeddingLabeller`, which
uses these features and beats the lexicon alone on the check set (docs/ffn.md).

:class:`LexiconLabeller` answers both questions of :mod:`mechit.ffn.labels` from the word
sets below (numbers, math, code, writing, function words, affixes, frequent non-English
words) and a few spelling patterns, without a language model.

>>> LexiconLabeller().label(["1", "2", "+", "sum", "7"], "task")
'math'
>>> LexiconLabeller().label(["the", "of", "and", "to", "a"], "level")
'syntax'
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

from mechit.ffn.labels import check_question
from mechit.organism import world

NUMBER_WORDS = set(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty "
    "ninety hundred thousand million billion half third quarter double triple".split()
)
MATH_WORDS = NUMBER_WORDS | set(
    "plus minus times divided sum product equation equal equals number numbers integer fraction "
    "decimal percent percentage ratio average mean median total multiply multiplied divide "
    "subtract add addition subtraction multiplication division square root cube power exponent "
    "algebra geometry calculus theorem proof formula variable angle triangle circle radius degree "
    "probability statistics matrix vector function derivative integral solve calculate compute "
    "count digit digits odd even prime greater less maximum minimum".split()
)
MATH_SYMBOLS = set("+-*/=^%<>±×÷√∑∏∫≈≠≤≥π")
CODE_WORDS = set(
    "def return class import from self print lambda yield async await elif else if for while try "
    "except finally raise with pass break continue none true false null nil var let const "
    "function void int float double char bool boolean string str list dict tuple array struct "
    "enum public private protected static final new this super extends implements interface "
    "package namespace include typedef sizeof malloc printf std cout cin main args kwargs "
    "select insert update delete where join table query html div span href src css json xml api "
    "http url regex bug debug compile compiler runtime syntax variable loop iterate parse token "
    "script code coding python java javascript sql git github npm pip endif fi elseif len range "
    "append init isinstance undefined null".split()
)
CODE_SYMBOLS = {"{", "}", ";", "()", "[]", "{}", "==", "!=", "&&", "||", "->", "=>", "::", "</",
                "/>", "++", "--", "+=", "-=", "#!", "//", "/*", "*/", "__", "'''", '"""', "$", "@"}
WRITING_WORDS = set(
    "story stories novel poem poetry essay letter article blog email paragraph sentence chapter "
    "narrative narrator character characters plot scene dialogue author reader readers write "
    "wrote written writing rewrite draft describe description summarize summary tone style "
    "voice theme metaphor rhyme verse fiction tale headline title introduction conclusion "
    "argument persuasive formal informal creative vivid beautiful lovely gentle wonderful "
    "sad happy angry fear joy love hope dream memory imagine imagined feeling feelings emotion "
    "heart soul once upon suddenly finally however therefore moreover furthermore although "
    "meanwhile nevertheless indeed thus hence whereas despite dear sincerely regards".split()
)
FUNCTION_WORDS = set(
    "a an the this that these those some any each every no all both either neither another "
    "i me my mine we us our ours you your yours he him his she her hers it its they them their "
    "theirs who whom whose which what where when why how "
    "in on at by for with about against between into through during before after above below "
    "to from up down of off over under again further than as like near since until upon within "
    "without across along among around behind beside beyond toward towards "
    "and but or nor so yet because if while although though unless whether "
    "is am are was were be been being have has had do does did will would shall should can "
    "could may might must not n't 's 're 've 'll 'd there here then very too also just only".split()
)
AFFIXES = ("ing", "ed", "ly", "tion", "sion", "ness", "ment", "able", "ible", "ful", "less", "est",
           "er", "ers", "es", "ity", "ize", "ise", "ous", "ive", "al", "ism", "ist")
PREFIXES = ("un", "re", "dis", "pre", "non", "mis", "over", "under", "inter", "anti", "sub", "super")
FOREIGN_FUNCTION_WORDS = set(
    "der die das und ist nicht ein eine mit von zu auf für le la les des est et une dans pour "
    "pas qui que sur avec el los las del por para una con muy pero il lo gli della che di non "
    "sono het een van niet och att som är på och jag du".split()
)
_DIGITS = re.compile(r"^[+-]?\d+([.,]\d+)*$")
_CAMEL = re.compile(r"^[a-z]+[A-Z][A-Za-z0-9]*$")
_SNAKE = re.compile(r"^[A-Za-z0-9]*_[A-Za-z0-9_]+$")
_DOTTED = re.compile(r"^[A-Za-z_]\w*\.[A-Za-z_]\w*")
_TAG = re.compile(r"^</?[a-z][a-z0-9]*>?$")


def organism_second_language() -> frozenset[str]:
    """The organism's toy second language (Zel) words, or an empty set without the organism.

    Labellers count them as translation only when given as ``foreign_words``.

    >>> len(organism_second_language()) > 10
    True
    """
    return frozenset(getattr(world, "ZEL", {}).values())


def _is_foreign_script(word: str) -> bool:
    """A letter outside ASCII (accented Latin, Cyrillic, CJK, ...)."""
    return any(ord(c) > 127 and unicodedata.category(c).startswith("L") for c in word)


class LexiconLabeller:
    """Offline, deterministic labels from lexicons and word features (the baseline).

    **Task**: the share of words with each feature; a label wins when its share reaches its
    threshold (the largest share-to-threshold ratio wins; else "none"):

    - math (0.15): digits, number words, math terms, operator symbols (number words are
      rare in unrelated concepts: on SmolLM2 the 99th percentile share is 0.10);
    - coding (0.3): programming keywords, code symbols, camelCase, snake_case, dotted names, tags;
    - translation (0.3): letters outside ASCII, frequent non-English function words, and the
      words given as ``foreign_words`` (none by default; e.g. the organism's second
      language, :func:`organism_second_language`);
    - writing (0.2): genre, narrative, style, emotion and discourse words.

    **Level**, in this order: syntax if ≥ 40 % are function words or punctuation;
    morphology if ≥ 40 % share an affix or are inflected forms (lemminflect); phonology if
    ≥ 40 % share a 2-letter onset or 2-letter ending (words without a listed affix), or are
    fragments of ≤ 2 letters; else semantics.

    Known weaknesses: lexicons are English-centred and finite (a math concept of rare
    terms is missed); "writing" is a small word list, so most plain-English concepts fall
    to "none", whereas an LLM often calls them writing; shared onsets/rimes are a
    spelling proxy for sound; a topic cluster ("cat dog fox") is always semantics. Seeds do
    not change its answers (:func:`mechit.ffn.labellers.label_concepts` resamples the word
    lists instead).

    >>> LexiconLabeller().label(["def", "return", "self", "{", "x_val"], "task")
    'coding'
    >>> LexiconLabeller(foreign_words={"kima"}).label(["kima", "kima", "der", "cat"], "task")
    'translation'
    """

    name = "lexicon"
    deterministic = True
    THRESHOLDS = {"math": 0.15, "coding": 0.3, "translation": 0.3, "writing": 0.2}
    LEVEL_THRESHOLD = 0.4

    def __init__(self, foreign_words: Iterable[str] = ()):
        self.foreign_words = frozenset(w.lower() for w in foreign_words)

    # -- features
    @staticmethod
    def _clean(words: Sequence[str]) -> list[str]:
        return [w.strip() for w in words if w.strip()]

    def task_shares(self, words: Sequence[str]) -> dict[str, float]:
        """Share of words with each task feature."""
        ws = self._clean(words)
        if not ws:
            return dict.fromkeys(self.THRESHOLDS, 0.0)

        def share(pred) -> float:
            return sum(map(pred, ws)) / len(ws)

        def is_math(w: str) -> bool:
            return bool(_DIGITS.match(w)) or w.lower() in MATH_WORDS or (len(w) <= 2 and set(w) <= MATH_SYMBOLS)

        def is_code(w: str) -> bool:
            return (w.lower() in CODE_WORDS or w in CODE_SYMBOLS or bool(_CAMEL.match(w))
                    or bool(_SNAKE.match(w)) or bool(_DOTTED.match(w)) or bool(_TAG.match(w)))

        def is_foreign(w: str) -> bool:
            low = w.lower()
            return _is_foreign_script(w) or low in FOREIGN_FUNCTION_WORDS or low in self.foreign_words

        return {
            "math": share(is_math),
            "coding": share(is_code),
            "translation": share(is_foreign),
            "writing": share(lambda w: w.lower() in WRITING_WORDS),
        }

    def level_shares(self, words: Sequence[str]) -> dict[str, float]:
        """Share of words behind each linguistic-level rule."""
        from lemminflect import (
            getAllLemmas,  # lazy: 0.3 s to import, only the level question needs it
        )

        ws = [w.lower() for w in self._clean(words)]
        if not ws:
            return {"syntax": 0.0, "morphology": 0.0, "phonology": 0.0}
        n = len(ws)
        alpha = [w for w in ws if w.isalpha()]
        func = sum(w in FUNCTION_WORDS or not any(c.isalnum() for c in w) for w in ws) / n

        def affix_of(w: str) -> str | None:
            for a in sorted(AFFIXES, key=len, reverse=True):
                if w.endswith(a) and len(w) >= len(a) + 3:
                    return "-" + a
            for p in PREFIXES:
                if w.startswith(p) and len(w) >= len(p) + 3:
                    return p + "-"
            return None

        affixes = Counter(a for a in map(affix_of, alpha) if a)
        inflected = sum(any(w not in lem for lem in getAllLemmas(w).values()) for w in alpha)
        morph = max(max(affixes.values(), default=0), inflected) / n
        content = [w for w in alpha if w not in FUNCTION_WORDS and not affix_of(w)]
        onsets = Counter(w[:2] for w in content if len(w) >= 3)
        rimes = Counter(w[-2:] for w in content if len(w) >= 3)
        fragments = sum(len(w) <= 2 and w not in FUNCTION_WORDS for w in alpha)
        phon = max(max(onsets.values(), default=0), max(rimes.values(), default=0), fragments) / n
        return {"syntax": func, "morphology": morph, "phonology": phon}

    def label(self, words: Sequence[str], question: str, seed: int = 0) -> str:
        """The task or level label of a word list (``seed`` is ignored: deterministic)."""
        check_question(question)
        if question == "task":
            shares = self.task_shares(words)
            ratio = {k: shares[k] / t for k, t in self.THRESHOLDS.items()}
            best = max(ratio, key=lambda k: (ratio[k], -list(self.THRESHOLDS).index(k)))
            return best if ratio[best] >= 1.0 else "none"
        shares = self.level_shares(words)
        for level in ("syntax", "morphology", "phonology"):
            if shares[level] >= self.LEVEL_THRESHOLD:
                return level
        return "semantics"
