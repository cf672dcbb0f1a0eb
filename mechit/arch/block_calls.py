"""How a decoder block is called and what it returns, as TransformerBridge runs Hugging Face's
blocks: the residual stream comes first (positionally, or as ``hidden_states=``), the other
arguments (rotary embeddings, masks, a generation cache) follow, and the output is the new
residual stream, alone or first in a tuple. The block-by-block attribution path
(:mod:`mechit.attribution.blocks`) records calls and replays them through these helpers.

>>> x = torch.ones(1, 3, 4)
>>> block_input((), {"hidden_states": x, "use_cache": True, "position_ids": None})[0] is x
True
>>> block_input((x, None), {"use_cache": True})[2]
{}
>>> block_output((x, None)) is x, block_output(x) is x
(True, True)
"""

from __future__ import annotations

from torch import Tensor
from transformers.cache_utils import Cache

# Keyword arguments of a block call that belong to the generation cache: dropped (and a
# cache passed positionally replaced by None) when a call is replayed, so a replay
# appends nothing to a cache.
CACHE_KWARGS = frozenset({"past_key_values", "past_key_value", "layer_past", "use_cache"})


def block_input(args: tuple, kwargs: dict) -> tuple[Tensor, tuple, dict]:
    """``(x, rest, kwargs)`` of one block call: its residual-stream input ``x`` (1, seq,
    d_model), the other positional arguments and the keyword arguments, with every
    generation cache left out (a positional one becomes None; GPT-2 blocks get theirs
    positionally), so that ``block(x, *rest, **kwargs)`` replays the call.

    >>> x = torch.zeros(1, 2, 4)
    >>> block_input((x, "mask"), {"layer_past": object(), "position_embeddings": "rope"})[1:]
    (('mask',), {'position_embeddings': 'rope'})
    """
    x = args[0] if args else kwargs["hidden_states"]
    rest = tuple(None if isinstance(a, Cache) else a for a in args[1:])
    kept = {k: v for k, v in kwargs.items()
            if k != "hidden_states" and k not in CACHE_KWARGS and not isinstance(v, Cache)}
    return x, rest, kept


def with_block_input(args: tuple, kwargs: dict, x: Tensor) -> tuple[tuple, dict]:
    """The same call (caches kept) with ``x`` as its residual-stream input, passed positionally
    (what a forward pre-hook returns).

    >>> with_block_input((), {"hidden_states": torch.ones(1), "use_cache": False}, torch.zeros(1))
    ((tensor([0.]),), {'use_cache': False})
    """
    return (x, *args[1:]), {k: v for k, v in kwargs.items() if k != "hidden_states"}


def block_output(output) -> Tensor:
    """The residual stream a block returns (alone, or first in a tuple).

    >>> block_output((torch.ones(1), "attention weights"))
    tensor([1.])
    """
    return output[0] if isinstance(output, (tuple, list)) else output


def with_block_output(output, x: Tensor):
    """``output`` with its residual stream replaced by ``x`` (same container type).

    >>> with_block_output((torch.ones(1), "extra"), torch.zeros(1))
    (tensor([0.]), 'extra')
    """
    if isinstance(output, (tuple, list)):
        return type(output)((x, *output[1:]))
    return x
