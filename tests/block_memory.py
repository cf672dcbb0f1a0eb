"""What the block-by-block reverse path really keeps, for the memory-estimate tests
(tests/reliability/test_memory_guard.py, tests/real/test_attribution_real.py)."""

from __future__ import annotations

import torch


def block_path_kept_bytes(model, ids, response_positions) -> int:
    """Bytes of every block's saved input plus the most any one recomputed block's graph
    saves (saved-tensor hooks; parameters, buffers and the block input excluded)."""
    import mechit.attribution_grad as grad
    from mechit.attribution_blocks import block_primal

    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    with grad._weights_frozen(model):
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

            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                block(x.detach().requires_grad_(True), *rest, **kwargs)
            biggest = max(biggest, sum(storages.values()))
    return inputs + biggest
