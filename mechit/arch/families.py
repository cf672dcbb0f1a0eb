"""The family table: every architecture fact mechit relies on, one row per model family.

Everything an analysis needs about an architecture (norm kind, Gemma's ``1 + w`` norm
scale and √d_model embedding scale, GQA head sharing, sandwich norms, which GGUF
architectures load, whether hand-written block products exist) is a row of
:data:`FAMILIES`, reached through :func:`family` and the weight views of
:mod:`mechit.arch.weights`. An unknown architecture falls back to what TransformerLens'
config says (as inseq's model config registry does).

>>> FAMILIES["Gemma3ForCausalLM"].norm_offset, FAMILIES["LlamaForCausalLM"].block_vjp.__name__
(1.0, 'llama_pull_back')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping

from mechit.arch.llama_vjp import llama_pull_back

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@dataclass(frozen=True)
class Family:
    """Architecture facts of one model family.

    Attributes:
        name: short family name shown by ``mechit info``.
        norm: "RMSNorm" or "LayerNorm" (LayerNorm biases and centring are not folded).
        norm_offset: effective norm scale is ``norm_offset + weight`` (Gemma stores w - 1).
        sqrt_d_model_embed: the embedding output is ``W_E[token] * sqrt(d_model)``.
        post_norms: sandwich norms after attention and MLP outputs (Gemma 2/3); their
            scales are folded into the columns of W_O and W_out.
        qk_norm: per-head norms on queries and keys (Gemma 3, Qwen 3); their scales are
            folded into the columns of W_Q and W_K.
        gguf: the ``general.architecture`` name of this family in GGUF files, if loadable.
        block_vjp: hand-written vector-Jacobian products of one decoder block (the
            calling convention of :func:`mechit.arch.llama_vjp.llama_pull_back`), or None
            for autograd's. Set for Llama's blocks (pre-RMSNorm, rotary attention with
            grouped KV heads, SiLU-gated MLP, no sliding window).
        tensors: Hugging Face parameter names of the weights the views read, keyed by
            their TransformerLens names (``W_E``, ``W_U``, ``ln_final``; per layer, with a
            ``{layer}`` slot: ``W_Q``..``W_O``, ``W_in``, ``W_gate``, ``W_out``, ``ln1``,
            ``ln2`` and where the family has them ``ln1_post``, ``ln2_post``, ``q_norm``,
            ``k_norm``), stored as ``nn.Linear`` weights ``[out, in]``; a missing ``W_U``
            means tied embeddings. None: the family cannot be streamed
            (:class:`mechit.arch.stream.StreamedModel`).
        gguf_tensors: the same weights under their GGUF names (``token_embd.weight``,
            ``blk.{layer}.attn_q.weight``, ...; the names gguf's tensor-name map gives the
            Hugging Face ones, which transformers reverses when it loads a GGUF file), stored
            ``[out, in]`` once dequantised. None: GGUF files of the family cannot be streamed.
        gguf_unpermute_qk: llama.cpp's converter interleaved the rotary halves of each
            head's W_Q and W_K rows; transformers' ``LlamaTensorProcessor`` reverses it on
            load (files whose ``general.architecture`` is "llama").
        gguf_norms_plus_one: the GGUF file stores each norm weight as ``1 + w``;
            transformers' ``Gemma2TensorProcessor`` subtracts 1 (in float32) on load.
        not_streamed: why a family without ``tensors`` cannot be streamed (for the error).
    """

    name: str
    norm: str = "RMSNorm"
    norm_offset: float = 0.0
    sqrt_d_model_embed: bool = False
    post_norms: bool = False
    qk_norm: bool = False
    gguf: str | None = None
    block_vjp: Callable | None = None
    tensors: Mapping[str, str] | None = field(default=None, compare=False)
    gguf_tensors: Mapping[str, str] | None = field(default=None, compare=False)
    gguf_unpermute_qk: bool = False
    gguf_norms_plus_one: bool = False
    not_streamed: str = "the family table has no tensor names for it"


_LAYER = "model.layers.{layer}."
LLAMA_TENSORS = {
    "W_E": "model.embed_tokens.weight", "W_U": "lm_head.weight", "ln_final": "model.norm.weight",
    "W_Q": _LAYER + "self_attn.q_proj.weight", "W_K": _LAYER + "self_attn.k_proj.weight",
    "W_V": _LAYER + "self_attn.v_proj.weight", "W_O": _LAYER + "self_attn.o_proj.weight",
    "W_in": _LAYER + "mlp.up_proj.weight", "W_gate": _LAYER + "mlp.gate_proj.weight",
    "W_out": _LAYER + "mlp.down_proj.weight",
    "ln1": _LAYER + "input_layernorm.weight", "ln2": _LAYER + "post_attention_layernorm.weight",
}
_QK_NORMS = {"q_norm": _LAYER + "self_attn.q_norm.weight", "k_norm": _LAYER + "self_attn.k_norm.weight"}
_SANDWICH_NORMS = {  # Gemma 2/3: a norm before and after attention and MLP
    "ln1_post": _LAYER + "post_attention_layernorm.weight", "ln2": _LAYER + "pre_feedforward_layernorm.weight",
    "ln2_post": _LAYER + "post_feedforward_layernorm.weight",
}

_BLOCK = "blk.{layer}."
LLAMA_GGUF_TENSORS = {  # the same weights in a GGUF file (gguf's tensor-name map)
    "W_E": "token_embd.weight", "W_U": "output.weight", "ln_final": "output_norm.weight",
    "W_Q": _BLOCK + "attn_q.weight", "W_K": _BLOCK + "attn_k.weight", "W_V": _BLOCK + "attn_v.weight",
    "W_O": _BLOCK + "attn_output.weight", "W_in": _BLOCK + "ffn_up.weight", "W_gate": _BLOCK + "ffn_gate.weight",
    "W_out": _BLOCK + "ffn_down.weight", "ln1": _BLOCK + "attn_norm.weight", "ln2": _BLOCK + "ffn_norm.weight",
}
_GGUF_QK_NORMS = {"q_norm": _BLOCK + "attn_q_norm.weight", "k_norm": _BLOCK + "attn_k_norm.weight"}
_GGUF_SANDWICH_NORMS = {"ln1_post": _BLOCK + "post_attention_norm.weight", "ln2_post": _BLOCK + "post_ffw_norm.weight"}

FAMILIES: dict[str, Family] = {
    "LlamaForCausalLM": Family("llama", gguf="llama", block_vjp=llama_pull_back, tensors=LLAMA_TENSORS,
                               gguf_tensors=LLAMA_GGUF_TENSORS, gguf_unpermute_qk=True),
    "MistralForCausalLM": Family("mistral", gguf="mistral", tensors=LLAMA_TENSORS, gguf_tensors=LLAMA_GGUF_TENSORS),
    "Qwen2ForCausalLM": Family("qwen2", gguf="qwen2", tensors=LLAMA_TENSORS, gguf_tensors=LLAMA_GGUF_TENSORS),
    "Qwen3ForCausalLM": Family("qwen3", qk_norm=True, gguf="qwen3", tensors={**LLAMA_TENSORS, **_QK_NORMS},
                               gguf_tensors={**LLAMA_GGUF_TENSORS, **_GGUF_QK_NORMS}),
    "GPT2LMHeadModel": Family("gpt2", norm="LayerNorm", gguf="gpt2", not_streamed=(
        "its attention weights are one fused Conv1D tensor, c_attn [d_model, 3 * d_model] holding Q, K and V, "
        "which has no per-weight name to read")),
    "GemmaForCausalLM": Family("gemma", norm_offset=1.0, sqrt_d_model_embed=True, tensors=LLAMA_TENSORS),
    "Gemma2ForCausalLM": Family(
        "gemma2", norm_offset=1.0, sqrt_d_model_embed=True, post_norms=True, gguf="gemma2",
        tensors={**LLAMA_TENSORS, **_SANDWICH_NORMS},
        gguf_tensors={**LLAMA_GGUF_TENSORS, **_GGUF_SANDWICH_NORMS}, gguf_norms_plus_one=True,
    ),
    "Gemma3ForCausalLM": Family(
        "gemma3", norm_offset=1.0, sqrt_d_model_embed=True, post_norms=True, qk_norm=True,
        gguf="gemma3", tensors={**LLAMA_TENSORS, **_SANDWICH_NORMS, **_QK_NORMS},
        gguf_tensors={**LLAMA_GGUF_TENSORS, **_GGUF_SANDWICH_NORMS, **_GGUF_QK_NORMS}, gguf_norms_plus_one=True,
    ),
}
GGUF_ARCHITECTURES = {f.gguf: arch for arch, f in FAMILIES.items() if f.gguf}


def family(model: "TransformerBridge") -> Family:
    """The :class:`Family` row for a loaded model.

    Unknown architectures fall back to what TransformerLens' config says (norm type and
    the ``1 + w`` offset flag); everything else takes the plain defaults.

    >>> family(load_model("tests/tiny-gemma")).norm_offset    # doctest: +SKIP
    1.0
    """
    cfg = model.cfg
    arch = getattr(cfg, "architecture", None)
    if arch in FAMILIES:
        return FAMILIES[arch]
    return Family(
        name=str(arch or "unknown"),
        norm="LayerNorm" if getattr(cfg, "normalization_type", "RMS") in ("LN", "LNPre") else "RMSNorm",
        norm_offset=1.0 if getattr(cfg, "rmsnorm_uses_offset", False) else 0.0,
    )

