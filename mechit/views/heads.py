"""Attention views: base vs tuned attention patterns (circuitsvis) and head word-pair tables.
They take frames (:mod:`mechit.heads.attention` makes the patterns) and never run a model.

>>> from mechit.heads.attention import pattern_table
>>> from mechit.tokens import encode
>>> prompt = "Translate to Zel: the cat"
>>> view = attention(pair.run(pattern_table, prompt, layers=[0, 1]), encode(model.tokenizer, prompt).tokens)
>>> view.save("attention.html").read_text().count("CircuitsVis.render(")     # one panel per model
2
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from mechit.errors import InputError
from mechit.store import atomic_path

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
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(self.html(), encoding="utf-8")
        return path


def _token_list(tokens: Sequence[str] | pd.DataFrame) -> list[str]:
    """Token strings in position order: a list, or a frame with ``position`` and ``text`` or
    ``token`` (the ``attention_tokens`` table of ``mechit compare``)."""
    if isinstance(tokens, pd.DataFrame):
        ordered = tokens.sort_values("position") if "position" in tokens else tokens
        return [str(t) for t in ordered["text" if "text" in ordered else "token"]]
    return [str(t) for t in tokens]


def attention(
    patterns: pd.DataFrame, tokens: Sequence[str] | pd.DataFrame, *, layers: int | Iterable[int] | None = None,
    heads: int | Iterable[int] | None = None, title: str = "attention",
) -> HTMLView:
    """Base and tuned attention patterns side by side (circuitsvis ``attention_heads``; click a
    head to enlarge it). One panel per model holding the chosen heads of the chosen layers
    (default: every head in the frame), named ``L{layer}H{head}``.

    ``patterns``: a tidy frame with columns model, layer, head, query, key, weight (the
    ``attention_patterns`` table of ``mechit compare``, or ``pair.run(pattern_table, prompt)``
    with :func:`mechit.heads.attention.pattern_table`); positions it lacks are zero. ``tokens``:
    the token strings (or the ``attention_tokens`` table).

    >>> from mechit.heads.attention import pattern_table
    >>> from mechit.tokens import encode
    >>> table = pair.run(pattern_table, "Translate to Zel: the cat", layers=0)
    >>> tokens = encode(pair.tuned.tokenizer, "Translate to Zel: the cat").tokens
    >>> attention(table, tokens, heads=[0, 1]).save("attn.html").exists()
    True
    """
    if not {"model", "layer", "head", "query", "key", "weight"} <= set(patterns.columns):
        raise InputError("attention() needs a frame with columns model, layer, head, query, key, weight "
                         "(mechit compare's attention_patterns table, or pair.run(pattern_table, prompt))")
    token_list = _token_list(tokens)
    n = len(token_list)
    if len(patterns) and max(patterns["query"].max(), patterns["key"].max()) >= n:
        raise InputError(f"the patterns reach position {max(patterns['query'].max(), patterns['key'].max())} "
                         f"but there are only {n} tokens: pass the tokens of the same prompt")
    keep = pd.Series(True, index=patterns.index)
    if layers is not None:
        keep &= patterns["layer"].isin([layers] if isinstance(layers, int) else list(layers))
    if heads is not None:
        keep &= patterns["head"].isin([heads] if isinstance(heads, int) else list(heads))
    chosen = patterns[keep]
    cells = sorted(set(zip(chosen["layer"].astype(int), chosen["head"].astype(int))))
    if not cells:
        raise InputError("no attention pattern left for these layers and heads")
    columns = []
    for name, part in chosen.groupby("model", sort=False):
        stacked = np.zeros((len(cells), n, n), dtype=np.float32)  # (layers*heads, pos, pos)
        at = {cell: slot for slot, cell in enumerate(cells)}
        slots = np.array([at[cell] for cell in zip(part["layer"].astype(int), part["head"].astype(int))], dtype=np.int64)
        stacked[slots, part["query"].to_numpy(), part["key"].to_numpy()] = part["weight"].to_numpy()
        names = [f"L{layer}H{head}" for layer, head in cells]
        rendered = _attention_heads(attention=stacked, tokens=token_list, attention_head_names=names)
        columns.append(f"<div class='mechit-col'><h3>{name}</h3>{rendered.local_src}</div>")
    return HTMLView(f"<div class='mechit-row'>{''.join(columns)}</div>", title=title)


def _attention_heads(**kwargs):
    """circuitsvis ``attention_heads``. Imported here, not at the top: circuitsvis is slow to
    import (docs/benchmarks.md, "Heads: notes moved from code") and only this view needs it."""
    from circuitsvis.attention import attention_heads

    return attention_heads(**kwargs)


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

    >>> from mechit.heads.pairs import head_pairs
    >>> words = ["translate", "French", "cat", "dog"]
    >>> pairs = pair.run(head_pairs, words, method="qk", layers=0, heads=1, top_k=3, progress=False)
    >>> view = head_pairs_table(pairs[pairs["model"] == "base"], pairs[pairs["model"] == "tuned"], layer=0, head=1)
    >>> view.frame.columns[:2].tolist()
    ['base_pair', 'base_n_dims']
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

