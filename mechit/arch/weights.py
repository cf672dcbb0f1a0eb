"""Architecture facts and folded weight views of a loaded TransformerBridge: the one place
that knows where each model family keeps its norm scales, so every analysis reads the
same weights (query/key, value/output, MLP in/out, embeddings) in TransformerLens layout.

>>> W_Q, W_K = qk_weights(model, 0)
>>> W_Q.shape                                   # (H, d_model, d_head)
torch.Size([8, 160, 20])
"""

from __future__ import annotations

import math
from operator import attrgetter
from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch

from mechit.arch.families import family
from mechit.arch.stream import StreamedModel
from mechit.errors import InputError
from mechit.runtime import compute_dtype

if TYPE_CHECKING:
    from jaxtyping import Float
    from torch import Tensor
    from transformer_lens.model_bridge import TransformerBridge


def n_kv_heads(model: "TransformerBridge") -> int:
    """Number of key/value heads (= n_heads without grouped-query attention).

    >>> n_kv_heads(smollm2)                                  # doctest: +SKIP
    3
    """
    return int(getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads)


def kv_head(model: "TransformerBridge", head: int) -> int:
    """The key/value head that query head ``head`` reads (GQA: head // (H / H_kv)).

    >>> kv_head(model_with_4_heads_2_kv, 3)                  # doctest: +SKIP
    1
    """
    return head // (model.cfg.n_heads // n_kv_heads(model))


def embed_scale(model: "TransformerBridge") -> float:
    """Factor between ``W_E[token]`` and the embedding output (``hook_embed``).

    Gemma: sqrt(d_model); others 1.0.

    >>> embed_scale(gemma_model) == gemma_model.cfg.d_model ** 0.5   # doctest: +SKIP
    True
    """
    return math.sqrt(model.cfg.d_model) if family(model).sqrt_d_model_embed else 1.0


def _compute(weight: "Tensor") -> "Tensor":
    """``weight`` detached, in :func:`mechit.runtime.compute_dtype` of its dtype: float32 for
    float32/bf16/fp16 weights (bit-identical for float32), float64 stays float64."""
    return weight.detach().to(compute_dtype(weight.dtype))


def _folded(model) -> bool:
    return bool(getattr(model.cfg, "layer_norm_folding", False))


# Where a loaded bridge keeps each raw weight (names as in Family.tensors): per layer
# under model.blocks[layer], else under the model.
_BRIDGE_WEIGHTS = {
    "W_Q": "attn.W_Q", "W_K": "attn.W_K", "W_V": "attn.W_V", "W_O": "attn.W_O",
    "W_in": "mlp.W_in", "W_gate": "mlp.W_gate", "W_out": "mlp.W_out",
    "ln1": "ln1.original_component.weight", "ln2": "ln2.original_component.weight",
    "ln1_post": "ln1_post.original_component.weight", "ln2_post": "ln2_post.original_component.weight",
    "q_norm": "attn.q_norm.original_component.weight", "k_norm": "attn.k_norm.original_component.weight",
    "W_E": "W_E", "W_U": "W_U", "ln_final": "ln_final.original_component.weight",
}


def _raw(model, name: str, layer: int | None = None) -> "Tensor":
    """One raw (unfolded) weight in TransformerLens layout, detached: a
    :class:`~mechit.arch.stream.StreamedModel` reads it from its checkpoint, a bridge
    from its modules."""
    if isinstance(model, StreamedModel):
        return model.weight(name, layer)
    if layer is not None:
        if not 0 <= layer < model.cfg.n_layers:
            raise InputError(f"layer {layer} out of range: the model has {model.cfg.n_layers} layers")
        return attrgetter(_BRIDGE_WEIGHTS[name])(model.blocks[layer]).detach()
    return attrgetter(_BRIDGE_WEIGHTS[name])(model).detach()


def _scale(model, weight: "Float[Tensor, 'd']") -> "Float[Tensor, 'd']":
    """Effective multiplicative scale of a norm weight (offset + weight), in the compute dtype."""
    weight = _compute(weight)
    if _folded(model):  # compatibility mode already folded it into the next weights
        return torch.ones_like(weight)
    return family(model).norm_offset + weight


