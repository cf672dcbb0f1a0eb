"""Reverse-mode gradient × input block by block: one forward without a graph, then each
block recomputed once and its vector-Jacobian products taken for all response tokens.

The whole-graph path (:func:`mechit.attribution.grad.gradient_x_input` with the graph of
every block kept) holds the saved activations of all layers at once (sizes measured on
SmolLM2-135M are in docs/benchmarks.md). Here the forward pass keeps only each block's
input (``n_layers * seq * d_model`` values), then, from the last block to the first:

1. the block runs again on its saved input, with autograd on (one block's graph);
2. the cotangents of all response tokens at the block's output are pulled back to its
   input, ``chunk`` at a time (``torch.autograd.grad(..., is_grads_batched=True)``).

The values are those of the whole-graph path (same operations, same order within a
block); the cost is one more forward pass, and the peak memory is one block's graph.

It applies to a model whose blocks form a plain chain: block ``l + 1`` receives exactly
block ``l``'s output, the embeddings reach the blocks only through the first block's
input, and the final norm and unembedding see only the last block's output.
:func:`block_primal` checks all three during its forward pass and returns None when one
fails (a model that feeds embeddings to every layer, for one); the caller then uses the
whole-graph path. How a block is called and what it returns is an architecture fact
(:mod:`mechit.arch.block_calls`); hand-written products come from the family table.

>>> from mechit.tokens import encode
>>> enc = encode(model.tokenizer, "Translate to Zel: the cat", " ka mira")
>>> with weights_frozen(model):
...     primal = block_primal(model, enc.input_ids, enc.response_positions)
...     raw = block_reverse(model, primal, enc.prompt_positions, chunk=4)
>>> raw.shape  # (n_prompt, n_response)
torch.Size([6, 4])
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechit.arch.block_calls import (
    block_input,
    block_output,
    with_block_input,
    with_block_output,
)
from mechit.arch.families import family
from mechit.runtime import upcast


@dataclass
class BlockPrimal:
    """What one graph-free forward pass leaves for :func:`block_reverse`.

    ``e``: the embedding leaf (1, seq, d_model); ``x0``: the first block's input as a
    function of ``e`` (its graph kept; often ``e`` itself); ``inputs``: each block's input,
    detached (1, seq, d_model), with the other arguments of its call; ``g``: the gradient
    of each response token's probability with respect to the last block's output at the
    position that predicts it (m, d_model); ``before``: those positions (m,); ``probs``:
    the probabilities (m,).
    """

    e: Tensor
    x0: Tensor
    inputs: list[tuple[Tensor, tuple, dict]]
    g: Float[Tensor, "m d"]
    before: Int[Tensor, " m"]
    probs: Float[Tensor, " m"]
    last: Float[Tensor, "1 seq d"]


@contextmanager
def weights_frozen(model) -> Iterator[None]:
    """Parameters stop requiring grad for the duration (restored after): autograd then keeps
    no activations that only weight gradients would need.

    >>> with weights_frozen(model):
    ...     frozen = any(p.requires_grad for p in model.parameters())
    >>> frozen, all(p.requires_grad for p in model.parameters())
    (False, True)
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def block_primal(model, input_ids: Int[Tensor, " seq"], response_positions: Int[Tensor, " m"]
                 ) -> BlockPrimal | None:
    """One forward pass in which no block builds a graph; None if the blocks are not a plain chain.

    Call with the model's parameters frozen (``requires_grad=False``): each block then
    receives a detached input and nothing inside it is recorded. A hook on
    ``unembed.hook_in`` keeps the final-norm output only at the ``m`` predicting
    positions, so full-vocabulary logits exist only there.

    >>> ids = torch.tensor([1, 5, 6, 7, 8])
    >>> with weights_frozen(model):
    ...     primal = block_primal(model, ids, torch.tensor([3, 4]))
    >>> len(primal.inputs) == model.cfg.n_layers, primal.g.shape == (2, model.cfg.d_model)
    (True, True)
    >>> block_primal(model, ids, torch.tensor([3, 4])) is None  # trainable weights: refused
    True
    """
    blocks = list(model.blocks)
    before = response_positions - 1
    inputs: list[tuple[Tensor, tuple, dict]] = []
    state: dict = {"chain": True}

    def leaf(t, hook):
        state["e"] = t.detach().requires_grad_(True)
        return state["e"]

    def at_predicting_positions(t, hook):
        return t[:, before]

    def pre_hook(index):
        def hook(module, args, kwargs):
            x, rest, replay = block_input(args, kwargs)
            if index == 0:
                state["x0"] = x
            elif state.get("out") is None or not torch.equal(x, state["out"]):
                state["chain"] = False  # something between two blocks changed the residual stream
            x = x.detach()
            inputs.append((x, rest, replay))
            return with_block_input(args, kwargs, x)
        return hook

    def post_hook(index):
        def hook(module, args, kwargs, output):
            out = block_output(output)
            if out.requires_grad:
                state["chain"] = False  # the embeddings reach this block by another way
            state["out"] = out
            if index < len(blocks) - 1:
                return None
            state["last"] = out.detach().requires_grad_(True)
            return with_block_output(output, state["last"])
        return hook

    handles = []
    try:
        for index, block in enumerate(blocks):
            handles.append(block.register_forward_pre_hook(pre_hook(index), with_kwargs=True))
            handles.append(block.register_forward_hook(post_hook(index), with_kwargs=True))
        with torch.enable_grad():
            logits = model.run_with_hooks(input_ids[None], fwd_hooks=[
                ("hook_embed", leaf), ("unembed.hook_in", at_predicting_positions)])  # (1, m, vocab)
            targets = input_ids[response_positions]
            probs = torch.softmax(upcast(logits[0]), dim=-1)[torch.arange(len(targets), device=targets.device), targets]
            if len(inputs) != len(blocks) or not state["chain"] or "last" not in state:
                return None
            g, g_e = torch.autograd.grad(probs.sum(), [state["last"], state["e"]], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    if g_e is not None:
        return None  # the unembedding sees the embeddings by a path around the blocks
    return BlockPrimal(e=state["e"], x0=state["x0"], inputs=inputs, g=g[0, before].detach(), before=before,
                       probs=probs.detach(), last=state["last"].detach())


def block_reverse(model, primal: BlockPrimal, prompt_positions: Int[Tensor, " n"], chunk: int,
                  group: int | None = None) -> Float[Tensor, "n m"]:
    """``A[i, j] = < d p_j / d e_i , e_i >`` from :func:`block_primal`'s output.

    ``chunk``: products per batched vector-Jacobian product; ``group``: response tokens
    whose cotangents are carried through all blocks together (each group recomputes every
    block once; None: all ``m`` at once). The cotangents of a group take
    ``2 * group * seq * d_model`` values. Blocks of a family with a ``block_vjp`` (the family
    table, :mod:`mechit.arch.families`) take its hand-written products (autograd where it declines).

    >>> ids = torch.tensor([1, 5, 6, 7, 8])
    >>> with weights_frozen(model):
    ...     primal = block_primal(model, ids, torch.tensor([3, 4]))
    ...     one, two = (block_reverse(model, primal, torch.tensor([1, 2]), chunk=1, group=g) for g in (1, 2))
    >>> one.shape, bool((one - two).abs().max() <= 1e-4 * one.abs().max())
    (torch.Size([2, 2]), True)
    """
    blocks = list(model.blocks)
    by_hand = family(model).block_vjp
    m = len(primal.before)
    group = m if group is None else max(1, group)
    e = primal.e
    e_prompt = e.detach()[0, prompt_positions]  # (n, d)
    columns = []
    for first in range(0, m, group):
        js = torch.arange(first, min(first + group, m), device=e.device)
        cotangent = torch.zeros(len(js), *e.shape, dtype=primal.g.dtype, device=e.device)  # (c, 1, seq, d)
        cotangent[torch.arange(len(js), device=e.device), 0, primal.before[js]] = primal.g[js]
        for index in reversed(range(len(blocks))):
            x, rest, kwargs = primal.inputs[index]
            if by_hand is not None and not rest:
                last = index == len(blocks) - 1
                output = primal.last if last else primal.inputs[index + 1][0]
                pulled = by_hand(blocks[index], x, kwargs, output, cotangent, primal.before[js] + 1, chunk,
                                         one_row=last)
                if pulled is not None:
                    cotangent = pulled
                    continue
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                out = block_output(blocks[index](x, *rest, **kwargs))
                cotangent = _pull_back(out, x, cotangent.to(out.dtype), chunk)
            del out, x
        with torch.enable_grad():
            grads = _pull_back(primal.x0, e, cotangent.to(primal.x0.dtype), chunk)  # (c, 1, seq, d)
        columns.append(torch.einsum("cnd,nd->nc", grads[:, 0, prompt_positions], e_prompt))  # (n, c)
    return torch.cat(columns, dim=1)


def _pull_back(out: Tensor, x: Tensor, cotangents: Float[Tensor, "c 1 seq d"], chunk: int
               ) -> Float[Tensor, "c 1 seq d"]:
    """``(d out / d x)^T v`` for each cotangent ``v``, ``chunk`` at a time."""
    if out is x:
        return cotangents
    parts = [torch.autograd.grad(out, x, grad_outputs=cotangents[start:start + chunk], is_grads_batched=True,
                                 retain_graph=True)[0]
             for start in range(0, cotangents.shape[0], chunk)]
    return torch.cat(parts)
