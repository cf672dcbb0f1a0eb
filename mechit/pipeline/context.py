"""What every stage of ``mechit compare`` sees: the options of a comparison and the run context.

>>> STAGES
('attribution', 'faithfulness', 'heads', 'ffn')
>>> Options().fingerprint()["n_words"]
26500
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from mechit.data.wordlists import PAPER_VOCABULARY
from mechit.models import ModelPair

STAGES = ("attribution", "faithfulness", "heads", "ffn")
SMALL_MODEL_PARAMETERS = 20_000_000


def sha256(text: str | bytes) -> str:
    """Hex SHA-256 of a text (UTF-8) or bytes.

    >>> sha256("")[:12]
    'e3b0c44298fc'
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


@dataclass
class Options:
    """Knobs of a comparison; the defaults keep the organism run within minutes on 2 cores.

    ``None`` means "choose from the model": ``n_components`` = min(300, d_model, d_mlp - 1),
    ``rotation_k`` = min(50, n_components), ``head_layer_group`` = max(1, n_layers // 4)
    (the paper's 8 for 32 layers; the verb shift is also reported over all layers).
    ``ffn_layer_group`` is the paper's 4 layers per group; ``label_seeds`` the paper's 5
    labelling seeds (for the offline labeller: bootstrap resamples of each word list); ``labeller``
    the offline concept labeller, "embedding" (MiniLM and lexicon rules) or "lexicon" (no MiniLM).
    ``words`` is the word list for heads and FFN (default :func:`mechit.vocab.default_words`:
    the organism's vocabulary and the verbs its tokenizer knows for the organism, else
    ``n_words`` words holding the instruction and general verbs, the paper's 26,500 by
    default). ``head_top_k`` None: K in the paper's ratio to the word list's length
    (:func:`mechit.vocab.default_top_k`; 100 of 26,500). ``similarity`` None: one source
    for both models (MiniLM when installed, else the base model's embeddings). ``threads``: torch threads
    during the run; None = 1 for models under :data:`SMALL_MODEL_PARAMETERS` parameters
    (their matrices are too small to gain from threads, and extra threads on a busy
    machine slow them down many times), else torch's default. ``ablation``: how the
    faithfulness stage ablates a part of the prompt ("remove", "mask" or "mean", see
    :func:`mechit.attribution.ablation.ablate`).
    """

    max_new_tokens: int = 32
    response: str = "generate"
    n_words: int = PAPER_VOCABULARY
    words: Sequence[str] | None = None
    head_top_k: int | None = None
    head_method: str = "qk-dims"
    similarity: str | None = None
    n_components: int | None = None
    concept_top_k: int = 50
    rotation_k: int | None = None
    head_layer_group: int | None = None
    ffn_layer_group: int = 4
    label_seeds: int = 5
    labeller: str = "embedding"
    n_attention_heads: int = 4
    ablation: str = "remove"
    seed: int = 0
    threads: int | None = None

    def fingerprint(self) -> dict:
        """The options that change results, as JSON-able values (word lists by hash)."""
        values = asdict(self)
        values.pop("threads")
        words = values.pop("words")
        values["words_sha256"] = None if words is None else sha256("\n".join(words))
        return values


@dataclass
class Context:
    """What every stage sees: the loaded pair, the prompt records, options and DIR.

    Stages reach the two models through ``pair.run(analysis, ...)`` (:meth:`ModelPair.run`).
    ``tables`` holds the tables of the stages already run or read back (``{name: frame}``):
    a stage that builds on another's tables reads them there.
    """

    pair: ModelPair
    records: list[dict]
    options: Options
    out: Path
    organism: bool
    tick: Callable[[str], None] = field(default=lambda label: None)
    advance: Callable[[float], None] = field(default=lambda units: None)
    progress: bool = True
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def run_threads(n_parameters: int, threads: int | None, default: int) -> int:
    """Torch threads for a run: ``threads`` if given, 1 for a model of fewer than
    :data:`SMALL_MODEL_PARAMETERS` parameters, else ``default``.

    >>> run_threads(2_000_000, None, default=8), run_threads(2_000_000, 3, default=8)
    (1, 3)
    """
    if threads is not None:
        return threads
    return 1 if n_parameters < SMALL_MODEL_PARAMETERS else default
