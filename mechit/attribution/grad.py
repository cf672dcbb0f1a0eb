"""Exact gradient × input of every response token's probability, from one forward pass.

For a tokenised sequence (prompt then response), teacher-forced, with ``e_i`` the
embedding of prompt token ``i`` as it enters the model (the ``hook_embed`` output, so a
family's embedding scale is included) and ``p_j`` the probability the model gives
response token ``j`` at the position before it (PAPER.md §1.1–1.2)::

    A[i, j] = < d p_j / d e_i , e_i >

How it is computed (one primal forward, then batched products):

1. A hook on ``hook_embed`` makes the embeddings a leaf ``e`` (batch 1, seq, d_model).
   A hook on ``unembed.hook_in`` keeps ``h`` = the final-norm output at the ``m``
   positions that predict a response token, and hands the unembedding a detached copy,
   so full-vocabulary logits exist only at those ``m`` positions.
2. ``g_j = d p_j / d h_j`` for all ``j`` from one small backward of ``sum_j p_j`` through
   the unembedding and softmax (``p_j`` depends on ``h_j`` only).
3. Either **reverse mode**: ``d p_j / d e = (d h / d e)^T g_j`` for a chunk of ``j`` at once
   (``torch.autograd.grad(..., is_grads_batched=True)``, one vector per response token);
   or **forward mode**: for a chunk of prompt tokens ``i``, the directional derivative of
   ``h`` along the tangent that moves only ``e_i`` by ``e_i`` itself (``torch.func.jvp``
   under ``vmap``); dotting with ``g_j`` gives the whole row ``A[i, :]``.
   Reverse costs ``m`` vector-Jacobian products, forward ``n`` Jacobian-vector products;
   chunks are sized to ``memory_budget``. Parameters stop requiring grad meanwhile (and
   are restored), so no weight gradient is computed and no activation is kept for one.

Reverse mode runs block by block when the model's blocks form a plain chain
(:mod:`mechit.attribution.blocks`, the usual case): the forward pass keeps each block's
input instead of every block's graph, and each block is recomputed once before its
products; same values, one more forward pass, a fraction of the memory. Otherwise
(checked during the forward pass) it keeps the whole graph, steps 1-3 above.

The paper's own procedure, one backward pass per response token, is
:func:`mechit.attribution.reference.gradient_x_input_loop`.

>>> from mechit.tokens import encode
>>> enc = encode(model.tokenizer, "Translate to Zel: the cat", " ka mira")
>>> raw, probs = gradient_x_input(model, enc.input_ids, enc.prompt_positions, enc.response_positions)
>>> raw.shape, probs.shape  # (n_prompt, n_response), (n_response,)
(torch.Size([6, 4]), torch.Size([4]))
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechit.attribution.blocks import (
    block_primal,
    block_reverse,
    weights_frozen,
)
from mechit.errors import InputError
from mechit.runtime import device_of, trim_hooks, upcast

Method = Literal["auto", "reverse", "forward"]

# Bytes for one chunk of batched products beyond what the forward pass keeps and, in the
# block-by-block reverse path, the cotangents carried through the blocks (:func:`block_plan`).
# What it gives on SmolLM2-135M: docs/benchmarks.md ("Attribution: notes moved from code").
DEFAULT_MEMORY_BUDGET = 128 * 2**20

# Whole forward graphs (forward mode, and reverse mode when the blocks are not a plain
# chain) estimated above this size (:func:`forward_bytes`) return the heap freed
# between saved activations to the OS after every block (:func:`mechit.runtime.trim_hooks`);
# smaller ones skip the call it costs per block (docs/benchmarks.md).
TRIM_ABOVE = 64 * 2**20

# Forward mode is chosen when the response has more than FORWARD_RATIO times as many tokens
# as the prompt: on CPU one Jacobian-vector product under vmap costs several batched
# vector-Jacobian products (docs/benchmarks.md).
FORWARD_RATIO = 4.0


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted activation is captured."""


