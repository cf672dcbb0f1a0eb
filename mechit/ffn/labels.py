"""Concept labels: which user task a concept suits and which linguistic level it sits at.

A *concept* is the word list of one principal component of an FFN layer
(:func:`mechit.ffn_concepts`). PAPER §3.3: the authors had an LLM label every concept
with a **task** (writing, math, coding, translation, none) and a **level** (phonology,
morphology, syntax, semantics), five labelling seeds, and compared label proportions per
layer group (``layer // 4``) between the two models (their Table 5 and Figure 3).

Three labellers share one interface, ``labeller.label(words, question, seed) -> str``:

- :class:`LexiconLabeller` (default, offline, deterministic): lexicons and word features.
- :class:`EndpointLabeller`: any OpenAI-compatible ``/chat/completions`` server (stdlib
  ``urllib``), with an on-disk cache, retries, timeouts and seeds.
- :class:`LocalModelLabeller`: greedy generation by any instruction model mechit loads.

:func:`label_concepts` labels a concept frame, :func:`label_proportions` gives the
per-layer-group proportions (Figure 3) and :func:`label_table` the base-vs-tuned table
with a Welch t-test across seeds (Table 5).

>>> LexiconLabeller().label(["1", "2", "+", "sum", "7"], "task")
'math'
>>> LexiconLabeller().label(["the", "of", "and", "to", "a"], "level")
'syntax'
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import socket
import time
import unicodedata
import urllib.error
import urllib.request
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mechit.errors import MechitError

TASK_LABELS = ("writing", "math", "coding", "translation", "none")
LEVEL_LABELS = ("phonology", "morphology", "syntax", "semantics")
QUESTIONS = {"task": TASK_LABELS, "level": LEVEL_LABELS}


class LabellerError(MechitError):
    """A labeller failed: endpoint unreachable, bad replies after retries, reply not a label."""


def _check_question(question: str) -> tuple[str, ...]:
    if question not in QUESTIONS:
        raise MechitError(f"unknown question {question!r}: use one of {sorted(QUESTIONS)}")
    return QUESTIONS[question]


class Labeller(Protocol):
    """What every labeller provides."""

    name: str

    def label(self, words: Sequence[str], question: str, seed: int = 0) -> str:
        """One label from ``QUESTIONS[question]`` for a concept's word list."""


# ---------------------------------------------------------------------------- (a) lexicon

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
    """The organism's toy second language (Zel) words, or an empty set without the organism."""
    try:
        from mechit.organism import world
    except ImportError:
        return frozenset()
    return frozenset(getattr(world, "ZEL", {}).values())


def _is_foreign_script(word: str) -> bool:
    """A letter outside ASCII (accented Latin, Cyrillic, CJK, ...)."""
    return any(ord(c) > 127 and unicodedata.category(c).startswith("L") for c in word)


class LexiconLabeller:
    """Offline, deterministic labels from lexicons and word features (the default).

    **Task**: the share of words with each feature; a label wins when its share reaches its
    threshold (the largest share-to-threshold ratio wins; else "none"):

    - math (0.15): digits, number words, math terms, operator symbols (number words are
      rare in unrelated concepts: on SmolLM2 the 99th percentile share is 0.10);
    - coding (0.3): programming keywords, code symbols, camelCase, snake_case, dotted names, tags;
    - translation (0.3): letters outside ASCII, frequent non-English function words, and the
      organism's second language (``foreign_words``, Zel by default);
    - writing (0.2): genre, narrative, style, emotion and discourse words.

    **Level**, in this order: syntax if ≥ 40 % are function words or punctuation;
    morphology if ≥ 40 % share an affix or are inflected forms (lemminflect); phonology if
    ≥ 40 % share a 2-letter onset or 2-letter ending (words without a listed affix), or are
    fragments of ≤ 2 letters; else semantics.

    Known weaknesses: lexicons are English-centred and finite (a math concept of rare
    terms is missed); "writing" is a small word list, so most plain-English concepts fall
    to "none", whereas an LLM often calls them writing; shared onsets/rimes are a
    spelling proxy for sound; a topic cluster ("cat dog fox") is always semantics. Seeds do
    not change its answers, so t-tests across seeds are undefined (NaN).

    >>> LexiconLabeller().label(["def", "return", "self", "{", "x_val"], "task")
    'coding'
    >>> LexiconLabeller(foreign_words={"kima"}).label(["kima", "kima", "der", "cat"], "task")
    'translation'
    """

    name = "lexicon"
    THRESHOLDS = {"math": 0.15, "coding": 0.3, "translation": 0.3, "writing": 0.2}
    LEVEL_THRESHOLD = 0.4

    def __init__(self, foreign_words: Iterable[str] | None = None):
        words = organism_second_language() if foreign_words is None else foreign_words
        self.foreign_words = frozenset(w.lower() for w in words)

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
        from lemminflect import getAllLemmas

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
        _check_question(question)
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


