"""Vector-Jacobian products of a Llama decoder block written out by hand, for the
block-by-block reverse path (:mod:`mechit.attribution.blocks`).

Autograd's batched products through a block (``is_grads_batched``) always run over the
whole sequence and spend about a quarter of their time in small elementwise kernels.
For a block of the Llama family (``Family.block_vjp``: pre-RMSNorm, rotary
attention with grouped KV heads, SiLU-gated MLP) the products here give the same values
(within float32 rounding; tests/unit/arch/test_llama_vjp.py) with less work:

- **causal truncation**: the cotangent of a response token whose logits come from
  position ``t`` is exactly zero after ``t`` at every layer (causal attention), so a chunk
  of cotangents runs over the first ``max t + 1`` positions only;
- the last block starts from one position per cotangent (:func:`llama_vjp_one_row`);
- a KV head's query heads share one score product instead of a repeated copy of the keys,
  the C cotangents of a chunk stay inside each product, and the query positions are split
  in :data:`ATTENTION_PARTS` parts, each over the keys up to its last query;
- the norm and activation derivatives are computed once per block, not per product.

Their speed against autograd's products is measured in docs/benchmarks.md ("Attribution").

The block's forward pass is recomputed here too (from views of the model's own weights;
nothing is copied), and :func:`llama_pull_back` compares its output with the model's own output of that block
(kept by the graph-free forward) before any product: if they differ (a model that is
not what the family table says, or a hook that edits the block), it returns None and
the caller uses autograd. Only float32 models in eval mode take this path.

Shapes: S positions, d = d_model, f = d_mlp, H query heads, K KV heads, G = H / K,
h = head_dim, C cotangents.

The organism's model is a Llama: recompute its first block on some input and pull two
cotangents back through it.

>>> block = model.blocks[0]
>>> x = torch.randn(1, 5, model.cfg.d_model)
>>> cos, sin = model.original_model.model.rotary_emb(x, torch.arange(5)[None])
>>> kwargs = {"position_embeddings": (cos, sin)}
>>> output, _ = llama_forward(llama_weights(block), x[0], cos[0], sin[0])
>>> cotangents = torch.zeros(2, 1, 5, model.cfg.d_model)
>>> cotangents[:, 0, :3] = 1.0  # zero from position 3 on
>>> llama_pull_back(block, x, kwargs, output[None], cotangents, torch.tensor([3, 3]), chunk=1).shape
torch.Size([2, 1, 5, 160])
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from jaxtyping import Float, Int
from torch import Tensor

# Hugging Face parameter names a Llama decoder layer may have (biases only in some
# checkpoints); a block with any other parameter is not handled here.
_NAMES = {f"self_attn.{p}_proj.{kind}" for p in "qkvo" for kind in ("weight", "bias")} | {
    f"mlp.{p}_proj.{kind}" for p in ("gate", "up", "down") for kind in ("weight", "bias")} | {
    "input_layernorm.weight", "post_attention_layernorm.weight"}

# The forward check: per position, |ours - model's| <= _RTOL * |the block's update| + _ATOL * |input|.
_RTOL, _ATOL = 1e-4, 1e-6


@dataclass(frozen=True)
class LlamaWeights:
    """One block's weights: detached views of the model's own tensors (nothing is copied).

    ``wq`` (H h, d), ``wk``, ``wv`` (K h, d), ``wo`` (d, H h), ``wg``, ``wu`` (f, d), ``wd``
    (d, f) and their biases (None when the checkpoint has none); ``w1``, ``w2`` (d,) and
    ``eps1``, ``eps2`` the two RMSNorms' scales and epsilons.
    """

    wq: Tensor
    wk: Tensor
    wv: Tensor
    wo: Tensor
    wg: Tensor
    wu: Tensor
    wd: Tensor
    bq: Tensor | None
    bk: Tensor | None
    bv: Tensor | None
    bo: Tensor | None
    bg: Tensor | None
    bu: Tensor | None
    bd: Tensor | None
    w1: Tensor
    w2: Tensor
    eps1: float
    eps2: float
    n_heads: int
    n_kv_heads: int
    head_dim: int
    scaling: float


@dataclass
class LlamaSaved:
    """What the forward pass keeps for the products, for the first S positions.

    For each RMSNorm ``y = w * x * r`` with ``r = rsqrt(mean(x^2) + eps)`` (S, 1): ``rw1``,
    ``rw2`` = ``r * w``, ``wxn1``, ``wxn2`` = ``w * x * r`` and ``rxn1``, ``rxn2`` =
    ``x * r^2`` (S, d). ``q`` (K, G S, h): rotated queries times the attention scaling, the
    G query heads of one KV head stacked; ``k`` (K, S, h) rotated keys times the scaling;
    ``v`` (K, S, h); ``pattern_t`` (K, S, G S) attention probabilities, key position first;
    ``cos``, ``sin`` (S, h); ``dgate``, ``dup`` (S, f) the derivatives of
    ``silu(gate) * up`` by gate and by up.
    """

    rw1: Tensor
    wxn1: Tensor
    rxn1: Tensor
    q: Tensor
    k: Tensor
    v: Tensor
    pattern_t: Tensor
    cos: Tensor
    sin: Tensor
    rw2: Tensor
    wxn2: Tensor
    rxn2: Tensor
    dgate: Tensor
    dup: Tensor

    def first(self, rows: int) -> "LlamaSaved":
        """The same quantities for the first ``rows`` positions (exact under causal attention)."""
        kv, seq, h = self.k.shape
        if rows == seq:
            return self
        groups = self.q.shape[1] // seq
        q = self.q.view(kv, groups, seq, h)[:, :, :rows].reshape(kv, groups * rows, h)
        pattern_t = self.pattern_t.view(kv, seq, groups, seq)[:, :rows, :, :rows].reshape(kv, rows, groups * rows)
        cut = {f.name: getattr(self, f.name)[:rows] for f in fields(self)
               if f.name not in ("q", "k", "v", "pattern_t")}
        return LlamaSaved(q=q, k=self.k[:, :rows], v=self.v[:, :rows], pattern_t=pattern_t, **cut)

    def at(self, rows: Int[Tensor, " C"]) -> tuple[Tensor, ...]:
        """``rw2``, ``wxn2``, ``rxn2``, ``dgate``, ``dup`` at the positions ``rows`` (C, .)."""
        return self.rw2[rows], self.wxn2[rows], self.rxn2[rows], self.dgate[rows], self.dup[rows]


def _hf(module):
    """The Hugging Face module a TransformerBridge component wraps (or the module itself)."""
    return getattr(module, "original_component", module)


def llama_weights(block) -> LlamaWeights | None:
    """The weights of a TransformerBridge block of the Llama family, or None when the block
    is not one this module handles (other parameters, another activation, not float32,
    in training mode)."""
    layer = _hf(block)
    if block.training or not hasattr(layer, "self_attn") or not hasattr(layer, "mlp"):
        return None
    params = {name.replace("._original_component", ""): p.detach() for name, p in layer.named_parameters()}
    if not set(params) <= _NAMES or any(p.dtype != torch.float32 for p in params.values()):
        return None
    attn = _hf(layer.self_attn)
    config = getattr(attn, "config", None)
    if config is None or getattr(config, "hidden_act", None) != "silu" or not hasattr(attn, "scaling"):
        return None
    try:
        return LlamaWeights(
            **{f"w{p}": params[f"self_attn.{p}_proj.weight"] for p in "qkvo"},
            **{f"b{p}": params.get(f"self_attn.{p}_proj.bias") for p in "qkvo"},
            **{f"w{p[0]}": params[f"mlp.{p}_proj.weight"] for p in ("gate", "up", "down")},
            **{f"b{p[0]}": params.get(f"mlp.{p}_proj.bias") for p in ("gate", "up", "down")},
            w1=params["input_layernorm.weight"], w2=params["post_attention_layernorm.weight"],
            eps1=float(_hf(layer.input_layernorm).variance_epsilon),
            eps2=float(_hf(layer.post_attention_layernorm).variance_epsilon),
            n_heads=int(config.num_attention_heads), n_kv_heads=int(config.num_key_value_heads),
            head_dim=int(attn.head_dim), scaling=float(attn.scaling))
    except (KeyError, AttributeError):
        return None


def _rotate_half(t: Tensor) -> Tensor:
    a, b = t.chunk(2, -1)
    return torch.cat([-b, a], -1)


def _rotary_vjp_into(out: Tensor, d: Tensor, cos: Tensor, sin: Tensor) -> None:
    """``out = d * cos + R^T (d * sin)`` with ``R`` = rotate-half, written into ``out`` (any strides)."""
    half = d.shape[-1] // 2
    torch.mul(d[..., :half], cos[..., :half], out=out[..., :half])
    out[..., :half].addcmul_(d[..., half:], sin[..., half:])
    torch.mul(d[..., half:], cos[..., half:], out=out[..., half:])
    out[..., half:].addcmul_(d[..., :half], sin[..., :half], value=-1)


def _linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    return x @ w.T if b is None else torch.addmm(b, x, w.T)


def _rms_norm(x: Tensor, w: Tensor, eps: float) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """``w * x * r`` with ``r = rsqrt(mean(x^2) + eps)``, and ``(r w, w x r, x r^2)`` for the product."""
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # (S, 1)
    xn = x * r
    y = xn * w
    return y, (r * w, y, xn * r)


def llama_forward(w: LlamaWeights, x: Float[Tensor, "S d"], cos: Float[Tensor, "S h"], sin: Float[Tensor, "S h"]
                  ) -> tuple[Float[Tensor, "S d"], LlamaSaved]:
    """The block's output and what :func:`llama_vjp` needs (Hugging Face's LlamaDecoderLayer,
    eval mode, causal mask)."""
    seq = x.shape[0]
    heads, kv, h = w.n_heads, w.n_kv_heads, w.head_dim
    n1, (rw1, wxn1, rxn1) = _rms_norm(x, w.w1, w.eps1)
    q = _linear(n1, w.wq, w.bq).view(seq, heads, h).transpose(0, 1)  # (H, S, h)
    k = _linear(n1, w.wk, w.bk).view(seq, kv, h).transpose(0, 1)  # (K, S, h)
    v = _linear(n1, w.wv, w.bv).view(seq, kv, h).transpose(0, 1).contiguous()
    q = (q * cos + _rotate_half(q) * sin).reshape(kv, heads // kv * seq, h)  # (K, G S, h)
    k = k * cos + _rotate_half(k) * sin
    scores = (q @ k.transpose(1, 2)).view(kv, heads // kv, seq, seq) * w.scaling
    future = torch.ones(seq, seq, dtype=torch.bool, device=x.device).triu(1)
    pattern = torch.softmax(scores.masked_fill(future, float("-inf")), -1).view(kv, -1, seq)  # (K, G S, S)
    z = (pattern @ v).view(heads, seq, h).transpose(0, 1).reshape(seq, heads * h)
    resid = x + _linear(z, w.wo, w.bo)
    n2, (rw2, wxn2, rxn2) = _rms_norm(resid, w.w2, w.eps2)
    gate, up = _linear(n2, w.wg, w.bg), _linear(n2, w.wu, w.bu)  # (S, f) each
    sig = torch.sigmoid(gate)
    silu = gate * sig
    out = resid + _linear(silu * up, w.wd, w.bd)
    return out, LlamaSaved(rw1=rw1, wxn1=wxn1, rxn1=rxn1, q=q * w.scaling, k=k * w.scaling, v=v,
                           pattern_t=pattern.transpose(1, 2).contiguous(), cos=cos, sin=sin, rw2=rw2, wxn2=wxn2,
                           rxn2=rxn2, dgate=up * sig * (1 + gate * (1 - sig)), dup=silu)


def _rms_norm_vjp_(dy: Tensor, rw: Tensor, wxn: Tensor, rxn: Tensor) -> Tensor:
    """Back through ``y = w * x * r``, ``r = rsqrt(mean(x^2) + eps)``: ``dx = r w dy - x r^2
    mean(dy w x r)``, with the three tensors of :func:`_rms_norm`; overwrites ``dy``."""
    mean = (dy * wxn).mean(-1, keepdim=True)
    return dy.mul_(rw).addcmul_(rxn, mean, value=-1)


def _products(parts: list[tuple[Tensor, Tensor]]) -> Tensor:
    """``sum_i a_i @ w_i`` for 2-D ``a_i`` (n, out_i) and weights ``w_i`` (out_i, in): (n, in)."""
    (a, w), rest = parts[0], parts[1:]
    out = a @ w
    for a, w in rest:
        out.addmm_(a, w)
    return out


def _mlp_vjp(w: LlamaWeights, cot: Tensor, rw2: Tensor, wxn2: Tensor, rxn2: Tensor, dgate: Tensor, dup: Tensor
             ) -> Tensor:
    """Back through ``h + down(silu(gate) * up)`` with ``gate``, ``up`` from the second norm of
    ``h``: ``cot`` (..., S, d) at the output, the rest (S, .) from :class:`LlamaSaved` at the
    same positions; returns the cotangent at ``h`` (..., S, d)."""
    da = cot @ w.wd  # (..., S, f)
    f = da.shape[-1]
    dn = _products([((da * dgate).view(-1, f), w.wg), ((da * dup).view(-1, f), w.wu)]).view(cot.shape)
    return _rms_norm_vjp_(dn, rw2, wxn2, rxn2).add_(cot)


def _attention_vjp(dz: Float[Tensor, "C Q K G h"], q: Float[Tensor, "K GQ h"], k: Float[Tensor, "K S h"],
                   v: Float[Tensor, "K S h"], pattern_t: Float[Tensor, "K S GQ"]
                   ) -> tuple[Float[Tensor, "K C G Q h"], Float[Tensor, "K S C h"], Float[Tensor, "K S C h"]]:
    """Back through causal attention for Q query positions over S key positions (the
    queries are the last Q positions, or any whose earlier keys are all among the S):
    ``dz`` at the attention output, ``q``, ``k`` (times the scaling), ``v`` and the
    probabilities ``pattern_t`` of :class:`LlamaSaved` restricted to those positions.
    The C cotangents stay inside each KV head's matrices, so every product is one large
    product batched over the K KV heads."""
    c, n_q, kv, groups, h = dz.shape
    seq = k.shape[1]
    dz_by_head = dz.permute(2, 4, 0, 3, 1).reshape(kv, h, c * groups * n_q)  # (K, h, C G Q)
    dscores = (v @ dz_by_head).view(kv, seq, c, groups * n_q)  # (K, S key, C, G Q query)
    pattern_t = pattern_t[:, :, None]  # (K, S key, 1, G Q)
    dscores.mul_(pattern_t)
    dscores.addcmul_(pattern_t, dscores.sum(1, keepdim=True), value=-1)  # softmax backward (scaling is in q, k)
    dq = (dscores.view(kv, seq, -1).transpose(1, 2) @ k).view(kv, c, groups, n_q, h)
    dk = (dscores.view(kv, seq * c, -1) @ q).view(kv, seq, c, h)
    dv = (pattern_t[:, :, 0] @ dz.permute(2, 3, 1, 0, 4).reshape(kv, groups * n_q, c * h)).view(kv, seq, c, h)
    return dq, dk, dv


# The attention products split the query positions into this many parts, each over the keys
# up to its last query (causal): (parts + 1) / (2 parts) of the full products' work.
ATTENTION_PARTS = 2


def llama_vjp(w: LlamaWeights, s: LlamaSaved, cot: Float[Tensor, "C S d"]) -> Float[Tensor, "C S d"]:
    """``(d out / d x)^T v`` for each of ``C`` cotangents ``v`` at the block's output."""
    c, seq, d = cot.shape
    heads, kv, h = w.n_heads, w.n_kv_heads, w.head_dim
    groups = heads // kv
    dresid = _mlp_vjp(w, cot, s.rw2, s.wxn2, s.rxn2, s.dgate, s.dup)  # (C, S, d)
    dz = (dresid @ w.wo).view(c, seq, kv, groups, h)  # query position s, head (k, g)
    dqkv = torch.empty(c, seq, (heads + 2 * kv) * h, dtype=cot.dtype, device=cot.device)
    dq_out = dqkv[..., :heads * h].view(c, seq, kv, groups, h).permute(2, 0, 3, 1, 4)  # (K, C, G, S, h)
    dk_out = dqkv[..., heads * h:(heads + kv) * h].view(c, seq, kv, h).permute(2, 1, 0, 3)  # (K, S, C, h)
    dv_out = dqkv[..., (heads + kv) * h:].view(c, seq, kv, h).permute(2, 1, 0, 3)
    q = s.q.view(kv, groups, seq, h)
    pattern_t = s.pattern_t.view(kv, seq, groups, seq)
    bounds = sorted({seq * i // ATTENTION_PARTS for i in range(ATTENTION_PARTS + 1)})
    dk_out.zero_()
    dv_out.zero_()
    for lo, hi in zip(bounds, bounds[1:]):  # queries [lo, hi) see keys [0, hi)
        dq, dk, dv = _attention_vjp(dz[:, lo:hi], q[:, :, lo:hi].reshape(kv, -1, h), s.k[:, :hi], s.v[:, :hi],
                                    pattern_t[:, :hi, :, lo:hi].reshape(kv, hi, -1))
        _rotary_vjp_into(dq_out[:, :, :, lo:hi], dq, s.cos[lo:hi], s.sin[lo:hi])
        dk_out[:, :hi] += dk
        dv_out[:, :hi] += dv
    _rotary_vjp_into(dk_out, dk_out.clone(), s.cos[:, None], s.sin[:, None])
    flat = dqkv.view(c * seq, -1)
    dn = _products([(flat[:, :heads * h], w.wq), (flat[:, heads * h:(heads + kv) * h], w.wk),
                    (flat[:, (heads + kv) * h:], w.wv)]).view(c, seq, d)
    return _rms_norm_vjp_(dn, s.rw1, s.wxn1, s.rxn1).add_(dresid)


def llama_vjp_one_row(w: LlamaWeights, s: LlamaSaved, g: Float[Tensor, "C d"], rows: Int[Tensor, " C"]
                      ) -> Float[Tensor, "C S d"]:
    """:func:`llama_vjp` for cotangents that are zero except at one position each: ``g[c]``
    at position ``rows[c]`` (the last block, where a response token's cotangent sits at the
    position that predicts it). The MLP, the output projection and the queries then work
    on those C positions only; keys and values still get every position's gradient.
    """
    c, d = g.shape
    seq = s.k.shape[1]
    heads, kv, h = w.n_heads, w.n_kv_heads, w.head_dim
    groups = heads // kv
    dresid = _mlp_vjp(w, g, *s.at(rows))  # (C, d)
    dz = (dresid @ w.wo).view(c, kv, groups, h)
    dpattern = torch.einsum("ckgh,ksh->kcgs", dz, s.v)  # (K, C, G, S key)
    pattern = s.pattern_t.view(kv, seq, groups, seq)[:, :, :, rows].permute(0, 3, 2, 1)  # (K, C, G, S key)
    dscores = pattern * (dpattern - (dpattern * pattern).sum(-1, keepdim=True))
    q = s.q.view(kv, groups, seq, h)[:, :, rows].transpose(1, 2)  # (K, C, G, h) queries at rows
    dq = torch.einsum("kcgs,ksh->ckgh", dscores, s.k).reshape(c, heads, h)
    dkv = torch.empty(c, seq, 2 * kv * h, dtype=g.dtype, device=g.device)  # keys and values, every position
    dq_rot = torch.empty_like(dq)
    _rotary_vjp_into(dq_rot, dq, s.cos[rows, None], s.sin[rows, None])  # (C, H, h)
    _rotary_vjp_into(dkv[..., :kv * h].view(c, seq, kv, h), torch.einsum("kcgs,kcgh->cskh", dscores, q),
                     s.cos[:, None], s.sin[:, None])
    dkv[..., kv * h:] = torch.einsum("kcgs,ckgh->cskh", pattern, dz).reshape(c, seq, kv * h)
    flat = dkv.view(c * seq, -1)
    dn = _products([(flat[:, :kv * h], w.wk), (flat[:, kv * h:], w.wv)]).view(c, seq, d)
    at = torch.arange(c, device=g.device)
    dn[at, rows] += dq_rot.reshape(c, heads * h) @ w.wq
    dx = _rms_norm_vjp_(dn, s.rw1, s.wxn1, s.rxn1)
    dx[at, rows] += dresid
    return dx


def llama_pull_back(block, x: Float[Tensor, "1 S d"], kwargs: dict, output: Float[Tensor, "1 S d"],
                    cotangents: Float[Tensor, "C 1 S d"], rows: Int[Tensor, " C"], chunk: int,
                    one_row: bool = False) -> Float[Tensor, "C 1 S d"] | None:
    """The block's products for all ``cotangents``, ``chunk`` at a time, or None when this
    block is not one :func:`llama_weights` handles or the recomputed output differs from
    ``output`` (the model's own output of this block for input ``x``).

    ``rows[c]``: cotangent ``c`` is zero from position ``rows[c]`` on; cotangents are taken
    in order, so keep those with similar ``rows`` together. ``one_row``: each cotangent is
    zero except at position ``rows[c] - 1`` (:func:`llama_vjp_one_row`).
    """
    weights = llama_weights(block)
    rotary = kwargs.get("position_embeddings")
    if weights is None or rotary is None or x.dtype != torch.float32:
        return None
    cos, sin = (t[0] for t in rotary)
    out, saved = llama_forward(weights, x[0], cos, sin)
    tolerance = _RTOL * (output[0] - x[0]).abs().amax(-1) + _ATOL * x[0].abs().amax(-1)
    if not bool(((out - output[0]).abs().amax(-1) <= tolerance).all()):
        return None
    result = torch.empty_like(cotangents)
    for start in range(0, cotangents.shape[0], chunk):
        stop = min(start + chunk, cotangents.shape[0])
        seen = int(rows[start:stop].max())
        result[start:stop, :, seen:] = 0
        if one_row:
            at = rows[start:stop] - 1
            g = cotangents[torch.arange(start, stop, device=at.device), 0, at]  # (c, d)
            result[start:stop, 0, :seen] = llama_vjp_one_row(weights, saved.first(seen), g, at)
        else:
            part = cotangents[start:stop, 0, :seen].contiguous()  # contiguous: the products fold into 2-D ones
            result[start:stop, 0, :seen] = llama_vjp(weights, saved.first(seen), part)
    return result