def choose_method(n_prompt: int, n_response: int, method: Method = "auto") -> str:
    """``"reverse"`` or ``"forward"``: the forced ``method``, else the cheaper one for these sizes.

    >>> choose_method(200, 32), choose_method(10, 300), choose_method(10, 300, "reverse")
    ('reverse', 'forward', 'reverse')
    """
    if method not in ("auto", "reverse", "forward"):
        raise ValueError(f"method must be 'auto', 'reverse' or 'forward', not {method!r}")
    if method != "auto":
        return method
    return "forward" if n_response > FORWARD_RATIO * n_prompt else "reverse"


def product_bytes(model, seq_len: int) -> int:
    """Estimated bytes one batched product needs: the largest per-layer tensors alive at once
    (residual, MLP hidden, attention scores), ``seq * (4 d_model + 3 d_mlp + 2 n_heads seq)``
    fp32 values, times 2 for temporaries.

    >>> cfg = model.cfg
    >>> product_bytes(model, 20) == 2 * 4 * 20 * (4 * cfg.d_model + 3 * cfg.d_mlp + 2 * cfg.n_heads * 20)
    True
    """
    cfg = model.cfg
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    return 2 * 4 * seq_len * (4 * cfg.d_model + 3 * d_mlp + 2 * cfg.n_heads * seq_len)


def forward_bytes(model, seq_len: int, n_response: int | None = None) -> int:
    """Estimated bytes of the activations the primal forward pass keeps for the products:
    per layer, the residual-stream and attention tensors (``6 d_model``: norms, q/k/v, the
    attention output), the MLP hidden tensors (``4 d_mlp``: gate, up, activation, product)
    and the attention pattern (``n_heads * seq``), for every position; plus the logits and
    softmax at the ``n_response`` predicting positions (``3 d_vocab`` each). In fp32::

        4 * (n_layers * seq * (6 d_model + 4 d_mlp + n_heads seq) + 3 n_response d_vocab)

    How close it comes to what autograd saves is measured in docs/benchmarks.md.

    >>> forward_bytes(model, 20, 4) > forward_bytes(model, 20, 2) > forward_bytes(model, 10, 2)
    True
    """
    cfg = model.cfg
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    m = seq_len if n_response is None else n_response
    per_layer = seq_len * (6 * cfg.d_model + 4 * d_mlp + cfg.n_heads * seq_len)
    return 4 * (cfg.n_layers * per_layer + 3 * m * cfg.d_vocab)


def block_path_bytes(model, seq_len: int, n_response: int) -> int:
    """Estimated bytes the block-by-block reverse path (:mod:`mechit.attribution.blocks`)
    keeps besides its products: every block's input (``d_model`` per position and layer),
    one block's graph while it is recomputed (a layer's share of :func:`forward_bytes`) and
    the logits and softmax at the ``n_response`` predicting positions. In fp32::

        4 * (n_layers * seq * d_model + seq * (6 d_model + 4 d_mlp + n_heads seq) + 3 n_response d_vocab)

    >>> block_path_bytes(model, 200, 32) < forward_bytes(model, 200, 32)
    True
    """
    cfg = model.cfg
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    one_block = seq_len * (6 * cfg.d_model + 4 * d_mlp + cfg.n_heads * seq_len)
    return 4 * (cfg.n_layers * seq_len * cfg.d_model + one_block + 3 * n_response * cfg.d_vocab)


def cotangent_bytes(model, seq_len: int) -> int:
    """Bytes one response token's cotangent takes while it is carried through the blocks
    (the one at a block's output and the one at its input): ``2 * 4 * seq * d_model``.

    >>> cotangent_bytes(model, 10) == 8 * 10 * model.cfg.d_model
    True
    """
    return 8 * seq_len * model.cfg.d_model


