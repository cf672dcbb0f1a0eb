"""The paper's procedure for gradient × input (PAPER.md §1.1–1.2), written plainly: one
forward pass with full-vocabulary logits at every position, then one backward pass per
response token. It is slow and serves as the reference the fast products of
:mod:`mechit.attribution.grad` are tested and benchmarked against.

>>> from mechit.tokens import encode
>>> enc = encode(model.tokenizer, "Translate to Zel: the cat", " ka mira")
>>> raw, p = gradient_x_input_loop(model, enc.input_ids, enc.prompt_positions, enc.response_positions)
>>> raw.shape, p.shape
(torch.Size([6, 4]), torch.Size([4]))
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechit.runtime import device_of, upcast


def gradient_x_input_loop(
    model,
    input_ids: Int[Tensor, " seq"],
    prompt_positions: Int[Tensor, " n"],
    response_positions: Int[Tensor, " m"],
    *,
    weight_grads: bool = False,
) -> tuple[Float[Tensor, "n m"], Float[Tensor, " m"]]:
    """Signed gradient × input ``A[i, j]`` and probabilities ``p_j`` by the paper's procedure:
    one forward with full-vocabulary logits everywhere, then one backward per response token.

    ``weight_grads=True`` does exactly what the released code does: ``p_j.backward()``,
    which also accumulates gradients into every parameter (then zeroed); otherwise only
    the embedding gradient is computed.

    The fast products agree with it up to float32 rounding:

    >>> from mechit.attribution.grad import gradient_x_input
    >>> from mechit.tokens import encode
    >>> enc = encode(model.tokenizer, "Say it in Zel: the cat", " ka mira")
    >>> args = (model, enc.input_ids, enc.prompt_positions, enc.response_positions)
    >>> (ref, _), (fast, _) = gradient_x_input_loop(*args), gradient_x_input(*args)
    >>> bool((fast - ref).abs().max() < 1e-4 * ref.abs().max())
    True
    """
    device = device_of(model)
    input_ids, prompt_positions, response_positions = (
        t.to(device) for t in (input_ids, prompt_positions, response_positions))
    seen = {}

    def leaf(t, hook):
        seen["e"] = t.detach().requires_grad_(True)
        return seen["e"]

    with torch.enable_grad():
        logits = model.run_with_hooks(input_ids[None], fwd_hooks=[("hook_embed", leaf)])  # (1, seq, vocab)
        all_probs = torch.softmax(upcast(logits[0]), dim=-1)  # (seq, vocab)
        targets = input_ids[response_positions]
        probs = all_probs[response_positions - 1, targets]
        e = seen["e"]
        e_prompt = e.detach()[0, prompt_positions]
        columns = []
        for j in range(len(response_positions)):
            if weight_grads:
                model.zero_grad(set_to_none=False)
                e.grad = None
                probs[j].backward(retain_graph=True)
                grad = e.grad
            else:
                (grad,) = torch.autograd.grad(probs[j], e, retain_graph=True)
            columns.append((grad[0, prompt_positions] * e_prompt).sum(-1))
    dtype = torch.float64 if e.dtype == torch.float64 else torch.float32
    return torch.stack(columns, dim=1).detach().to(dtype).cpu(), probs.detach().to(dtype).cpu()
