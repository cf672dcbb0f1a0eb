"""What the block-by-block reverse path really keeps, for the memory-estimate tests
(tests/reliability/test_memory_guard.py, tests/real/test_attribution_real.py)."""

from __future__ import annotations

import torch


def block_path_kept_bytes(model, ids, response_positions) -> int:
    """Bytes of every block's saved input plus the most any one recomputed block keeps: what
    its graph saves (saved-tensor hooks), or for a block that takes the hand-written Llama
    products, the tensors of :class:`~mechit.arch.llama_vjp.LlamaSaved` (parameters,
    buffers, the block input and its rotary tables excluded)."""
    from dataclasses import fields

    from mechit.attribution.blocks import block_primal, weights_frozen
    from mechit.arch.llama_vjp import llama_forward, llama_weights
    from mechit.arch.families import family

    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    with weights_frozen(model):
        primal = block_primal(model, ids, response_positions)
        inputs = sum(x.untyped_storage().nbytes() for x, _, _ in primal.inputs)
        biggest = 0
        for block, (x, rest, kwargs) in zip(model.blocks, primal.inputs):
            storages: dict[int, int] = {}
            skip = own | {x.untyped_storage().data_ptr()}

            def pack(t, storages=storages, skip=skip):
                if t.untyped_storage().data_ptr() not in skip:
                    storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
                return t

            weights = llama_weights(block) if family(model).block_vjp is not None else None
            if weights is not None:
                cos, sin = (t[0] for t in kwargs["position_embeddings"])
                skip |= {cos.untyped_storage().data_ptr(), sin.untyped_storage().data_ptr()}
                _, saved = llama_forward(weights, x[0], cos, sin)
                for f in fields(saved):
                    pack(getattr(saved, f.name))
            else:
                with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    block(x.detach().requires_grad_(True), *rest, **kwargs)
            biggest = max(biggest, sum(storages.values()))
    return inputs + biggest