def _repeat_kv(model, weight: "Float[Tensor, 'Hkv d dh']") -> "Float[Tensor, 'H d dh']":
    return weight.repeat_interleave(model.cfg.n_heads // weight.shape[0], dim=0)


def select_indices(name: str, chosen: int | Iterable[int] | None, n: int, *, from_end: bool = False) -> list[int]:
    """Check layer or head indices against their count: None -> all, an int -> [int].

    ``from_end=True`` also accepts ``-n..-1`` (counted from the end, as Python indexing)
    and returns them as ``0..n-1``.

    >>> select_indices("layer", 2, 4), select_indices("head", None, 3)
    ([2], [0, 1, 2])
    >>> select_indices("layer", [4], 4)
    Traceback (most recent call last):
    mechit.errors.InputError: layer [4] out of range: the model has 4 layers (0..3)
    >>> select_indices("layer", [0, -1], 4, from_end=True)
    [0, 3]
    """
    if chosen is None:
        return list(range(n))
    chosen = [chosen] if isinstance(chosen, (int, np.integer)) else list(chosen)
    low = -n if from_end else 0
    bad = [c for c in chosen if not isinstance(c, (int, np.integer)) or not low <= c < n]
    if bad and from_end:
        raise InputError(f"{name} {', '.join(map(str, bad))} out of range: the model has {n} {name}s "
                         f"(0..{n - 1}, or -{n}..-1 counting from the end)")
    if bad:
        raise InputError(f"{name} {bad} out of range: the model has {n} {name}s (0..{n - 1})")
    return [int(c) % n if from_end else int(c) for c in chosen]


def qk_weights(model: "TransformerBridge", layer: int) -> "tuple[Float[Tensor, 'H d dh'], Float[Tensor, 'H d dh']]":
    """Query and key weights of ``layer`` per query head, input norm scale folded in.

    W_Q[h] = diag(s_ln1) @ W_Q_raw[h] (rows scaled); W_K likewise, with the KV head of a
    query head repeated (GQA). Families with per-head QK norms also get that norm's scale
    folded into the columns. Biases, LayerNorm centring and rotary embeddings are not
    part of the view.

    >>> W_Q, W_K = qk_weights(model, 0); W_Q.shape == W_K.shape   # doctest: +SKIP
    True
    """
    scale = _scale(model, _raw(model, "ln1", layer))[None, :, None]
    w_q = _compute(_raw(model, "W_Q", layer)) * scale
    w_k = _repeat_kv(model, _compute(_raw(model, "W_K", layer))) * scale
    if family(model).qk_norm:
        w_q = w_q * _scale(model, _raw(model, "q_norm", layer))[None, None, :]
        w_k = w_k * _scale(model, _raw(model, "k_norm", layer))[None, None, :]
    return w_q, w_k


def ov_weights(model: "TransformerBridge", layer: int) -> "tuple[Float[Tensor, 'H d dh'], Float[Tensor, 'H dh d']]":
    """Value and output weights of ``layer`` per query head.

    W_V has the input norm scale folded into its rows and the KV head repeated per query
    head; W_O is raw, except in families with a post-attention norm (Gemma 2/3), whose
    scale is folded into its columns.

    >>> W_V, W_O = ov_weights(model, 0)                      # doctest: +SKIP
    """
    w_v = _repeat_kv(model, _compute(_raw(model, "W_V", layer))) * _scale(model, _raw(model, "ln1", layer))[None, :, None]
    w_o = _compute(_raw(model, "W_O", layer)).clone()
    if family(model).post_norms:
        w_o = w_o * _scale(model, _raw(model, "ln1_post", layer))[None, None, :]
    return w_v, w_o


def mlp_in_weights(model: "TransformerBridge", layer: int) -> "tuple[Float[Tensor, 'd d_mlp'], Float[Tensor, 'd d_mlp'] | None]":
    """MLP input (and gate, None without a gated MLP) weights, pre-MLP norm scale folded in.

    >>> W_in, W_gate = mlp_in_weights(model, 0)              # doctest: +SKIP
    """
    scale = _scale(model, _raw(model, "ln2", layer))[:, None]
    w_in = _compute(_raw(model, "W_in", layer)) * scale
    w_gate = _raw(model, "W_gate", layer) if getattr(model.cfg, "gated_mlp", False) else None
    return w_in, (None if w_gate is None else _compute(w_gate) * scale)


def mlp_out_weights(model: "TransformerBridge", layer: int) -> "Float[Tensor, 'd_mlp d']":
    """MLP output weights, one row per neuron (the vector it writes).

    Raw, except in families with a post-MLP norm (Gemma 2/3), whose scale is folded into
    the columns.

    >>> mlp_out_weights(model, 0).shape                      # doctest: +SKIP
    torch.Size([128, 64])
    """
    w_out = _compute(_raw(model, "W_out", layer)).clone()
    if family(model).post_norms:
        w_out = w_out * _scale(model, _raw(model, "ln2_post", layer))[None, :]
    return w_out


def input_embedding(model: "TransformerBridge") -> "Float[Tensor, 'vocab d']":
    """Raw input embedding rows ``W_E`` (without :func:`embed_scale`).

    >>> input_embedding(model).shape[0] == model.cfg.d_vocab  # doctest: +SKIP
    True
    """
    return _compute(_raw(model, "W_E")).clone()


def unembedding(model: "TransformerBridge") -> "Float[Tensor, 'd vocab']":
    """Unembedding ``W_U`` with the final norm scale folded into its rows (not centred).

    >>> unembedding(model).shape[1] == model.cfg.d_vocab     # doctest: +SKIP
    True
    """
    return _compute(_raw(model, "W_U")) * _scale(model, _raw(model, "ln_final"))[:, None]


def describe(model: "TransformerBridge") -> dict:
    """Architecture summary of a loaded model (what ``mechit info`` prints).

    >>> describe(model)["layers"]                            # doctest: +SKIP
    30
    """
    cfg = model.cfg
    fam = family(model)
    norm = fam.norm + (" (1 + w)" if fam.norm_offset else "")
    return {
        "spec": getattr(model, "mechit_spec", getattr(cfg, "model_name", "")),
        "architecture": getattr(cfg, "architecture", None),
        "family": fam.name,
        "layers": cfg.n_layers,
        "heads": cfg.n_heads,
        "kv_heads": n_kv_heads(model),
        "d_model": cfg.d_model,
        "d_head": cfg.d_head,
        "d_mlp": cfg.d_mlp,
        "d_vocab": cfg.d_vocab,
        "gated_mlp": bool(getattr(cfg, "gated_mlp", False)),
        "norm": norm,
        "post_norms": fam.post_norms,
        "qk_norm": fam.qk_norm,
        "embed_scale": embed_scale(model),
        "positional": getattr(cfg, "positional_embedding_type", None),
        "parameters": sum(p.numel() for p in model.original_model.parameters()),
        "folded": _folded(model),
    }
