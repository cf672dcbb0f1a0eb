"""A check set of concepts whose labels are known by construction (issue 19).

Every concept is a word list like the ones :func:`mechit.ffn_concepts` finds, built from
one pool of words whose label is known, diluted with frequent English words (noise) at
several rates. Sources are ones the labellers do not read:

====================  =======================================================================
question / label      pool (one ``kind`` per pool)
====================  =======================================================================
task / math           number words, digits 0-199, operator symbols, mathematical terms (typed)
task / coding         keywords and builtins of Python, C, Go, Rust, Ruby (Pygments lexers),
                      JavaScript/Java keywords and identifiers (typed)
task / translation    wordfreq's frequent words of fr de es it pt nl sv pl ru el ar he hi ja
                      ko zh, minus words with an English Zipf frequency of 2 or more
task / writing        stylistic, rhetorical and genre vocabulary (typed)
task / none           function words; frequent English words
level / syntax        function words of one kind (prepositions, pronouns, ...; typed)
level / morphology    one inflection (-ing, past, 3rd person) of frequent verbs, or whole
                      paradigms (walk walks walked walking), by lemminflect
level / phonology     frequent words sharing a spelled rime (-ght) or onset (str-); spelling
                      stands in for sound, affix endings are left out
level / semantics     topical sets: animals, food, body, clothing, ... (typed)
====================  =======================================================================

Each label's pools are split in two halves with no lemma in common, ``calibration`` (to tune a labeller's
thresholds) and ``test`` (to measure it); noise words too. Task concepts carry only a task
truth and level concepts only a level truth. The set depends only on ``seed`` and the
installed wordfreq, lemminflect and Pygments data.

>>> check = check_set()
>>> check.groupby(["split", "question"]).size().to_dict()
{('calibration', 'level'): 64, ('calibration', 'task'): 80, ('test', 'level'): 64, ('test', 'task'): 80}
>>> row = check[(check.split == "test") & (check.truth == "math")].iloc[0]
>>> len(row.words), float(row.noise)
(20, 0.1)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import wordfreq
from lemminflect import getAllLemmas, getInflection
from pygments.lexer import words as pygments_words
from pygments.lexers import get_lexer_by_name
from pygments.token import Keyword, Name

from mechit.data.wordlists import frequent_words, general_verbs
from mechit.errors import InputError
from mechit.ffn import checkset_words as typed

SPLITS = ("calibration", "test")
NOISE_RATES = (0.1, 0.3, 0.5)
LATIN_LANGUAGES = ("fr", "de", "es", "it", "pt", "nl", "sv", "pl")
OTHER_SCRIPT_LANGUAGES = ("ru", "el", "ar", "he", "hi", "ja", "ko", "zh")
CODE_LANGUAGES = ("python", "c", "go", "rust", "ruby")
ENGLISH_ZIPF_LIMIT = 2.0
INFLECTIONS = ("VBG", "VBD", "VBZ")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Unit = tuple[str, ...]  # words that go into a concept together (one word, or one paradigm)


def _single(words: Sequence[str]) -> list[Unit]:
    return [(w,) for w in dict.fromkeys(words)]


def pygments_keywords(language: str) -> list[str]:
    """Keywords and builtin names that a Pygments lexer lists for ``language``.

    >>> {"elif", "except", "isinstance"} <= set(pygments_keywords("python"))
    True
    """
    found: set[str] = set()
    for rules in get_lexer_by_name(language).__class__.tokens.values():
        for rule in rules:
            if isinstance(rule, tuple) and len(rule) >= 2 and isinstance(rule[0], pygments_words):
                if rule[1] in Keyword or rule[1] in Name.Builtin:
                    found |= {w for w in rule[0].words if _IDENTIFIER.fullmatch(w)}
    return sorted(found)


def foreign_words(language: str, n: int = 3000) -> list[str]:
    """Frequent words of another language (wordfreq) that are not English words.

    Kept: alphabetic words (at least 3 letters in Latin script, 2 elsewhere, 1 in Chinese
    and Japanese) whose English Zipf frequency is below ``ENGLISH_ZIPF_LIMIT``.

    >>> foreign_words("de")[:3]
    ['jetzt', 'wurde', 'können']
    """
    shortest = 3 if language in LATIN_LANGUAGES else 1 if language in ("zh", "ja") else 2
    return [w for w in wordfreq.top_n_list(language, n)
            if w.isalpha() and len(w) >= shortest and wordfreq.zipf_frequency(w, "en") < ENGLISH_ZIPF_LIMIT]


def _is_base_form(word: str) -> bool:
    lemmas = getAllLemmas(word)
    return not lemmas or any(word in forms for forms in lemmas.values())


def _morphology_pools(n_verbs: int = 600) -> dict[str, list[Unit]]:
    verbs = general_verbs(n_verbs)
    pools: dict[str, list[Unit]] = {}
    for tag in INFLECTIONS:
        forms = [(getInflection(v, tag) or (v,))[0] for v in verbs]
        pools[f"inflection:{tag}"] = _single([f for f, v in zip(forms, verbs) if f != v])
    paradigms = []
    for v in verbs:
        family = tuple(dict.fromkeys([v] + [(getInflection(v, t) or (v,))[0] for t in ("VBZ", "VBD", "VBG", "VBN")]))
        if len(family) >= 4:
            paradigms.append(family)
    pools["paradigm"] = paradigms
    return pools


def _phonology_pools(vocabulary: Sequence[str]) -> dict[str, list[Unit]]:
    words = [w for w in vocabulary if len(w) >= 4 and _is_base_form(w)]
    pools = {f"rime:-{r}": _single([w for w in words if w.endswith(r) and not w.endswith(typed.AFFIX_ENDINGS)])
             for r in typed.RIMES}
    pools.update({f"onset:{o}-": _single([w for w in words if w.startswith(o)]) for o in typed.ONSETS})
    return pools


@functools.lru_cache(maxsize=2)
def _pools() -> tuple[dict[str, dict[str, dict[str, list[Unit]]]], list[Unit]]:
    """question -> label -> kind -> units, and the noise units (frequent English words)."""
    vocabulary = frequent_words(30_000)
    function_words = sorted({w for ws in typed.FUNCTION_WORD_KINDS.values() for w in ws})
    digits = [str(i) for i in range(200)]
    task = {
        "math": {"number words": _single(typed.NUMBER_WORDS), "digits": _single(digits),
                 "terms": _single(typed.MATH_TERMS),
                 "mixed": _single(typed.NUMBER_WORDS + typed.MATH_TERMS + list(typed.MATH_SYMBOLS) + digits[:60])},
        "coding": {**{lang: _single(pygments_keywords(lang)) for lang in CODE_LANGUAGES},
                   "javascript/java": _single(typed.JAVASCRIPT_JAVA_KEYWORDS)},
        "translation": {lang: _single(foreign_words(lang)) for lang in LATIN_LANGUAGES + OTHER_SCRIPT_LANGUAGES},
        "writing": {"writing": _single(typed.WRITING_WORDS)},
        "none": {"function words": _single(function_words), "frequent words": _single(vocabulary[100:10_000])},
    }
    level = {
        "syntax": {kind: _single(ws) for kind, ws in typed.FUNCTION_WORD_KINDS.items()},
        "morphology": _morphology_pools(),
        "phonology": _phonology_pools(vocabulary),
        "semantics": {topic: _single(ws) for topic, ws in typed.TOPICS.items()},
    }
    signal = {w for q in (task, level) for lab, kinds in q.items() if lab != "none"
              for units in kinds.values() for unit in units for w in unit}
    signal |= set(function_words)
    noise = _single([w for w in vocabulary[100:10_000] if w not in signal])
    task["none"]["frequent words"] = noise
    return {"task": task, "level": level}, noise


def _key(unit: Unit) -> str:
    """A unit's lemma (verb reading first): forms of one lemma always fall in the same half."""
    lemmas = getAllLemmas(unit[0])
    return (lemmas.get("VERB") or next(iter(lemmas.values()), None) or unit[:1])[0]


