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
    "load_model": "mechit.models", "load_pair": "mechit.models", "ModelPair": "mechit.models",
    "check_pair": "mechit.models", "describe": "mechit.arch.weights",
    "encode": "mechit.tokens", "Encoded": "mechit.tokens", "span_mask": "mechit.tokens",
    "group_words": "mechit.tokens", "word_vectors": "mechit.tokens", "WordVectors": "mechit.tokens",
    "INSTRUCTION_VERBS": "mechit.data.wordlists", "general_verbs": "mechit.data.wordlists",
    "frequent_words": "mechit.data.wordlists",
    "neuron_tokens": "mechit.ffn.neurons", "ffn_concepts": "mechit.ffn.concepts", "ffn_rotation": "mechit.ffn.rotation", "Rotation": "mechit.ffn.rotation", "LexiconLabeller": "mechit.ffn.lexicon", "EndpointLabeller": "mechit.ffn.labellers", "LocalModelLabeller": "mechit.ffn.labellers", "label_concepts": "mechit.ffn.labellers", "label_proportions": "mechit.ffn.labels", "label_table": "mechit.ffn.labels",
    "attribute": "mechit.attribution.example", "Attribution": "mechit.attribution.example", "read_prompts": "mechit.data.prompts",
    "head_pairs": "mechit.heads.pairs", "head_knowledge": "mechit.heads.pairs", "head_shift": "mechit.heads.shift", "head_change_scores": "mechit.heads.shift", "verb_fractions": "mechit.heads.shift", "instruction_attention": "mechit.heads.attention", "get_similarity": "mechit.heads.similarity",
    "write_report": "mechit.views.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mechit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