# ---------------------------------------------------------------------------- prompts

PROMPTS = {
    "task": (
        "Below is a list of words that one internal direction of a language model's "
        "feed-forward layer is tied to.\n\nWords: {words}\n\n"
        "If this group of words stands for a piece of knowledge, which kind of user request "
        "would it help with most? Options:\n"
        "- writing: composing or editing prose, stories, letters, style or tone\n"
        "- math: numbers, arithmetic, quantities, mathematical reasoning\n"
        "- coding: programming languages, code syntax, software\n"
        "- translation: words of a language other than English, or moving between languages\n"
        "- none: none of the above, or no clear pattern\n\n"
        "Reply with exactly one word from: writing, math, coding, translation, none."
    ),
    "level": (
        "Below is a list of words that one internal direction of a language model's "
        "feed-forward layer is tied to.\n\nWords: {words}\n\n"
        "At which linguistic level do these words mainly belong together? Options:\n"
        "- phonology: they share sounds or spelling patterns (rhymes, same beginnings, fragments)\n"
        "- morphology: they share word formation (the same prefix or suffix, inflections of a word)\n"
        "- syntax: they play the same grammatical role (function words, punctuation, word classes)\n"
        "- semantics: they share a meaning or a topic\n\n"
        "Reply with exactly one word from: phonology, morphology, syntax, semantics."
    ),
}


def build_prompt(words: Sequence[str], question: str, seed: int = 0) -> str:
    """The labelling prompt; ``seed`` shuffles the word order (seed 0 keeps it).

    >>> "Words: b, a" in build_prompt(["b", "a"], "task")
    True
    """
    _check_question(question)
    ws = list(words)
    if seed:
        random.Random(seed).shuffle(ws)
    return PROMPTS[question].format(words=", ".join(ws))


def parse_label(reply: str, labels: Sequence[str]) -> str | None:
    """The label a free-text reply names, or None when it names none or several.

    Accepts a bare word ("Math."), a JSON object with a "label" field, or a sentence that
    names exactly one label.

    >>> parse_label("  Math.", TASK_LABELS), parse_label('{"label": "coding"}', TASK_LABELS)
    ('math', 'coding')
    >>> parse_label("math or coding", TASK_LABELS) is None
    True
    """
    text = reply.strip()
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and isinstance(obj.get("label"), str):
            text = obj["label"]
    except ValueError:
        pass
    low = text.lower().strip().strip(".!\"'`*")
    if low in labels:
        return low
    found = {lab for lab in labels if re.search(rf"\b{lab}\b", low)}
    return found.pop() if len(found) == 1 else None


# ---------------------------------------------------------------------------- cache


class LabelCache:
    """Append-only JSON Lines cache ``{"key": ..., "label": ...}``, one line per finished label.

    Every label is flushed to disk as soon as it is known, so an interrupted run loses
    nothing; a torn last line is ignored when reading back.

    >>> import tempfile, pathlib
    >>> c = LabelCache(pathlib.Path(tempfile.mkdtemp()) / "labels.jsonl")
    >>> c.put("k", "math"); LabelCache(c.path).get("k")
    'math'
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, str] = {}
        if self.path is not None and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    self.entries[record["key"]] = record["label"]
                except (ValueError, KeyError, TypeError):
                    continue

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def put(self, key: str, label: str) -> None:
        self.entries[key] = label
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "label": label}) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def __len__(self) -> int:
        return len(self.entries)


def cache_key(*parts: Any) -> str:
    """A stable hash of the labeller identity, question, seed and prompt."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()[:32]


