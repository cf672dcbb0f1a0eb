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
    "check_pair": "mechit.models", "describe": "mechit.weight_views",
    "encode": "mechit.tokens", "Encoded": "mechit.tokens", "span_mask": "mechit.tokens",
    "group_words": "mechit.tokens", "word_vectors": "mechit.tokens", "WordVectors": "mechit.tokens",
    "INSTRUCTION_VERBS": "mechit.wordlists", "general_verbs": "mechit.wordlists",
    "frequent_words": "mechit.wordlists",
    "neuron_tokens": "mechit.ffn", "ffn_concepts": "mechit.ffn", "ffn_rotation": "mechit.rotation", "Rotation": "mechit.rotation", "LexiconLabeller": "mechit.labels", "EndpointLabeller": "mechit.labels", "LocalModelLabeller": "mechit.labels", "label_concepts": "mechit.labels", "label_proportions": "mechit.labels", "label_table": "mechit.labels",
    "attribute": "mechit.attribution", "Attribution": "mechit.attribution", "read_prompts": "mechit.prompts",
    "head_pairs": "mechit.heads", "head_knowledge": "mechit.heads", "head_shift": "mechit.verb_shift", "head_change_scores": "mechit.verb_shift", "verb_fractions": "mechit.verb_shift", "instruction_attention": "mechit.attention_mass", "get_similarity": "mechit.similarity",
    "write_report": "mechit.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mechit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