def _halves(kinds: dict[str, list[Unit]], seed: int) -> dict[str, dict[str, list[Unit]]]:
    """Each kind's units in two disjoint halves: a lemma met in an earlier kind keeps its half,
    new ones go, in seeded random order, to the half of this kind that has fewer."""
    rng = np.random.default_rng(seed)
    side: dict[str, int] = {}
    out = {}
    for kind, units in kinds.items():
        halves: tuple[list[Unit], list[Unit]] = ([], [])
        for i in rng.permutation(len(units)):
            key = _key(units[i])
            if key not in side:
                side[key] = 0 if len(halves[0]) <= len(halves[1]) else 1
            halves[side[key]].append(units[i])
        out[kind] = dict(zip(SPLITS, halves))
    return out


def _sample(units: list[Unit], n: int, rng: np.random.Generator, where: str) -> list[str]:
    out: list[str] = []
    for i in rng.permutation(len(units)):
        out.extend(units[i][: n - len(out)])
        if len(out) == n:
            return out
    raise InputError(f"check set: pool {where} has {len(out)} words, {n} needed; use fewer words per concept")


def check_set(*, n_words: int = 20, per_label: int = 16, noise_rates: Sequence[float] = NOISE_RATES,
              seed: int = 0) -> pd.DataFrame:
    """The check set: one row per concept.

    Columns: concept (id), split ("calibration"/"test"), question ("task"/"level"), truth
    (the label), kind (the pool, e.g. "fr", "rime:-ght"), noise (share of noise words), words
    (a list of ``n_words`` words in random order). Per split, each label gets ``per_label``
    concepts; kinds take turns, and noise rates rotate so each kind meets every rate.

    >>> small = check_set(n_words=10, per_label=2, noise_rates=(0.5,))
    >>> small[small.kind == "fr"].words.iloc[0][:3]
    ['vois', 'apporte', 'utiliser']
    """
    if n_words < 1 or per_label < 1 or not noise_rates or not all(0 <= r < 1 for r in noise_rates):
        raise InputError("check set: n_words and per_label must be positive and noise rates in [0, 1)")
    pools, noise = _pools()
    rng = np.random.default_rng(seed)
    noise_halves = _halves({"noise": noise}, seed)["noise"]
    halves = {(question, label): _halves(kinds, seed + 1) for question, labels in pools.items()
              for label, kinds in labels.items()}
    rows = []
    for split in SPLITS:
        for question, labels in pools.items():
            for label, kinds in labels.items():
                names = list(kinds)
                for i in range(per_label):
                    kind = names[i % len(names)]
                    rate = float(noise_rates[(i + i // len(names)) % len(noise_rates)])
                    n_noise = 0 if label == "none" else int(round(n_words * rate))
                    words = _sample(halves[question, label][kind][split], n_words - n_noise, rng, f"{label}/{kind}/{split}")
                    words += _sample(noise_halves[split], n_noise, rng, f"noise/{split}")
                    rows.append({"concept": f"{split}/{question}/{label}/{i:02d}", "split": split,
                                 "question": question, "truth": label, "kind": kind,
                                 "noise": rate if n_noise else 0.0,
                                 "words": [words[j] for j in rng.permutation(len(words))]})
    return pd.DataFrame(rows)
