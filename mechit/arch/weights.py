"""Architecture facts and folded weight views of a loaded TransformerBridge: the one place
that knows where each model family keeps its norm scales, so every analysis reads the
same weights (query/key, value/output, MLP in/out, embeddings) in TransformerLens layout.

>>> W_Q, W_K = qk_weights(model, 0)
>>> W_Q.shape                                   # (H, d_model, d_head)
torch.Size([8, 160, 20])
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch

from mechit.arch.families import family
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


def _scale(model, module) -> "Float[Tensor, 'd']":
    """Effective multiplicative scale of a norm module (offset + weight), in the compute dtype, detached."""
    weight = _compute(module.original_component.weight)
    if _folded(model):  # compatibility mode already folded it into the next weights
        return torch.ones_like(weight)
    return family(model).norm_offset + weight


def _block(model, layer: int):
    if not 0 <= layer < model.cfg.n_layers:
        raise InputError(f"layer {layer} out of range: the model has {model.cfg.n_layers} layers")
    return model.blocks[layer]


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
    block = _block(model, layer)
    scale = _scale(model, block.ln1)[None, :, None]
    w_q = _compute(block.attn.W_Q) * scale
    w_k = _repeat_kv(model, _compute(block.attn.W_K)) * scale
    if family(model).qk_norm:
        w_q = w_q * _scale(model, block.attn.q_norm)[None, None, :]
        w_k = w_k * _scale(model, block.attn.k_norm)[None, None, :]
    return w_q, w_k


def ov_weights(model: "TransformerBridge", layer: int) -> "tuple[Float[Tensor, 'H d dh'], Float[Tensor, 'H dh d']]":
    """Value and output weights of ``layer`` per query head.

    W_V has the input norm scale folded into its rows and the KV head repeated per query
    head; W_O is raw, except in families with a post-attention norm (Gemma 2/3), whose
    scale is folded into its columns.

    >>> W_V, W_O = ov_weights(model, 0)                      # doctest: +SKIP
    """
    block = _block(model, layer)
    w_v = _repeat_kv(model, _compute(block.attn.W_V)) * _scale(model, block.ln1)[None, :, None]
    w_o = _compute(block.attn.W_O).clone()
    if family(model).post_norms:
        w_o = w_o * _scale(model, block.ln1_post)[None, None, :]
    return w_v, w_o


def mlp_in_weights(model: "TransformerBridge", layer: int) -> "tuple[Float[Tensor, 'd d_mlp'], Float[Tensor, 'd d_mlp'] | None]":
    """MLP input (and gate, None without a gated MLP) weights, pre-MLP norm scale folded in.

    >>> W_in, W_gate = mlp_in_weights(model, 0)              # doctest: +SKIP
    """
    block = _block(model, layer)
    scale = _scale(model, block.ln2)[:, None]
    w_in = _compute(block.mlp.W_in) * scale
    w_gate = getattr(block.mlp, "W_gate", None) if getattr(model.cfg, "gated_mlp", False) else None
    return w_in, (None if w_gate is None else _compute(w_gate) * scale)


def mlp_out_weights(model: "TransformerBridge", layer: int) -> "Float[Tensor, 'd_mlp d']":
    """MLP output weights, one row per neuron (the vector it writes).

    Raw, except in families with a post-MLP norm (Gemma 2/3), whose scale is folded into
    the columns.

    >>> mlp_out_weights(model, 0).shape                      # doctest: +SKIP
    torch.Size([128, 64])
    """
    block = _block(model, layer)
    w_out = _compute(block.mlp.W_out).clone()
    if family(model).post_norms:
        w_out = w_out * _scale(model, block.ln2_post)[None, :]
    return w_out


def input_embedding(model: "TransformerBridge") -> "Float[Tensor, 'vocab d']":
    """Raw input embedding rows ``W_E`` (without :func:`embed_scale`).

    >>> input_embedding(model).shape[0] == model.cfg.d_vocab  # doctest: +SKIP
    True
    """
    return _compute(model.W_E).clone()


def unembedding(model: "TransformerBridge") -> "Float[Tensor, 'd vocab']":
    """Unembedding ``W_U`` with the final norm scale folded into its rows (not centred).

    >>> unembedding(model).shape[1] == model.cfg.d_vocab     # doctest: +SKIP
    True
    """
    return _compute(model.W_U) * _scale(model, model.ln_final)[:, None]


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
