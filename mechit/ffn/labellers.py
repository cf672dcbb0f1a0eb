"""Labellers backed by a language model, the label cache, and labelling a concept frame.

Every labeller has one interface, ``labeller.label(words, question, seed) -> str``
(:class:`mechit.ffn.labels.Labeller`):

- :class:`~mechit.ffn.embedding_labeller.EmbeddingLabeller` (the default: offline,
  deterministic, MiniLM similarity plus the lexicon's rules);
- :class:`~mechit.ffn.lexicon.LexiconLabeller` (offline, deterministic; a baseline);
- :class:`EndpointLabeller`: any OpenAI-compatible ``/chat/completions`` server (stdlib
  ``urllib``), with an on-disk cache, retries, timeouts and seeds;
- :class:`LocalModelLabeller`: greedy generation by any instruction model mechit loads.

:func:`make_labeller` picks one by name; :func:`label_concepts` labels every concept of a
concept frame, once per labelling seed.

**Seeds.** The paper's seeds are sampling seeds of an LLM: the LLM labellers send the seed
(and shuffle the word order by it). A deterministic labeller (``deterministic = True``)
gives the same answer for every seed, so :func:`label_concepts` gives it, for seed s > 0, a
bootstrap resample of each concept's word list (:func:`mechit.ffn.labels.resample_words`):
such seeds measure how stable the labeller's answer is to the words of a concept, not
sampling noise of a model.

>>> make_labeller("lexicon").label(["def", "return", "self", "{", "x_val"], "task")
'coding'
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
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from mechit.errors import MechitError
from mechit.ffn.embedding_labeller import EmbeddingLabeller
from mechit.ffn.labels import (
    Labeller,
    LabellerError,
    check_question,
    concept_word_lists,
    resample_words,
)
from mechit.ffn.lexicon import LexiconLabeller, organism_second_language
from mechit.models.loading import load_model

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
    check_question(question)
    ws = list(words)
    if seed:
        random.Random(seed).shuffle(ws)
    return PROMPTS[question].format(words=", ".join(ws))


def parse_label(reply: str, labels: Sequence[str]) -> str | None:
    """The label a free-text reply names, or None when it names none or several.

    Accepts a bare word ("Math."), a JSON object with a "label" field, or a sentence that
    names exactly one label.

    >>> parse_label("  Math.", ["math", "coding"]), parse_label('{"label": "coding"}', ["math", "coding"])
    ('math', 'coding')
    >>> parse_label("math or coding", ["math", "coding"]) is None
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

    >>> lab = EndpointLabeller("http://127.0.0.1:8000/v1", "qwen2.5-7b-instruct", cache="labels-cache.jsonl")
    >>> lab.url, lab.name
    ('http://127.0.0.1:8000/v1/chat/completions', 'endpoint:qwen2.5-7b-instruct')
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
        labels = check_question(question)
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

    >>> lab = LocalModelLabeller(model)          # the organism: too small to answer in labels
    >>> lab.label(["def", "return", "self"], "task")
    Traceback (most recent call last):
    mechit.ffn.labels.LabellerError: local:... replied ..., which is not one of writing, math, coding, translation, none
    >>> lab = LocalModelLabeller("HuggingFaceTB/SmolLM2-1.7B-Instruct")   # doctest: +SKIP
    >>> lab.label(["def", "return", "self"], "task")                      # doctest: +SKIP
    'coding'
    """

    def __init__(self, model: Any, *, max_new_tokens: int = 8, cache: str | Path | None = None,
                 trust_remote_code: bool = False, **loading):
        if isinstance(model, (str, Path)):
            self.spec = str(model)
            model = load_model(model, trust_remote_code=trust_remote_code, **loading)
        else:
            self.spec = str(getattr(getattr(model, "cfg", None), "model_name", type(model).__name__))
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.cache = LabelCache(cache)
        self.name = f"local:{self.spec}"

    def _generate(self, prompt: str) -> str:
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
        labels = check_question(question)
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
    seed and question). The default labeller is :class:`EmbeddingLabeller`; a deterministic
    labeller labels, for seed s > 0, a bootstrap resample of each word list (see the module).
    ``max_components`` keeps the first components per layer (the paper
    labelled 300). If the labeller fails, the labels finished so far stay in its cache and
    the error says how many there are: run again to resume.

    >>> concepts = pd.DataFrame({"layer": 0, "component": 0, "rank": [0, 1, 2],
    ...                          "word": ["1", "2", "plus"]})
    >>> label_concepts(concepts, progress=False)[["question", "label"]].values.tolist()
    [['task', 'math'], ['level', 'semantics']]
    """
    labeller = labeller or EmbeddingLabeller()
    resample = getattr(labeller, "deterministic", False)
    for q in questions:
        check_question(q)
    lists = concept_word_lists(concepts, max_components=max_components)
    keys = [c for c in lists.columns if c != "words"]
    jobs = [(row, seed, q) for row in lists.itertuples(index=False) for seed in seeds for q in questions]
    rows = []
    try:
        for row, seed, q in tqdm(jobs, desc=f"labels ({labeller.name})", unit="label", disable=not progress):
            record = {k: getattr(row, k) for k in keys}
            words = resample_words(row.words, seed, key=(row.layer, row.component)) if resample else row.words
            rows.append({**record, "seed": seed, "question": q, "label": labeller.label(words, q, seed)})
    except LabellerError as err:
        cache = getattr(labeller, "cache", None)
        where = f" (cached in {cache.path})" if cache is not None and cache.path else ""
        raise LabellerError(f"{err}; {len(rows)} of {len(jobs)} labels were finished{where}: run again to resume") from err
    return pd.DataFrame(rows, columns=keys + ["seed", "question", "label"])


def make_labeller(kind: str = "embedding", **options: Any) -> Labeller:
    """A labeller by name: "embedding" (the default), "lexicon", "endpoint" (url=, model=, ...)
    or "local" (model=, ...).

    The offline labellers count no word as foreign unless told: ``foreign_words=`` a word
    list, or ``"organism"`` for the organism's second language (``mechit compare`` sets it
    for the organism pair).

    >>> make_labeller().name, make_labeller("lexicon", foreign_words="organism").label(["kima", "vor"], "task")
    ('embedding', 'translation')
    """
    if options.get("foreign_words") == "organism":
        options["foreign_words"] = organism_second_language()
    if kind == "embedding":
        return EmbeddingLabeller(**options)
    if kind == "lexicon":
        return LexiconLabeller(**options)
    if kind == "endpoint":
        return EndpointLabeller(**options)
    if kind == "local":
        return LocalModelLabeller(**options)
    raise MechitError(f"unknown labeller {kind!r}: use embedding, lexicon, endpoint or local")