# ---------------------------------------------------------------------------- (b) endpoint


class EndpointLabeller:
    """Labels from an OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, OpenAI).

    ``url`` is the API base (``http://127.0.0.1:8000/v1``); requests go to
    ``{url}/chat/completions`` with ``model``, the prompt, ``temperature`` and the labelling
    ``seed`` (which also shuffles the word order). The API key comes from ``api_key`` or
    the ``api_key_env`` environment variable (sent as a Bearer token when set).

    Timeouts, HTTP 429/5xx, dropped connections, malformed bodies and replies outside the
    label set are retried ``retries`` times with exponential backoff, then raise
    :class:`LabellerError`; an unreachable server or an HTTP 4xx raise at once. Finished labels are appended to the
    ``cache`` file immediately, so a rerun resumes where a failure stopped.

    >>> lab = EndpointLabeller("http://127.0.0.1:8000/v1", "qwen2.5-7b-instruct",
    ...                        cache="labels-cache.jsonl")           # doctest: +SKIP
    >>> lab.label(["1", "2", "plus"], "task", seed=3)                 # doctest: +SKIP
    'math'
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        temperature: float = 0.7,
        max_tokens: int = 16,
        cache: str | Path | None = None,
    ):
        self.url = url.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.temperature, self.max_tokens = temperature, max_tokens
        self.cache = LabelCache(cache)
        self.name = f"endpoint:{model}"

    def _request(self, prompt: str, seed: int) -> str:
        """One HTTP round trip; returns the reply text (raises on transport problems)."""
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                "seed": seed,
            }
        ).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            payload = response.read().decode("utf-8")
        data = json.loads(payload)
        return data["choices"][0]["message"]["content"]

    def label(self, words: Sequence[str], question: str, seed: int = 0) -> str:
        """Ask the endpoint (or the cache) for one label."""
        labels = _check_question(question)
        prompt = build_prompt(words, question, seed)
        key = cache_key("endpoint", self.model, self.temperature, question, seed, prompt)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                reply = self._request(prompt, seed)
            except urllib.error.HTTPError as err:
                problem = f"HTTP {err.code} {err.reason}"
                if err.code == 429 or err.code >= 500:
                    continue
                raise LabellerError(f"endpoint {self.url} refused the request: {problem}") from err
            except (TimeoutError, socket.timeout):
                problem = f"no reply within {self.timeout:g} s"
                continue
            except urllib.error.URLError as err:
                if isinstance(err.reason, (TimeoutError, socket.timeout)):
                    problem = f"no reply within {self.timeout:g} s"
                    continue
                raise LabellerError(
                    f"cannot reach the labelling endpoint {self.url}: {err.reason}; check the URL "
                    "and that the server is running"
                ) from err
            except (ConnectionError, http.client.HTTPException) as err:
                problem = f"connection dropped ({type(err).__name__}: {err})"
                continue
            except (ValueError, KeyError, IndexError, TypeError) as err:
                problem = f"malformed reply ({type(err).__name__}: {err})"
                continue
            found = parse_label(str(reply), labels)
            if found is None:
                problem = f"reply {str(reply)[:80]!r} is not one of {', '.join(labels)}"
                continue
            self.cache.put(key, found)
            return found
        raise LabellerError(
            f"endpoint {self.url} gave no usable {question} label after {self.retries + 1} "
            f"attempts: {problem}"
        )


# ---------------------------------------------------------------------------- (c) local model


class LocalModelLabeller:
    """Labels by greedy generation from an instruction model that mechit can load.

    ``model`` is a loaded TransformerBridge or a spec for :func:`mechit.models.load_model`
    (loaded with ``trust_remote_code``, off unless the user asks). The prompt goes through
    the tokenizer's chat template when it has one. Greedy decoding is deterministic, so
    seeds differ only by the word order they shuffle. A reply outside the label set raises
    :class:`LabellerError` (small models often fail this: prefer a model of a few billion
    parameters, or the endpoint labeller).

    >>> lab = LocalModelLabeller("HuggingFaceTB/SmolLM2-1.7B-Instruct")   # doctest: +SKIP
    >>> lab.label(["def", "return", "self"], "task")                      # doctest: +SKIP
    'coding'
    """

    def __init__(self, model: Any, *, max_new_tokens: int = 8, cache: str | Path | None = None,
                 trust_remote_code: bool = False, **loading):
        if isinstance(model, (str, Path)):
            from mechit.models import load_model

            self.spec = str(model)
            model = load_model(model, trust_remote_code=trust_remote_code, **loading)
        else:
            self.spec = str(getattr(getattr(model, "cfg", None), "model_name", type(model).__name__))
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.cache = LabelCache(cache)
        self.name = f"local:{self.spec}"

    def _generate(self, prompt: str) -> str:
        import torch

        tok = self.model.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        else:
            ids = tok(prompt + "\nAnswer:", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      verbose=False, return_type="tokens")
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    def label(self, words: Sequence[str], question: str, seed: int = 0) -> str:
        """Generate (or read from the cache) one label."""
        labels = _check_question(question)
        prompt = build_prompt(words, question, seed)
        key = cache_key(self.name, question, seed, prompt)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        reply = self._generate(prompt)
        found = parse_label(reply, labels)
        if found is None:
            raise LabellerError(
                f"{self.name} replied {reply[:80]!r}, which is not one of {', '.join(labels)}"
            )
        self.cache.put(key, found)
        return found


# ---------------------------------------------------------------------------- labelling frames


def concept_word_lists(concepts: pd.DataFrame, *, max_components: int | None = None) -> pd.DataFrame:
    """One row per concept: [model,] layer, component, words (ordered by rank)."""
    keys = [c for c in ("model", "layer", "component") if c in concepts]
    frame = concepts
    if max_components is not None:
        frame = frame[frame["component"] < max_components]
    frame = frame.sort_values(keys + ["rank"])
    return frame.groupby(keys, sort=True)["word"].agg(list).rename("words").reset_index()


def label_concepts(
    concepts: pd.DataFrame,
    labeller: Labeller | None = None,
    *,
    seeds: Sequence[int] = (0,),
    questions: Sequence[str] = ("task", "level"),
    max_components: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Label every concept of an :func:`mechit.ffn_concepts` frame.

    Returns columns [model,] layer, component, seed, question, label (one row per concept,
    seed and question). ``max_components`` keeps the first components per layer (the paper
    labelled 300). If the labeller fails, the labels finished so far stay in its cache and
    the error says how many there are: run again to resume.

    >>> concepts = pd.DataFrame({"layer": 0, "component": 0, "rank": [0, 1, 2],
    ...                          "word": ["1", "2", "plus"]})
    >>> label_concepts(concepts, progress=False)[["question", "label"]].values.tolist()
    [['task', 'math'], ['level', 'semantics']]
    """
    labeller = labeller or LexiconLabeller()
    for q in questions:
        _check_question(q)
    lists = concept_word_lists(concepts, max_components=max_components)
    keys = [c for c in lists.columns if c != "words"]
    jobs = [(row, seed, q) for row in lists.itertuples(index=False) for seed in seeds for q in questions]
    rows = []
    try:
        for row, seed, q in tqdm(jobs, desc=f"labels ({labeller.name})", unit="label", disable=not progress):
            record = {k: getattr(row, k) for k in keys}
            rows.append({**record, "seed": seed, "question": q, "label": labeller.label(row.words, q, seed)})
    except LabellerError as err:
        cache = getattr(labeller, "cache", None)
        where = f" (cached in {cache.path})" if cache is not None and cache.path else ""
        raise LabellerError(f"{err}; {len(rows)} of {len(jobs)} labels were finished{where}: run again to resume") from err
    return pd.DataFrame(rows, columns=keys + ["seed", "question", "label"])


