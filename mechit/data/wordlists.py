"""Word lists, built offline from maintained packages (wordfreq, lemminflect).

- :data:`INSTRUCTION_VERBS`: the 38 instruction verbs of Wu et al. (2024), §2.6 of the
  paper page (the one list typed here, because it *is* the paper's list).
- :func:`general_verbs`: the most frequent English verbs that are neither instruction
  verbs nor stop words. Candidates are wordfreq's English words in frequency order; a
  word is kept when lemminflect knows it as the base form of a verb and the verb reading
  is common: its past tense (or -ing form, where the past tense is the word itself) is
  at most 1.5 Zipf units rarer than the word itself ("make"/"made" passes, "time"/"timed" does not). Stop words are the auxiliaries
  be and do and the modal verbs (the verbs lemminflect lists without an -ing form:
  can, will, shall, may, must, ought, dare...). Words with both a noun and a verb
  reading (name, place, book) are kept: without a tagged corpus the rule cannot tell
  which reading dominates.
- :func:`frequent_words`: wordfreq's most frequent English words, alphabetic ASCII
  only, lower case ("a" and "i" are the only one-letter words kept).
- :func:`head_vocabulary`: the one default word list of the head and FFN analyses
  (``mechit compare``, ``mechit heads``, ``mechit ffn``, the notebooks): the verbs Finding 2
  compares (:func:`finding_verbs`) and the :data:`PAPER_VOCABULARY` most frequent words by
  default, as the authors' ~26.5k; :func:`paper_top_k` gives the K words per head
  dimension in the paper's ratio (K = 100 of 26,500).

>>> len(INSTRUCTION_VERBS)
38
>>> "translate" in INSTRUCTION_VERBS and "translate" not in general_verbs(200)
True
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable

from mechit.errors import InputError

INSTRUCTION_VERBS: tuple[str, ...] = (
    "translate", "explain", "summarize", "retrieve", "revise", "generate", "describe",
    "classify", "create", "evaluate", "correct", "develop", "identify", "analyze", "compose",
    "demonstrate", "interpret", "design", "solve", "follow", "clarify", "say", "help", "act",
    "recommend", "estimate", "edit", "format", "repeat", "write", "give", "find", "make",
    "have", "tell", "output", "predict", "detect",
)

PAPER_VOCABULARY = 26_500  # the authors' vocabulary: about 26.5k frequent words from chat data
PAPER_TOP_K = 100  # the authors' K words per head dimension and side, on that vocabulary
N_GENERAL_VERBS = 3000  # the general verbs Finding 2 compares the instruction verbs with

AUXILIARIES = ("be", "do")
VERB_DOMINANCE_ZIPF = 1.5
_CANDIDATES = 60_000


def _is_word(word: str) -> bool:
    return word.isascii() and word.isalpha() and (len(word) > 1 or word in ("a", "i"))


def frequent_words(n: int = 20_000) -> list[str]:
    """The ``n`` most frequent English words (wordfreq), alphabetic ASCII, lower case.

    >>> frequent_words(5)
    ['the', 'to', 'and', 'of', 'a']
    """
    if n <= 0:
        raise InputError(f"frequent_words: n must be positive, not {n}")
    return list(_frequent_words(n))


@functools.lru_cache(maxsize=4)
def _frequent_words(n: int) -> tuple[str, ...]:
    from wordfreq import top_n_list

    size = n * 2
    while True:
        words = [w for w in top_n_list("en", size) if _is_word(w)]
        if len(words) >= n or size >= 400_000:
            return tuple(words[:n])
        size *= 2


def _verb_forms(word: str) -> dict | None:
    """lemminflect's inflections of ``word`` if it is the base form of a verb, else None."""
    from lemminflect import getAllInflections, getAllLemmas

    if word not in getAllLemmas(word, upos="VERB").get("VERB", ()):
        return None
    return getAllInflections(word, upos="VERB")


def is_stop_verb(word: str) -> bool:
    """Auxiliaries (be, do) and modals (verbs without an -ing form in lemminflect).

    >>> is_stop_verb("can"), is_stop_verb("be"), is_stop_verb("run")
    (True, True, False)
    """
    if word in AUXILIARIES:
        return True
    forms = _verb_forms(word)
    return forms is not None and "VBG" not in forms


def _is_common_verb(word: str) -> bool:
    from lemminflect import getAllLemmas
    from wordfreq import zipf_frequency

    forms = _verb_forms(word)
    if forms is None or "VBG" not in forms:
        return False
    if set(getAllLemmas(word, upos="VERB").get("VERB", ())) != {word}:
        return False  # also a form of another verb ("found" of find)
    others = {f for f in forms.get("VBD", ()) if f != word} or set(forms["VBG"])
    best = max(zipf_frequency(f, "en") for f in others)
    return best >= zipf_frequency(word, "en") - VERB_DOMINANCE_ZIPF


