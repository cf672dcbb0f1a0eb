"""mechit: what instruction tuning changes inside a language model.

Load a pre-trained model and its instruction-tuned version, run the same analysis on
both, compare the two tidy DataFrames:

>>> import mechit                                     # doctest: +SKIP
>>> pair = mechit.load_pair()                         # the embedded organism pair
>>> a = mechit.attribute(pair.tuned, "Translate to Zel: the cat")

Public names are imported on first use, so ``import mechit`` is cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "MechitError": "mechit.errors",
    "SpecError": "mechit.errors",
    "IncompatiblePairError": "mechit.errors",
    "InputError": "mechit.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mechit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
