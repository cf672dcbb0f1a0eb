"""The tensors of a GGUF file, one at a time, as transformers loads them: the tensor source
of a :class:`~mechit.arch.stream.StreamedModel` opened on a ``.gguf`` file.

transformers loads a GGUF file of the families mechit reads (``load_gguf_checkpoint`` in
``transformers/modeling_gguf_pytorch_utils.py``) by dequantising each tensor to float32 with
gguf's own ``dequantize``, then undoing what llama.cpp's converter did to it: files whose
``general.architecture`` is "llama" get the rows of W_Q and W_K reverse-permuted per head
(``LlamaTensorProcessor``: the converter interleaved the rotary halves), Gemma 2/3 files
get 1 subtracted from every norm weight (``Gemma2TensorProcessor``: stored as ``1 + w``),
in float32 numpy, before the copy into torch. A missing ``output.weight`` means tied
embeddings. :class:`GGUFTensors` does the same steps, in the same order and precision, to one
tensor when it is read, so a streamed GGUF model's weights equal the loaded model's bit for
bit. Which names and which steps apply is the family table's
(:attr:`~mechit.arch.families.Family.gguf_tensors`,
:attr:`~mechit.arch.families.Family.gguf_unpermute_qk`,
:attr:`~mechit.arch.families.Family.gguf_norms_plus_one`).

>>> unpermute_rows(np.arange(8.0)[:, None], heads=2)[:, 0].tolist()   # (h, d, 2) -> (h, 2, d)
[0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch
from einops import rearrange
import gguf

from mechit.arch.families import Family
from mechit.errors import SpecError, first_line

if TYPE_CHECKING:
    from torch import Tensor

NORMS = ("ln_final", "ln1", "ln2", "ln1_post", "ln2_post", "q_norm", "k_norm")  # TransformerLens names


def unpermute_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """The rows of a GGUF W_Q or W_K ``[heads * d_head, d_model]`` back in Hugging Face order:
    per head, row ``(d, half)`` goes to ``(half, d)`` (transformers'
    ``LlamaTensorProcessor._reverse_permute_weights``; ``heads`` is the KV head count for W_K).

    >>> unpermute_rows(np.array([[0.0], [1.0], [2.0], [3.0]]), heads=1)[:, 0].tolist()
    [0.0, 2.0, 1.0, 3.0]
    """
    return rearrange(weight, "(h d half) m -> (h half d) m", h=heads, half=2)


class GGUFTensors:
    """The tensors of one GGUF file, read lazily: the header and tensor table are read now
    (gguf's ``GGUFReader``), each tensor's bytes when :meth:`read` asks, through a memory map
    of that tensor alone that is closed again once the tensor is copied out.

    Args:
        path: the ``.gguf`` file.
        fam: the family row of the file's architecture (names and processing steps).
        n_layers, n_heads, n_key_value_heads: the model's shape (the Q/K permutation is per head).

    >>> from mechit.arch.families import FAMILIES
    >>> GGUFTensors("missing.gguf", FAMILIES["LlamaForCausalLM"], 1, 1, 1)
    Traceback (most recent call last):
    mechit.errors.SpecError: cannot read GGUF file missing.gguf: FileNotFoundError: [Errno 2] No such file or directory: 'missing.gguf'
    """

    def __init__(self, path: "str | Path", fam: Family, n_layers: int, n_heads: int, n_key_value_heads: int):
        self.path = Path(path)
        try:
            reader = gguf.GGUFReader(self.path, "r")
        except Exception as error:  # gguf raises ValueError, struct errors, OSError...
            raise SpecError(f"cannot read GGUF file {path}: {type(error).__name__}: {first_line(error)}") from error
        # name -> (byte offset, stored item dtype, stored shape (numpy order; bytes for quantised rows), ggml type)
        self._table = {t.name: (t.data_offset, t.data.dtype, t.data.shape, t.tensor_type) for t in reader.tensors}
        del reader  # its memory map goes with it: reads map one tensor each
        names = fam.gguf_tensors or {}
        self._heads: dict[str, int] = {}  # W_Q / W_K keys -> heads whose rows are reverse-permuted
        self._plus_one: set[str] = set()  # norm keys stored as 1 + w
        for layer in range(n_layers):
            if fam.gguf_unpermute_qk:
                self._heads[names["W_Q"].format(layer=layer)] = n_heads
                self._heads[names["W_K"].format(layer=layer)] = n_key_value_heads
            if fam.gguf_norms_plus_one:
                self._plus_one |= {names[n].format(layer=layer) for n in NORMS if n in names}

    def names(self, fam: Family) -> "Mapping[str, str] | None":
        return fam.gguf_tensors

    def keys(self):
        return self._table.keys()

    def read(self, key: str, device: torch.device) -> "Tensor":
        """One tensor, dequantised to float32 and processed as transformers does, on ``device``.

        >>> from mechit.arch.families import FAMILIES
        >>> tensors = GGUFTensors(smollm2_path, FAMILIES["LlamaForCausalLM"], 30, 9, 3)   # doctest: +SKIP
        >>> tensors.read("blk.0.attn_k.weight", torch.device("cpu")).shape                 # doctest: +SKIP
        torch.Size([192, 576])
        """
        offset, item, shape, kind = self._table[key]
        stored = np.memmap(self.path, dtype=item, mode="r", offset=offset, shape=shape)
        weights = gguf.dequantize(stored, kind)  # float32 [out, in]; a view of the map for F32 tensors
        if key in self._heads:
            weights = unpermute_rows(weights, self._heads[key])
        if key in self._plus_one:
            weights = weights - 1
        tensor = torch.from_numpy(np.copy(weights))  # as transformers: the copy leaves the map behind
        del stored, weights
        return tensor.to(device)