def general_verbs(n: int = 3000) -> list[str]:
    """The ``n`` most frequent English verbs (base forms) that are not instruction verbs
    and not stop words, most frequent first. Fewer if the candidates run out.

    >>> general_verbs(5)                                        # doctest: +SKIP
    ['get', 'know', 'go', 'see', 'think']
    """
    if n <= 0:
        raise InputError(f"general_verbs: n must be positive, not {n}")
    return list(_general_verbs(n))


@functools.lru_cache(maxsize=4)
def _general_verbs(n: int) -> tuple[str, ...]:
    from wordfreq import top_n_list

    excluded = set(INSTRUCTION_VERBS)
    verbs = []
    for word in top_n_list("en", _CANDIDATES):
        if not _is_word(word) or word in excluded or is_stop_verb(word):
            continue
        if _is_common_verb(word):
            verbs.append(word)
            if len(verbs) == n:
                break
    return tuple(verbs)


def finding_verbs() -> list[str]:
    """The verbs Finding 2 compares: the 38 instruction verbs, then :data:`N_GENERAL_VERBS` general verbs.

    >>> verbs = finding_verbs()                                  # doctest: +SKIP
    >>> len(verbs), verbs[:2], verbs[38:40]                      # doctest: +SKIP
    (3038, ['translate', 'explain'], ['get', 'know'])
    """
    return list(INSTRUCTION_VERBS) + general_verbs(N_GENERAL_VERBS)


def head_vocabulary(n: int = PAPER_VOCABULARY) -> list[str]:
    """The default word list of the head and FFN analyses: the ``n`` most frequent English
    words and the verbs of :func:`finding_verbs` not among them (so ``n`` plus a few hundred
    words), most frequent first (wordfreq's Zipf frequency), since the relatedness
    thresholds of the head pairs use the first 3000 words as "the most frequent".

    Without the verbs, 19 of the 38 instruction verbs are missing from the 3,000 most
    frequent words ("summarize" even from the 20,000), so they could never enter head knowledge.

    >>> words = head_vocabulary(400)                             # doctest: +SKIP
    >>> len(words) > 3038, "summarize" in words, words[:3]       # doctest: +SKIP
    (True, True, ['the', 'to', 'and'])
    """
    if n <= 0:
        raise InputError(f"head_vocabulary: n must be positive, not {n}")
    return list(_head_vocabulary(n))


@functools.lru_cache(maxsize=2)
def _head_vocabulary(n: int) -> tuple[str, ...]:
    from wordfreq import zipf_frequency

    frequent = frequent_words(n)
    rank = {w: k for k, w in enumerate(frequent)}  # wordfreq's order among the frequent words
    words = list(dict.fromkeys(frequent + finding_verbs()))
    return tuple(sorted(words, key=lambda w: (-zipf_frequency(w, "en"), rank.get(w, n), w)))


def paper_top_k(n_words: int) -> int:
    """K words per head dimension and side in the paper's ratio, K = 100 of 26,500 words (at least 1).

    >>> paper_top_k(26_500), paper_top_k(10_000), paper_top_k(500)
    (100, 38, 2)
    """
    return max(1, round(PAPER_TOP_K * n_words / PAPER_VOCABULARY))


def validate_words(words: Iterable[str], *, source: str = "word list") -> list[str]:
    """Check a user word list: a non-empty sequence of non-empty strings (stripped).

    ``source`` names the list in errors (e.g. a file name).

    >>> validate_words(["cat ", "dog"])
    ['cat', 'dog']
    >>> validate_words(["cat", ""])
    Traceback (most recent call last):
    ...
    mechit.errors.InputError: word list: entry 1 is empty
    """
    if isinstance(words, (str, bytes)):
        raise InputError(f"{source}: expected a list of words, got a single string")
    try:
        items = list(words)
    except TypeError:
        raise InputError(f"{source}: expected a list of words, got {type(words).__name__}") from None
    if not items:
        raise InputError(f"{source}: the list is empty")
    clean = []
    for k, word in enumerate(items):
        if not isinstance(word, str):
            raise InputError(f"{source}: entry {k} is {type(word).__name__} {word!r}, not a string")
        if not word.strip():
            raise InputError(f"{source}: entry {k} is empty")
        clean.append(word.strip())
    return clean


def read_words(path: str | Path) -> list[str]:
    """Read a word list file: one word per line; blank lines and ``#`` comments skipped.

    >>> read_words("verbs.txt")                                 # doctest: +SKIP
    ['translate', 'explain']
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read word list {path}: {error}") from None
    words = [line.split("#", 1)[0].strip() for line in lines]
    return validate_words([w for w in words if w], source=str(path))
