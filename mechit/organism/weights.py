"""Where the shipped organism weights live, and loading them as Hugging Face objects.

``weights_dir()/base`` and ``weights_dir()/tuned`` are Hugging Face directories
(``config.json``, fp16 ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``);
``weights_dir()/organism.json`` records the training seed, config, losses and time.
:func:`mechit.models.load_model` resolves ``"organism-base"`` / ``"organism-tuned"`` to
:func:`model_dir`; this module only offers the plain Hugging Face view used for training
and evaluation.

>>> model_dir("tuned").name
'tuned'
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from mechit.errors import SpecError

NAMES = ("base", "tuned")


def weights_dir() -> Path:
    """The directory of the shipped pair inside the package.

    >>> weights_dir().name
    'weights'
    """
    return Path(__file__).parent / "weights"


def model_dir(name: str, root: str | Path | None = None) -> Path:
    """The Hugging Face directory of ``name`` ("base" or "tuned") under ``root``.

    >>> model_dir("base", "/tmp/run").as_posix()
    '/tmp/run/base'
    """
    if name not in NAMES:
        raise SpecError(f"unknown organism model {name!r}; use 'base' or 'tuned'")
    return Path(root if root is not None else weights_dir()) / name


def load(name: str, root: str | Path | None = None) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Load ``name`` as an fp32 ``LlamaForCausalLM`` in eval mode, with its tokenizer.

    >>> model, tok = load("base")          # doctest: +SKIP
    >>> next(model.parameters()).dtype     # doctest: +SKIP
    torch.float32
    """
    path = model_dir(name, root)
    if not (path / "config.json").exists():
        raise SpecError(f"no organism weights in {path}; run `mechit organism train` first")
    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, PreTrainedTokenizerFast.from_pretrained(path)
