"""Views of mechit's frames for notebooks and HTML export, one module per analysis.

- :mod:`mechit.views.heads`: base vs tuned attention patterns side by side
  (:func:`attention`), top word pairs of a head for both models (:func:`head_pairs_table`).

Every view returns an object that renders in Jupyter (``_repr_html_``) and has
``save(path)`` to write a self-contained HTML file (no network needed).

>>> import mechit.views as viz
>>> from mechit.heads.attention import pattern_table
>>> table = pair.run(pattern_table, "Translate to Zel: the cat", layers=[0])
>>> from mechit.tokens import encode
>>> tokens = encode(model.tokenizer, "Translate to Zel: the cat").tokens
>>> viz.attention(table, tokens).save("attn.html").exists()
True
"""

from __future__ import annotations

import importlib

# public name -> module that defines it (one line per module; add yours)
_EXPORTS = {
    "attention": "mechit.views.heads", "head_pairs_table": "mechit.views.heads", "HTMLView": "mechit.views.heads",
    "neuron_view": "mechit.views.ffn", "plot_label_proportions": "mechit.views.ffn", "plot_principal_angles": "mechit.views.ffn", "plot_neuron_cosines": "mechit.views.ffn", "save_figure": "mechit.views.ffn",
    "top_head_pairs": "mechit.views.heads",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mechit.views' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