def block_plan(model, seq_len: int, count: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> tuple[int, int]:
    """``(chunk, group)`` for the block-by-block reverse path: ``group`` response tokens'
    cotangents travel through the blocks together (every group recomputes each block once,
    so groups are as large as the budget allows) and ``chunk`` of them make one batched
    product, with ``group * cotangent_bytes + chunk * product_bytes <= memory_budget``
    (both at least 1; balanced like :func:`chunk_size`).

    >>> block_plan(model, 20, 32, 2**40), block_plan(model, 20, 32, 1)
    ((32, 32), (1, 1))
    """
    product, cotangent = product_bytes(model, seq_len), cotangent_bytes(model, seq_len)
    group = _balanced(count, (memory_budget - product) // cotangent)
    chunk = _balanced(group, (memory_budget - group * cotangent) // product)
    return chunk, group


def _balanced(count: int, largest: int) -> int:
    """The size of ``ceil(count / largest)`` equal parts of ``count`` (``largest`` clamped to 1..count)."""
    largest = max(1, min(count, largest))
    n_parts = math.ceil(count / largest)
    return math.ceil(count / n_parts)


def chunk_size(model, seq_len: int, count: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """How many of ``count`` products to batch so that one chunk fits in ``memory_budget`` bytes.

    At least 1; chunks are balanced (32 products that fit 24 at a time: 2 chunks of 16).

    >>> chunk_size(model, 232, 32, 24 * product_bytes(model, 232))
    16
    """
    return _balanced(count, memory_budget // product_bytes(model, seq_len))


def _primal(model, input_ids: Int[Tensor, " seq"], response_positions: Int[Tensor, " m"]):
    """One forward: embedding leaf ``e``, final-norm output ``h`` at the predicting positions, ``g``, ``p``."""
    before = response_positions - 1
    seen: dict[str, Tensor] = {}

    def leaf(t, hook):
        seen["e"] = t.detach().requires_grad_(True)
        return seen["e"]

    def keep(t, hook):
        seen["h"] = t[:, before]  # (1, m, d_model)
        seen["h_leaf"] = seen["h"].detach().requires_grad_(True)
        return seen["h_leaf"]

    trim = trim_hooks(model) if forward_bytes(model, len(input_ids), len(before)) > TRIM_ABOVE else []
    with torch.enable_grad():
        logits = model.run_with_hooks(
            input_ids[None], fwd_hooks=[("hook_embed", leaf), ("unembed.hook_in", keep), *trim]
        )  # (1, m, vocab)
        targets = input_ids[response_positions]
        probs = torch.softmax(upcast(logits[0]), dim=-1)[torch.arange(len(targets), device=targets.device), targets]  # (m,)
        (g,) = torch.autograd.grad(probs.sum(), seen["h_leaf"])  # (1, m, d_model); block-diagonal Jacobian
    return seen["e"], seen["h"], g[0].detach(), probs.detach()


def _reverse(e, h, g, prompt_positions, chunk) -> Float[Tensor, "n m"]:
    m = g.shape[0]
    e_prompt = e.detach()[0, prompt_positions]  # (n, d)
    columns = []
    for start in range(0, m, chunk):
        js = torch.arange(start, min(start + chunk, m), device=h.device)
        seeds = torch.zeros(len(js), *h.shape, dtype=h.dtype, device=h.device)  # (c, 1, m, d)
        seeds[torch.arange(len(js), device=h.device), 0, js] = g[js].to(h.dtype)
        (grads,) = torch.autograd.grad(h, e, grad_outputs=seeds, is_grads_batched=True, retain_graph=True)
        columns.append(torch.einsum("cnd,nd->nc", grads[:, 0, prompt_positions], e_prompt))  # (n, c)
    return torch.cat(columns, dim=1)


def _forward(model, input_ids, e, g, prompt_positions, response_positions, chunk) -> Float[Tensor, "n m"]:
    before = response_positions - 1
    e0 = e.detach()

    def final_norm_out(emb):
        seen = {}

        def put(t, hook):
            return emb

        def stop(t, hook):
            seen["h"] = t[:, before]
            raise _Stop

        try:
            model.run_with_hooks(input_ids[None], fwd_hooks=[("hook_embed", put), ("unembed.hook_in", stop)])
        except _Stop:
            pass
        return seen["h"]  # (1, m, d)

    def directional(tangent):
        return torch.func.jvp(final_norm_out, (e0,), (tangent,))[1]

    rows = []
    n = len(prompt_positions)
    for start in range(0, n, chunk):
        idx = torch.arange(start, min(start + chunk, n), device=e0.device)
        pos = prompt_positions[idx]
        tangents = torch.zeros(len(idx), *e0.shape, dtype=e0.dtype, device=e0.device)  # (c, 1, seq, d)
        tangents[torch.arange(len(idx), device=e0.device), 0, pos] = e0[0, pos]
        with torch.no_grad():
            dh = torch.func.vmap(directional)(tangents)  # (c, 1, m, d)
        rows.append(torch.einsum("cmd,md->cm", dh[:, 0], g.to(dh.dtype)))
    return torch.cat(rows, dim=0)


def gradient_x_input(
    model,
    input_ids: Int[Tensor, " seq"],
    prompt_positions: Int[Tensor, " n"],
    response_positions: Int[Tensor, " m"],
    *,
    method: Method = "auto",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    max_memory: int | None = None,
) -> tuple[Float[Tensor, "n m"], Float[Tensor, " m"]]:
    """Signed gradient × input ``A[i, j]`` of response probabilities, and the probabilities ``p_j``.

    ``input_ids`` is the whole sequence (one tokenisation of prompt and response); a
    response position must be > 0. ``method`` is ``"reverse"``, ``"forward"`` or
    ``"auto"`` (:func:`choose_method`); the values equal one backward per response token
    (:func:`mechit.attribution.reference.gradient_x_input_loop`) up to rounding, and in
    float32 they are no further from the float64 values than that loop's own float32
    values are (tests/real/test_attribution_real.py). Returns CPU tensors, float64 for a
    float64 model, else float32.

    ``max_memory`` (bytes; :func:`mechit.attribute` checks the block-by-block figure
    before calling) is checked again when the blocks turn out not to be a plain chain:
    the whole graph (:func:`forward_bytes`) plus one product must fit, else
    :class:`~mechit.errors.InputError` before that forward pass, and chunks shrink to
    what is left.

    >>> from mechit.tokens import encode
    >>> enc = encode(model.tokenizer, "Translate to Zel: the cat", " ka mira")
    >>> args = (model, enc.input_ids, enc.prompt_positions, enc.response_positions)
    >>> raw, p = gradient_x_input(*args, method="forward")
    >>> raw.shape, p.shape
    (torch.Size([6, 4]), torch.Size([4]))
    >>> bool((raw - gradient_x_input(*args, method="reverse")[0]).abs().max() < 1e-4 * raw.abs().max())
    True
    """
    device = device_of(model)
    input_ids = input_ids.to(device)
    prompt_positions = prompt_positions.to(device)
    response_positions = response_positions.to(device)
    n, m = len(prompt_positions), len(response_positions)
    chosen = choose_method(n, m, method)
    seq = input_ids.shape[0]
    with weights_frozen(model):
        chunk = chunk_size(model, seq, m if chosen == "reverse" else n, memory_budget)
        primal = block_primal(model, input_ids, response_positions) if chosen == "reverse" else None
        if primal is not None:
            chunk, group = block_plan(model, seq, m, memory_budget)
            raw, probs, e = block_reverse(model, primal, prompt_positions, chunk, group), primal.probs, primal.e
        elif chosen == "reverse":
            if max_memory is not None:
                chunk = chunk_size(model, seq, m, _whole_graph_room(model, seq, m, memory_budget, max_memory))
            e, h, g, probs = _primal(model, input_ids, response_positions)
            raw = _reverse(e, h, g, prompt_positions, chunk)
        else:
            e, h, g, probs = _primal(model, input_ids, response_positions)
            del h
            raw = _forward(model, input_ids, e, g, prompt_positions, response_positions, chunk)
    dtype = torch.float64 if e.dtype == torch.float64 else torch.float32
    return raw.detach().to(dtype), probs.to(dtype)  # on the model's device; results leave through .cpu()


def _whole_graph_room(model, seq: int, m: int, memory_budget: int, max_memory: int) -> int:
    """Bytes left for products beside the whole forward graph under ``max_memory``;
    InputError if not even one product fits."""
    graph, product = forward_bytes(model, seq, m), product_bytes(model, seq)
    if graph + product > max_memory:
        raise InputError(f"field 'prompt': prompt + response are {seq} tokens; this model's blocks are not a plain "
                         f"chain, so the whole forward graph is kept: ~{(graph + product) / 2**20:.1f} MiB (forward "
                         f"pass ~{graph / 2**20:.1f} MiB + one gradient product), more than --max-memory "
                         f"{max_memory / 2**20:.1f} MiB; raise --max-memory or shorten the example")
    return min(memory_budget, max_memory - graph)