def _per_seed(labels: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Proportion of each label per (by..., seed, question), zeros included."""
    out = []
    for question, group in labels.groupby("question"):
        counts = pd.crosstab([group[c] for c in by + ["seed"]], group["label"], normalize="index")
        counts = counts.reindex(columns=list(QUESTIONS[question]), fill_value=0.0)
        long = counts.stack().rename("proportion").reset_index()
        long.insert(len(by) + 1, "question", question)
        out.append(long)
    return pd.concat(out, ignore_index=True)


def label_proportions(labels: pd.DataFrame, *, group_size: int = 4) -> pd.DataFrame:
    """Label proportions per [model,] layer group (``layer // group_size``), mean and std over seeds.

    Columns: [model,] layer_group, question, label, proportion, std, n_seeds. The paper's
    Figure 3 plots ``proportion`` per layer group for both models.

    >>> labels = pd.DataFrame({"layer": [0, 1, 4], "component": 0, "seed": 0,
    ...                        "question": "task", "label": ["math", "none", "math"]})
    >>> p = label_proportions(labels)
    >>> p[p.label == "math"][["layer_group", "proportion"]].values.tolist()
    [[0.0, 0.5], [1.0, 1.0]]
    """
    frame = labels.assign(layer_group=labels["layer"] // group_size)
    by = [c for c in ("model",) if c in frame] + ["layer_group"]
    per_seed = _per_seed(frame, by)
    stats = per_seed.groupby(by + ["question", "label"], sort=False)["proportion"]
    out = stats.agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"mean": "proportion", "count": "n_seeds"})


def _welch(tuned: np.ndarray, base: np.ndarray) -> tuple[float, float]:
    from scipy.stats import ttest_ind

    if min(len(base), len(tuned)) < 2:
        return np.nan, np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero variance on both sides: NaN, said in the docstring
        test = ttest_ind(tuned, base, equal_var=False)
    return float(test.statistic), float(test.pvalue)


def label_table(labels: pd.DataFrame, *, group_size: int | None = None) -> pd.DataFrame:
    """Base vs tuned label proportions, with a Welch t-test across seeds (the paper's Table 5).

    ``labels`` holds both models (a ``model`` column with "base" and "tuned"). Columns:
    [layer_group,] question, label, base, base_std, tuned, tuned_std, diff (tuned − base),
    t, p. Proportions pool all layers, or each ``layer // group_size`` group when
    ``group_size`` is given. With one seed, or labels identical across seeds, t and p are NaN.

    >>> labels = pd.DataFrame({"model": ["base", "tuned"] * 2, "layer": 0, "component": [0, 0, 1, 1],
    ...                        "seed": 0, "question": "task", "label": ["none", "math", "none", "math"]})
    >>> label_table(labels).query("label == 'math'")[["base", "tuned", "diff"]].values.tolist()
    [[0.0, 1.0, 1.0]]
    """
    if "model" not in labels or not {"base", "tuned"} <= set(labels["model"]):
        raise MechitError("label_table needs labels of both models: a 'model' column with 'base' and 'tuned'")
    frame = labels if group_size is None else labels.assign(layer_group=labels["layer"] // group_size)
    by = ["model"] + ([] if group_size is None else ["layer_group"])
    per_seed = _per_seed(frame, by)
    groups = [None] if group_size is None else sorted(per_seed["layer_group"].unique())
    rows = []
    for group in groups:
        sub = per_seed if group is None else per_seed[per_seed["layer_group"] == group]
        for question, labs in QUESTIONS.items():
            if question not in set(sub["question"]):
                continue
            for lab in labs:
                sel = sub[(sub["question"] == question) & (sub["label"] == lab)]
                b = sel[sel["model"] == "base"]["proportion"].to_numpy()
                t_ = sel[sel["model"] == "tuned"]["proportion"].to_numpy()
                stat, p = _welch(t_, b)
                row = {} if group is None else {"layer_group": int(group)}
                row.update(question=question, label=lab,
                           base=b.mean(), base_std=b.std(ddof=1) if len(b) > 1 else np.nan,
                           tuned=t_.mean(), tuned_std=t_.std(ddof=1) if len(t_) > 1 else np.nan,
                           diff=t_.mean() - b.mean(), t=stat, p=p)
                rows.append(row)
    return pd.DataFrame(rows)


def make_labeller(kind: str = "lexicon", **options: Any) -> Labeller:
    """A labeller by name: "lexicon", "endpoint" (url=, model=, ...) or "local" (model=, ...).

    >>> make_labeller("lexicon").name
    'lexicon'
    """
    if kind == "lexicon":
        return LexiconLabeller(**options)
    if kind == "endpoint":
        return EndpointLabeller(**options)
    if kind == "local":
        return LocalModelLabeller(**options)
    raise MechitError(f"unknown labeller {kind!r}: use lexicon, endpoint or local")
