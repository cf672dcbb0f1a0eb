"""mechit: what instruction tuning changes inside a language model.

Load a pre-trained model and its instruction-tuned version, run the same analysis on
both, compare the two tidy DataFrames:

>>> import mechit
>>> pair = mechit.load_pair()                         # the embedded organism pair
>>> a = mechit.attribute(pair.tuned, "Translate to Zel: the cat", instruction_spans=[(0, 16)])
>>> a.to_frame().columns[:3].tolist()
['position', 'token', 'char_start']
>>> pair.run(mechit.instruction_attention, [{"id": "a", "prompt": "Translate to Zel: the cat", "response": " zu",
...          "instruction_spans": [(0, 16)]}], progress=False)["model"].unique().tolist()
['base', 'tuned']

Public names are imported on first use, so ``import mechit`` is cheap (and ``mechit
--help`` fast: it does not import torch).
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
    "tag_model": "mechit.models",
    "check_pair": "mechit.models", "describe": "mechit.arch.weights",
    "encode": "mechit.tokens", "Encoded": "mechit.tokens", "span_mask": "mechit.tokens",
    "group_words": "mechit.tokens", "word_vectors": "mechit.tokens", "WordVectors": "mechit.tokens",
    "INSTRUCTION_VERBS": "mechit.data.wordlists", "general_verbs": "mechit.data.wordlists",
    "frequent_words": "mechit.data.wordlists",
    "neuron_tokens": "mechit.ffn.neurons", "ffn_concepts": "mechit.ffn.concepts", "ffn_rotation": "mechit.ffn.rotation", "Rotation": "mechit.ffn.rotation", "LexiconLabeller": "mechit.ffn.lexicon", "EndpointLabeller": "mechit.ffn.labellers", "LocalModelLabeller": "mechit.ffn.labellers", "label_concepts": "mechit.ffn.labellers", "label_proportions": "mechit.ffn.labels", "label_table": "mechit.ffn.labels",
    "ablate": "mechit.attribution.ablation", "ablate_prompts": "mechit.attribution.ablation",
    "attribute": "mechit.attribution.example", "Attribution": "mechit.attribution.example", "read_prompts": "mechit.data.prompts",
    "head_pairs": "mechit.heads.pairs", "head_knowledge": "mechit.heads.pairs", "head_shift": "mechit.heads.shift", "head_change_scores": "mechit.heads.shift", "verb_fractions": "mechit.heads.shift", "instruction_attention": "mechit.heads.attention", "get_similarity": "mechit.heads.similarity",
    "attribute_dataset": "mechit.attribution.dataset", "write_dataset_tables": "mechit.attribution.dataset",
    "run_summary": "mechit.attribution.dataset",
    "compare": "mechit.pipeline.run", "Options": "mechit.pipeline.context",
    "headline": "mechit.views.findings", "render_report": "mechit.views.report", "write_report": "mechit.views.report",
    "welch": "mechit.stats", "compare_models": "mechit.stats", "compare_labels": "mechit.stats",
    "RecordStore": "mechit.store", "Manifest": "mechit.store", "write_table": "mechit.store",
    "write_json": "mechit.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mechit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
