"""An offline concept labeller: the lexicon's precise rules plus sentence-embedding similarity.

:class:`EmbeddingLabeller` is deterministic and needs no network. It reads word vectors
from any source with ``vectors(texts) -> Tensor`` (default :class:`mechit.data.minilm.MiniLMSimilarity`,
all-MiniLM-L6-v2 from a pip package) and splits words with that model's tokenizer. It is
the default labeller of ``mechit ffn-labels`` and ``mechit compare``.

**Task.** Each word gets at most one task: the lexicon's feature when one fires (digits,
code symbols, letters outside ASCII, lexicon words), else the task whose written
descriptions (``TASK_DESCRIPTIONS``) its vector is nearest to, if that cosine reaches
``word_similarity``; else, when the tokenizer splits it into 3 or more pieces (a word the
English vocabulary does not hold), translation. The concept's label is the task with the
largest share of words if that share reaches ``task_share``, else "none".

**Level.** From the lexicon's shares of function words, inflected/affixed words and shared
onsets/rimes, and the concept's mean pairwise cosine (topical coherence), in this order:
syntax, morphology, semantics if coherent, phonology, else semantics.

The thresholds were chosen by a grid search on the check set's calibration split
(:mod:`mechit.ffn.checkset`) and are measured on its test split (docs/ffn.md). The
organism's second language reaches it only through ``foreign_words``.

>>> labeller = EmbeddingLabeller()
>>> labeller.label(["garder", "séjour", "attendre", "fais", "devient"], "task")
'translation'
>>> labeller.label(["dog", "cat", "horse", "tiger", "rabbit"], "level")
'semantics'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from mechit.data.minilm import MiniLMSimilarity
from mechit.errors import MechitError
from mechit.ffn.labels import QUESTIONS
from mechit.ffn.lexicon import LexiconLabeller

TASK_DESCRIPTIONS = {
    "math": ("numbers, arithmetic and mathematics", "a number", "an equation or a mathematical term"),
    "coding": ("computer programming and source code", "a programming keyword or function name",
               "software code identifier"),
    "translation": ("a word in a foreign language, not English",
                    "French, German, Spanish, Italian, Russian, Chinese or Arabic word"),
    "writing": ("creative writing, literature, style and rhetoric", "a literary genre or rhetorical device",
                "poetry and prose"),
}
# Chosen on the calibration split of the check set (grid search, docs/ffn.md).
THRESHOLDS = {"word_similarity": 0.34, "task_share": 0.15, "foreign_pieces": 3,
              "syntax": 0.2, "morphology": 0.4, "phonology": 0.2, "coherence": 0.28}


class EmbeddingLabeller:
    """Task and level labels from lexicon features and MiniLM similarity (see the module).

    ``source.vectors(texts)`` gives one vector per text (default: MiniLM, vectors cached
    on disk); ``tokenize(word)`` gives the word's pieces in that model's vocabulary
    (default: ``source.tokenizer.tokenize``). ``foreign_words`` (default none) count as
    translation words, e.g. the organism's second language. Deterministic: ``seed`` is
    ignored (:func:`mechit.ffn.labellers.label_concepts` resamples the word lists instead).

    >>> EmbeddingLabeller().label(["def", "elif", "isinstance", "lambda"], "task")
    'coding'
    """

    name = "embedding"
    deterministic = True

    def __init__(self, source: Any = None, tokenize: Callable[[str], list[str]] | None = None, *,
                 foreign_words: Iterable[str] = (), thresholds: dict[str, float] | None = None):
        source = MiniLMSimilarity() if source is None else source
        self.source = source
        self.tokenize = source.tokenizer.tokenize if tokenize is None else tokenize
        self.lexicon = LexiconLabeller(foreign_words=foreign_words)
        self.thresholds = {**THRESHOLDS, **(thresholds or {})}
        self.tasks = list(TASK_DESCRIPTIONS)
        self._vectors: dict[str, Tensor] = {}
        self._prototypes = [self._unit(list(TASK_DESCRIPTIONS[t])) for t in self.tasks]

    def _unit(self, texts: list[str]) -> Float[Tensor, "n dim"]:
        return torch.nn.functional.normalize(self.source.vectors(texts).float(), dim=1)

    def word_vectors(self, words: Sequence[str]) -> Float[Tensor, "words dim"]:
        """Unit vectors of the words (each word embedded once per labeller)."""
        new = [w for w in dict.fromkeys(words) if w not in self._vectors]
        if new:
            self._vectors.update(zip(new, self._unit(new)))
        return torch.stack([self._vectors[w] for w in words])

    def word_tasks(self, words: Sequence[str]) -> list[str]:
        """The task of each word, or "none" (lexicon feature, then similarity, then pieces).

        >>> EmbeddingLabeller().word_tasks(["7", "novelist", "the"])
        ['math', 'writing', 'none']
        """
        sims = torch.stack([(self.word_vectors(words) @ p.T).max(dim=1).values for p in self._prototypes], 1)
        out = []
        for word, row in zip(words, sims):
            shares = self.lexicon.task_shares([word])
            fired = [t for t in self.tasks if shares[t] > 0]
            if fired:
                out.append(fired[0])
            elif float(row.max()) >= self.thresholds["word_similarity"]:
                out.append(self.tasks[int(row.argmax())])
            elif len(self.tokenize(word)) >= self.thresholds["foreign_pieces"]:
                out.append("translation")
            else:
                out.append("none")
        return out

    def coherence(self, words: Sequence[str]) -> float:
        """Mean cosine between the vectors of distinct words of the list (topical coherence)."""
        unique = list(dict.fromkeys(words))
        if len(unique) < 2:
            return 0.0
        x = self.word_vectors(unique)
        n = len(unique)
        return float(((x @ x.T).sum() - n) / (n * (n - 1)))

    def label(self, words: Sequence[str], question: str, seed: int = 0) -> str:
        """The task or level label of a word list (deterministic: ``seed`` is ignored)."""
        if question not in QUESTIONS:
            raise MechitError(f"unknown question {question!r}: use one of {sorted(QUESTIONS)}")
        words = [w.strip() for w in words if w.strip()]
        if not words:
            return "none" if question == "task" else "semantics"
        t = self.thresholds
        if question == "task":
            tasks = np.array(self.word_tasks(words))
            shares = {task: float(np.mean(tasks == task)) for task in self.tasks}
            best = max(self.tasks, key=lambda task: shares[task])
            return best if shares[best] >= t["task_share"] else "none"
        shares = self.lexicon.level_shares(words)
        if shares["syntax"] >= t["syntax"]:
            return "syntax"
        if shares["morphology"] >= t["morphology"]:
            return "morphology"
        if self.coherence(words) < t["coherence"] and shares["phonology"] >= t["phonology"]:
            return "phonology"
        return "semantics"
