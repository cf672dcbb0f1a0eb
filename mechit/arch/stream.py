"""A model whose weights stay on disk: what the weight-only analyses (head pairs, neuron
tokens, FFN concepts, the rotation) read of a model, for checkpoints larger than memory.

A :class:`StreamedModel` has a TransformerLens-like ``cfg``, a ``tokenizer`` and raw weights
in TransformerLens layout (``W_Q`` [H, d, dh], ``W_out`` [d_mlp, d], ...), read one tensor
at a time from safetensors files under the Hugging Face names of the family table
(:attr:`mechit.arch.families.Family.tensors`). The views of :mod:`mechit.arch.weights` fold
the norm scales into them exactly as they do for a loaded bridge, so every analysis runs
unchanged and gives the same tables. Each read opens the file, copies one tensor out of
the memory map and closes it, so the pages it touched leave the process at once: resident
are the embeddings, the final norm scale and the layer being analysed.
:func:`mechit.models.open_streamed` builds one from a model spec.

>>> from mechit.models import open_streamed
>>> streamed = open_streamed("organism-tuned")
>>> streamed.weight("W_Q", 0).shape, streamed.cfg.n_key_value_heads   # (H, d_model, d_head)
(torch.Size([8, 160, 20]), 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import einops
import torch
from safetensors import safe_open

from mechit.arch.families import family
from mechit.errors import InputError, SpecError

if TYPE_CHECKING:
    from jaxtyping import Float
    from torch import Tensor

MODEL_TENSORS = ("W_E", "W_U", "ln_final")  # read once and kept: every analysis reads them


@dataclass(frozen=True)
class StreamedConfig:
    """The ``cfg`` fields the weight views and analyses read (TransformerLens names).

    ``dtype`` is the dtype weights are read in (by default the checkpoint's own; the views
    upcast to float32);
    ``layer_norm_folding`` is always False: the stored weights are raw.
    """

    architecture: str
    n_layers: int
    n_heads: int
    n_key_value_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    gated_mlp: bool
    dtype: torch.dtype
    device: torch.device = torch.device("cpu")
    model_name: str = ""
    layer_norm_folding: bool = False


class StreamedModel:
    """Raw weights of a safetensors checkpoint, read lazily in TransformerLens layout.

    Args:
        files: the checkpoint's ``*.safetensors`` files (one or several shards).
        cfg: the model's shape (:class:`StreamedConfig`); its architecture must have a
            ``tensors`` row in the family table.
        tokenizer: the model's Hugging Face tokenizer.
        spec: the model spec it was opened from (``mechit_spec``, as on a loaded model).

    >>> from mechit.models import open_streamed
    >>> streamed = open_streamed("organism-tuned")
    >>> torch.equal(streamed.weight("W_out", 2), model.blocks[2].mlp.W_out)
    True
    """

    def __init__(self, files: Sequence[Path], cfg: StreamedConfig, tokenizer: Any, *, spec: str = ""):
        self.cfg, self.tokenizer, self.mechit_spec = cfg, tokenizer, spec
        names = family(self).tensors
        if names is None:
            raise SpecError(f"model {spec!r}: streaming is not available for {cfg.architecture} "
                            "(the family table has no tensor names for it); load the model instead")
        self._names = names
        self._where: dict[str, Path] = {}  # HF tensor name -> file
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                self._where.update(dict.fromkeys(f.keys(), Path(file)))
        self._resident: dict[str, Tensor] = {}

    def __repr__(self) -> str:
        return f"StreamedModel({self.mechit_spec!r}, {self.cfg.architecture}, {self.cfg.n_layers} layers)"

    def has(self, name: str) -> bool:
        """Whether the checkpoint stores weight ``name`` (e.g. "W_gate"; "W_U" is absent when tied).

        >>> from mechit.models import open_streamed
        >>> open_streamed("organism-tuned").has("W_gate")
        True
        """
        template = self._names.get(name)
        return template is not None and template.format(layer=0) in self._where

    def weight(self, name: str, layer: int | None = None) -> "Float[Tensor, '...']":
        """One raw (unfolded) weight in TransformerLens layout and the checkpoint's dtype, on
        ``cfg.device``: ``W_E``, ``W_U``, ``ln_final`` (``layer`` None; kept after the first
        read), or a layer's ``W_Q``/``W_K``/``W_V`` [H(kv), d, dh], ``W_O`` [H, dh, d],
        ``W_in``/``W_gate`` [d, d_mlp], ``W_out`` [d_mlp, d], norm weights [d] or [dh].

        >>> from mechit.models import open_streamed
        >>> streamed = open_streamed("organism-tuned")
        >>> streamed.weight("W_O", 1).shape, streamed.weight("W_U").shape
        (torch.Size([8, 20, 160]), torch.Size([160, 2032]))
        """
        if layer is None:
            if name not in self._resident:
                self._resident[name] = self._model_tensor(name)
            return self._resident[name]
        if not 0 <= layer < self.cfg.n_layers:
            raise InputError(f"layer {layer} out of range: the model has {self.cfg.n_layers} layers")
        raw = self._read(name, layer)
        heads = self.cfg.n_key_value_heads if name in ("W_K", "W_V") else self.cfg.n_heads
        if name in ("W_Q", "W_K", "W_V"):  # nn.Linear [H * dh, d], split as the bridge does
            return einops.rearrange(raw, "(n_heads d_head) d_model -> n_heads d_model d_head", n_heads=heads)
        if name == "W_O":  # [d, H * dh]
            return einops.rearrange(raw.T, "(n_heads d_head) d_model -> n_heads d_head d_model", n_heads=heads)
        if name in ("W_in", "W_gate", "W_out"):
            return raw.T
        return raw

    def _model_tensor(self, name: str) -> "Tensor":
        if name == "W_U":
            return self._read("W_U").T if self.has("W_U") else self.weight("W_E").T  # tied: the same tensor
        return self._read(name)

    def _read(self, name: str, layer: int | None = None) -> "Tensor":
        template = self._names.get(name)
        key = None if template is None else template.format(layer=layer)
        if key not in self._where:
            raise SpecError(f"model {self.mechit_spec!r}: the checkpoint has no tensor "
                            f"{key or name!r} ({self.cfg.architecture} {name})")
        with safe_open(str(self._where[key]), framework="pt", device=str(self.cfg.device)) as f:
            return f.get_tensor(key).to(self.cfg.dtype)  # a no-op when read in the stored dtype
