"""A model whose weights stay on disk: what the weight-only analyses (head pairs, neuron
tokens, FFN concepts, the rotation) read of a model, for checkpoints larger than memory.

A :class:`StreamedModel` has a TransformerLens-like ``cfg``, a ``tokenizer`` and raw weights
in TransformerLens layout (``W_Q`` [H, d, dh], ``W_out`` [d_mlp, d], ...), read one tensor
at a time from a tensor source: :class:`SafetensorsFiles` (safetensors files, under the
Hugging Face names of the family table, :attr:`mechit.arch.families.Family.tensors`) or
:class:`mechit.arch.gguf_tensors.GGUFTensors` (a GGUF file, under
:attr:`~mechit.arch.families.Family.gguf_tensors`, dequantised and processed as transformers
does when it loads the file). The views of :mod:`mechit.arch.weights` fold the norm scales
into them exactly as they do for a loaded bridge, so every analysis runs unchanged and gives
the same tables. Each read maps the file, copies one tensor out and unmaps it, so the pages
it touched leave the process at once: resident are the embeddings, the final norm scale and
the layer being analysed. :func:`mechit.models.open_streamed` builds one from a model spec.

>>> from mechit.models import open_streamed
>>> streamed = open_streamed("organism-tuned")
>>> streamed.weight("W_Q", 0).shape, streamed.cfg.n_key_value_heads   # (H, d_model, d_head)
(torch.Size([8, 160, 20]), 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

import einops
import torch
from safetensors import safe_open

from mechit.arch.families import Family, family
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


class TensorSource(Protocol):
    """Where a :class:`StreamedModel` reads its tensors: a name table, the stored names, one read."""

    def names(self, fam: Family) -> "Mapping[str, str] | None":
        """The family's stored name of each TransformerLens weight (``{layer}`` slot per layer)."""
        ...

    def keys(self) -> "Sequence[str] | set[str]":
        """The names of the tensors stored."""
        ...

    def read(self, key: str, device: torch.device) -> "Tensor":
        """One stored tensor in Hugging Face layout (``nn.Linear`` weights ``[out, in]``) on ``device``."""
        ...


class SafetensorsFiles:
    """The tensors of a safetensors checkpoint (one file or several shards); only the headers
    are read here, each tensor when :meth:`read` asks for it.

    >>> from mechit.models import organism_dir
    >>> files = SafetensorsFiles(sorted(organism_dir("tuned").glob("*.safetensors")))
    >>> files.read("model.norm.weight", torch.device("cpu")).shape
    torch.Size([160])
    """

    def __init__(self, files: Sequence[Path]):
        self._where: dict[str, Path] = {}  # tensor name -> file
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                self._where.update(dict.fromkeys(f.keys(), Path(file)))

    def names(self, fam: Family) -> "Mapping[str, str] | None":
        return fam.tensors

    def keys(self):
        return self._where.keys()

    def read(self, key: str, device: torch.device) -> "Tensor":
        with safe_open(str(self._where[key]), framework="pt", device=str(device)) as f:
            return f.get_tensor(key)


class StreamedModel:
    """Raw weights of a checkpoint on disk, read lazily in TransformerLens layout.

    Args:
        source: where the tensors are (:class:`SafetensorsFiles`,
            :class:`mechit.arch.gguf_tensors.GGUFTensors`).
        cfg: the model's shape (:class:`StreamedConfig`); its architecture must have a
            name table for the source in the family table.
        tokenizer: the model's Hugging Face tokenizer.
        spec: the model spec it was opened from (``mechit_spec``, as on a loaded model).

    >>> from mechit.models import open_streamed
    >>> streamed = open_streamed("organism-tuned")
    >>> torch.equal(streamed.weight("W_out", 2), model.blocks[2].mlp.W_out)
    True
    """

    def __init__(self, source: TensorSource, cfg: StreamedConfig, tokenizer: Any, *, spec: str = ""):
        self.cfg, self.tokenizer, self.mechit_spec = cfg, tokenizer, spec
        fam = family(self)
        names = source.names(fam)
        if names is None:
            raise SpecError(f"model {spec!r}: streaming is not available for {cfg.architecture} "
                            f"({fam.not_streamed}); load the model instead")
        self._names, self._source = names, source
        self._stored = set(source.keys())
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
        return template is not None and template.format(layer=0) in self._stored

    def weight(self, name: str, layer: int | None = None) -> "Float[Tensor, '...']":
        """One raw (unfolded) weight in TransformerLens layout and the checkpoint's dtype, on
        ``cfg.device``: ``W_E``, ``W_U``, ``ln_final`` (``layer`` None; kept after the first
        read), or a layer's ``W_Q``/``W_K``/``W_V`` [H(kv), d, dh], ``W_O`` [H, dh, d],
        ``W_in``/``W_gate`` [d, d_mlp], ``W_out`` [d_mlp, d], norm weights [d] or [dh].

        >>> from mechit.models import open_streamed
        >>> streamed = open_streamed("organism-tuned")
        >>> streamed.weight("W_O", 1).shape, streamed.weight("W_U").shape
        (torch.Size([8, 20, 160]), torch.Size([160, 2048]))
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
        if key not in self._stored:
            raise SpecError(f"model {self.mechit_spec!r}: the checkpoint has no tensor "
                            f"{key or name!r} ({self.cfg.architecture} {name})")
        return self._source.read(key, self.cfg.device).to(self.cfg.dtype)  # a no-op when read in the stored dtype
