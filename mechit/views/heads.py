"""Attention views: base vs tuned attention patterns (circuitsvis) and head word-pair tables.

>>> import mechit, mechit.views as viz                                   # doctest: +SKIP
>>> pair = mechit.load_pair()                                           # doctest: +SKIP
>>> view = viz.attention(pair, "Translate to Zel: the cat", layers=[0, 1])   # doctest: +SKIP
>>> view                       # renders in a notebook                  # doctest: +SKIP
>>> view.save("attention.html")                                         # doctest: +SKIP
"""

from __future__ import annotations


import html
from pathlib import Path
from typing import Iterable

import pandas as pd

from mechit.errors import InputError

_STYLE = """<style>
.mechit-row{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap}
.mechit-col{flex:1 1 420px;min-width:320px}
.mechit-col h3{font-family:sans-serif;margin:4px 0}
.mechit-table{border-collapse:collapse;font-family:sans-serif;font-size:13px}
.mechit-table td,.mechit-table th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}
</style>"""


class HTMLView:
    """An HTML fragment that renders in Jupyter and saves as a standalone page.

    >>> view = HTMLView("<p>hi</p>", title="demo")
    >>> "<p>hi</p>" in view._repr_html_()
    True
    """

    def __init__(self, body: str, *, title: str = "mechit"):
        self.body = body
        self.title = title

    def _repr_html_(self) -> str:
        return _STYLE + self.body

    def html(self) -> str:
        """A complete HTML document (scripts inlined: opens offline)."""
        return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"</head><body>\n{self._repr_html_()}\n</body></html>\n")

    def save(self, path: str | Path) -> Path:
        """Write :meth:`html` to ``path`` atomically; returns the path."""
        from mechit.store import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(self.html(), encoding="utf-8")
        return path


def _models(pair) -> list[tuple[str, object]]:
    if hasattr(pair, "base") and hasattr(pair, "tuned"):
        return [("base", pair.base), ("tuned", pair.tuned)]
    if isinstance(pair, (tuple, list)) and len(pair) == 2:
        return [("base", pair[0]), ("tuned", pair[1])]
    raise InputError("attention() needs a ModelPair or a (base, tuned) tuple of models")


def attention_patterns(model, prompt: str, response: str = "", *, layers=None, chat_template: bool = False):
    """Tokens and attention patterns of one forward pass: ``(tokens, {layer: Float[heads, pos, pos]})``,
    read from ``blocks.{L}.attn.hook_pattern`` under ``torch.no_grad``.

    >>> tokens, patterns = attention_patterns(model, "Say hi.", layers=[0])   # doctest: +SKIP
    """
    import torch

    from mechit.arch.weights import select_indices
    from mechit.tokens import encode

    layer_list = select_indices("layer", layers, model.cfg.n_layers)
    names = {f"blocks.{layer}.attn.hook_pattern": layer for layer in layer_list}
    enc = encode(model.tokenizer, prompt, response, chat_template=chat_template)
    with torch.no_grad():
        _, cache = model.run_with_cache(enc.input_ids[None], names_filter=lambda name: name in names)
    return enc.tokens, {layer: cache[name][0].float() for name, layer in names.items()}


def attention(
    pair, prompt: str, response: str = "", *, layers: int | Iterable[int] | None = None,
    heads: int | Iterable[int] | None = None, chat_template: bool = False,
) -> HTMLView:
    """Base and tuned attention patterns side by side (circuitsvis ``attention_heads``; click a
    head to enlarge it). One panel per model holding the chosen heads of the chosen layers
    (default: all), named ``L{layer}H{head}``.

    >>> viz.attention(pair, "Translate to Zel: the cat", layers=0).save("attn.html")  # doctest: +SKIP
    """
    import torch
    from circuitsvis.attention import attention_heads

    from mechit.arch.weights import select_indices

    columns = []
    for name, model in _models(pair):
        head_list = select_indices("head", heads, model.cfg.n_heads)
        tokens, patterns = attention_patterns(model, prompt, response, layers=layers, chat_template=chat_template)
        stacked = torch.cat([p[head_list] for p in patterns.values()])  # (layers*heads, pos, pos)
        names = [f"L{layer}H{head}" for layer in patterns for head in head_list]
        rendered = attention_heads(attention=stacked.numpy(), tokens=tokens, attention_head_names=names)
        columns.append(f"<div class='mechit-col'><h3>{name}</h3>{rendered.local_src}</div>")
    return HTMLView(f"<div class='mechit-row'>{''.join(columns)}</div>", title=f"attention: {prompt[:60]}")


def top_head_pairs(pairs: pd.DataFrame, layer: int, head: int, top: int = 20) -> pd.DataFrame:
    """The top ``top`` distinct pairs of one head: qk-dims pairs by number of dimensions
    (head knowledge first), then best similarity; qk/ov pairs by rank. Columns: pair
    ("a=b"), n_dims, similarity, score.

    >>> df = pd.DataFrame({"layer": 0, "head": 0, "dim": [1, 2, 3], "rank": 0, "word_a": ["a", "a", "c"],
    ...                    "word_b": ["b", "b", "d"], "score": [1.0, 2.0, 3.0], "similarity": [.2, .3, .9]})
    >>> top_head_pairs(df, 0, 0)["pair"].tolist()
    ['a=b', 'c=d']
    """
    sub = pairs[(pairs["layer"] == layer) & (pairs["head"] == head)]
    if sub["dim"].notna().any():
        sub = (sub.groupby(["word_a", "word_b"], as_index=False, observed=True)
               .agg(n_dims=("dim", "nunique"), similarity=("similarity", "max"), score=("score", "max"))
               .sort_values(["n_dims", "similarity", "word_a", "word_b"], ascending=[False, False, True, True]))
    else:
        sub = sub.sort_values("rank").assign(n_dims=pd.NA)
    out = sub.head(top)
    return pd.DataFrame({"pair": (out["word_a"].astype(str) + "=" + out["word_b"].astype(str)).tolist(),
                         "n_dims": out["n_dims"].tolist(), "similarity": out["similarity"].tolist(),
                         "score": out["score"].tolist()})


def head_pairs_table(pairs_base: pd.DataFrame, pairs_tuned: pd.DataFrame, layer: int, head: int,
                     top: int = 20) -> HTMLView:
    """The top pairs of one head for both models, side by side (:func:`top_head_pairs`).
    The aligned frame is ``view.frame``.

    >>> view = head_pairs_table(pairs_base, pairs_tuned, layer=3, head=1)   # doctest: +SKIP
    """
    base, tuned = top_head_pairs(pairs_base, layer, head, top), top_head_pairs(pairs_tuned, layer, head, top)
    frame = pd.concat([base.add_prefix("base_"), tuned.add_prefix("tuned_")], axis=1)
    columns = []
    for name, sub in (("base", base), ("tuned", tuned)):
        table = sub.to_html(index=False, classes="mechit-table", float_format=lambda x: f"{x:.3f}", na_rep="")
        columns.append(f"<div class='mechit-col'><h3>{name}: layer {layer}, head {head}</h3>{table}</div>")
    view = HTMLView(f"<div class='mechit-row'>{''.join(columns)}</div>", title=f"head pairs L{layer}H{head}")
    view.frame = frame
    return view

