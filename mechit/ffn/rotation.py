"""How far instruction tuning rotated each feed-forward layer (PAPER §3.5, beyond the paper).

The paper inferred a "rotation" of FFN knowledge from LLM-labelled concept proportions.
Because the base and tuned models share neuron indices, mechit measures it directly, per
layer:

- **principal angles** between the top-``k`` principal-component subspaces of the two
  centred ``W_out`` (0° = same subspace, 90° = orthogonal);
- **per-neuron cosine** between the base and tuned ``W_out`` rows and ``W_in`` columns
  (and ``W_gate`` columns where the MLP is gated);
- **matched components**: base and tuned components paired by the Hungarian algorithm on
  ``|cos|`` of their directions, with the Jaccard overlap of their concept word lists;
- **most-changed neurons** (lowest ``W_out`` cosine) with their top tokens before and after.

The concept words come from each model's :func:`~mechit.ffn.concepts.ffn_concepts` frame
(``pair.run(ffn_concepts, ...)``): the rotation reuses them rather than computing them again.

>>> from mechit.ffn.concepts import ffn_concepts
>>> concepts = pair.run(ffn_concepts, n_components=5, top_k=5, progress=False)
>>> rot = ffn_rotation(pair, concepts, k=5, progress=False)
>>> rot.summary["layer"].tolist()
[0, 1, 2, 3, 4, 5]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from tqdm.auto import tqdm

import mechit.arch.weights as weight_views
from mechit.errors import IncompatiblePairError, InputError
from mechit.ffn.concepts import principal_components
from mechit.ffn.neurons import padded_vocab, top_tokens, word_key
from mechit.models.pair import ModelPair
from mechit.runtime import single_thread
from mechit.store import write_table

# ---------------------------------------------------------------------------- pure maths


def principal_angles(
    a: Float[Tensor, "k d"], b: Float[Tensor, "k2 d"]
) -> Float[Tensor, " m"]:
    """Principal angles (radians, ascending) between the row spaces of ``a`` and ``b``.

    Rows must be orthonormal. Small angles come from the sines and large ones from the
    cosines (Björck & Golub), so identical subspaces give exactly 0 rather than the
    ``arccos(1 - eps) ≈ 3e-4`` of the naive formula. Computed in float64.

    >>> import math
    >>> a = torch.tensor([[1., 0., 0.]])
    >>> b = torch.tensor([[math.cos(0.3), math.sin(0.3), 0.]])
    >>> principal_angles(a, b)
    tensor([0.3000], dtype=torch.float64)
    """
    if a.shape[-1] != b.shape[-1]:
        raise InputError(f"subspaces live in different dimensions ({a.shape[-1]} vs {b.shape[-1]})")
    qa, qb = a.to(torch.float64), b.to(torch.float64)
    m = min(qa.shape[0], qb.shape[0])
    cross = qa @ qb.T  # [k, k2]
    # sines: singular values of the part of qb outside span(qa) (or qa outside span(qb))
    resid = qb - cross.T @ qa if qb.shape[0] <= qa.shape[0] else qa - cross @ qb
    with single_thread():
        cos = torch.linalg.svdvals(cross)[:m].clamp(0, 1)  # descending
        sin = torch.sort(torch.linalg.svdvals(resid).clamp(0, 1)).values  # ascending, pairs with cos
    angles = torch.where(cos**2 < 0.5, torch.arccos(cos), torch.arcsin(sin))
    return torch.sort(angles).values


def row_cosines(x: Float[Tensor, "n d"], y: Float[Tensor, "n d"], *, dim: int = -1) -> Float[Tensor, " n"]:
    """Cosine between matching rows (``dim=-1``) or columns (``dim=0``) of ``x`` and ``y``.

    Float64; zero vectors give 0.

    >>> row_cosines(torch.tensor([[1., 0.], [0., 1.]]), torch.tensor([[2., 0.], [-1., 0.]]))
    tensor([1., 0.], dtype=torch.float64)
    """
    if x.shape != y.shape:
        raise IncompatiblePairError(f"cannot compare rows of shapes {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.to(torch.float64), y.to(torch.float64)
    denom = (x.norm(dim=dim) * y.norm(dim=dim)).clamp_min(torch.finfo(torch.float64).tiny)
    return (x * y).sum(dim) / denom


def match_components(
    a: Float[Tensor, "k d"], b: Float[Tensor, "k d"]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair the rows of ``a`` with rows of ``b`` maximising the total ``|cos|`` (Hungarian).

    Returns (a_index, b_index, abs_cos), ordered by ``a_index``.

    >>> a = torch.eye(2); b = torch.tensor([[0., -1.], [1., 0.]])
    >>> match_components(a, b)
    (array([0, 1]), array([1, 0]), array([1., 1.]))
    """
    sim = (a.to(torch.float64) @ b.to(torch.float64).T).abs().cpu().numpy()
    rows, cols = linear_sum_assignment(sim, maximize=True)
    return rows, cols, sim[rows, cols]


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """|A ∩ B| / |A ∪ B| (1.0 for two empty sets).

    >>> jaccard(["a", "b"], ["b", "c"])
    0.3333333333333333
    """
    sa, sb = set(a), set(b)
    return 1.0 if not sa | sb else len(sa & sb) / len(sa | sb)


# ---------------------------------------------------------------------------- result


@dataclass
class Rotation:
    """The rotation of each FFN layer between base and tuned; every field is a tidy frame.

    - ``summary``: one row per layer (max/mean principal angle in degrees, median/min/p05
      neuron cosines, mean Jaccard of matched concepts).
    - ``angles``: layer, index, angle_deg (``k`` rows per layer, ascending).
    - ``neurons``: layer, neuron, cos_out, cos_in (, cos_gate).
    - ``matches``: layer, base_component, tuned_component, abs_cos, jaccard,
      base_explained, tuned_explained.
    - ``changed``: layer, rank, neuron, cos_out, cos_in, base_tokens, tuned_tokens.
    """

    summary: pd.DataFrame
    angles: pd.DataFrame
    neurons: pd.DataFrame
    matches: pd.DataFrame
    changed: pd.DataFrame

    def save(self, out_dir: str | Path) -> list[Path]:
        """Write each frame as ``rotation_<field>.parquet`` in ``out_dir`` (atomic, through :mod:`mechit.store`).

        >>> from mechit.ffn.concepts import ffn_concepts
        >>> rot = ffn_rotation(pair, pair.run(ffn_concepts, 0, n_components=2, top_k=2, progress=False),
        ...                    0, k=2, progress=False)
        >>> [p.name for p in rot.save("rotation")][:2]
        ['rotation_summary.parquet', 'rotation_angles.parquet']
        >>> Rotation.load("rotation").summary.equals(rot.summary)
        True
        """
        return [write_table(getattr(self, f.name), Path(out_dir) / f"rotation_{f.name}.parquet")
                for f in fields(self)]

    @classmethod
    def load(cls, out_dir: str | Path) -> Rotation:
        """Read back what :meth:`save` wrote (see its example)."""
        out = Path(out_dir)
        return cls(**{f.name: pd.read_parquet(out / f"rotation_{f.name}.parquet") for f in fields(cls)})

    def _repr_html_(self) -> str:
        return self.summary._repr_html_()


# ---------------------------------------------------------------------------- model wrapper


def check_same_mlp(base: Any, tuned: Any) -> None:
    """Raise :class:`IncompatiblePairError` unless both models have the same layers and MLP shapes.

    >>> check_same_mlp(pair.base, pair.tuned)
    """
    for field in ("n_layers", "d_model", "d_mlp"):
        a, b = getattr(base.cfg, field), getattr(tuned.cfg, field)
        if a != b:
            raise IncompatiblePairError(
                f"base and tuned differ in {field} ({a} vs {b}): neuron-level comparison needs "
                "the same architecture"
            )


def concept_words_by_layer(concepts: pd.DataFrame, layers: Sequence[int], k: int) -> dict[str, list[list[list[str]]]]:
    """The words of components ``0..k-1`` per model and layer, from a tagged concept frame.

    ``concepts`` is ``pair.run(ffn_concepts, ...)`` (a ``model`` column, "base" and "tuned").
    Returns model -> layer (in the order of ``layers``) -> component -> words by rank.
    Raises :class:`InputError` naming what the frame lacks.

    >>> concepts = pd.DataFrame({"model": ["base", "base", "tuned", "tuned"], "layer": 0, "component": 0,
    ...                          "rank": [1, 0, 0, 1], "word": ["b", "a", "c", "d"]})
    >>> concept_words_by_layer(concepts, [0], 1)
    {'base': [[['a', 'b']]], 'tuned': [[['c', 'd']]]}
    """
    missing = {"model", "layer", "component", "rank", "word"} - set(concepts.columns)
    if missing:
        raise InputError(f"concepts lacks the column(s) {', '.join(sorted(missing))}: pass "
                         "pair.run(ffn_concepts, ...), the concepts of both models")
    chosen = concepts[concepts["layer"].isin(layers) & (concepts["component"] < k)].sort_values(
        ["model", "layer", "component", "rank"])
    lists = chosen.groupby(["model", "layer", "component"], sort=False)["word"].agg(list)
    out: dict[str, list[list[list[str]]]] = {}
    for name in ("base", "tuned"):
        out[name] = []
        for layer in layers:
            have = [c for c in range(k) if (name, layer, c) in lists.index]
            if len(have) < k:
                raise InputError(f"concepts holds {len(have)} components of the {name} model's layer {layer}; "
                                 f"k={k} needs {k}: compute the concepts with n_components >= {k} on every layer")
            out[name].append([list(lists[(name, layer, c)]) for c in range(k)])
    return out


def _token_words(vocab: Sequence[str], ids: Sequence[int]) -> list[str]:
    seen: dict[str, None] = {}
    for i in ids:
        seen.setdefault(word_key(vocab[i]), None)
    return list(seen)


def _layer_geometry(layer: int, weights: dict[str, dict[str, Tensor]], k: int, n_changed: int) -> dict[str, Any]:
    """Everything of one layer that needs only its weights: components, angles, cosines, matching."""
    wb, wt = weights["base"], weights["tuned"]
    if wb["out"].shape != wt["out"].shape:
        raise IncompatiblePairError(
            f"layer {layer}: W_out shapes differ ({tuple(wb['out'].shape)} vs {tuple(wt['out'].shape)})"
        )
    comps = {m: principal_components(weights[m]["out"], k, name=f"{m} layer {layer} W_out") for m in weights}
    angles = torch.rad2deg(principal_angles(comps["base"].directions, comps["tuned"].directions)).cpu().numpy()
    neurons = pd.DataFrame({"layer": layer, "neuron": np.arange(wb["out"].shape[0])})
    neurons["cos_out"] = row_cosines(wb["out"], wt["out"]).cpu().numpy()
    neurons["cos_in"] = row_cosines(wb["in"], wt["in"], dim=0).cpu().numpy()  # W_in [d, d_mlp]: one column per neuron
    if wb["gate"] is not None and wt["gate"] is not None:
        neurons["cos_gate"] = row_cosines(wb["gate"], wt["gate"], dim=0).cpu().numpy()
    rows, cols, abs_cos = match_components(comps["base"].directions, comps["tuned"].directions)
    order = np.argsort(neurons["cos_out"].to_numpy(), kind="stable")[:n_changed]
    changed = {m: weights[m]["out"][torch.as_tensor(order, device=weights[m]["out"].device)] for m in weights}
    return dict(layer=layer, comps=comps, angles=angles, neurons=neurons, match=(rows, cols, abs_cos),
                order=order, changed_vectors=changed)


def _layer_frames(geo: dict[str, Any], concept: dict[str, list[list[str]]],
                  tokens: dict[str, list[list[str]]], k: int) -> dict[str, pd.DataFrame]:
    """The five frames of one layer, given its concept words and changed-neuron tokens."""
    layer, comps, angles, neurons = geo["layer"], geo["comps"], geo["angles"], geo["neurons"]
    rows, cols, abs_cos = geo["match"]
    matches = pd.DataFrame(
        {
            "layer": layer,
            "base_component": rows,
            "tuned_component": cols,
            "abs_cos": abs_cos,
            "jaccard": [jaccard(concept["base"][r], concept["tuned"][c]) for r, c in zip(rows, cols)],
            "base_explained": comps["base"].explained.cpu().numpy()[rows],
            "tuned_explained": comps["tuned"].explained.cpu().numpy()[cols],
        }
    )
    changed = neurons.iloc[geo["order"]].reset_index(drop=True)
    changed.insert(1, "rank", np.arange(len(changed)))
    for m, words in tokens.items():
        changed[f"{m}_tokens"] = words
    summary = pd.DataFrame(
        [
            {
                "layer": layer,
                "k": k,
                "max_angle_deg": float(angles.max()),
                "mean_angle_deg": float(angles.mean()),
                "median_cos_out": float(neurons["cos_out"].median()),
                "p05_cos_out": float(neurons["cos_out"].quantile(0.05)),
                "min_cos_out": float(neurons["cos_out"].min()),
                "median_cos_in": float(neurons["cos_in"].median()),
                "mean_match_abs_cos": float(abs_cos.mean()),
                "mean_jaccard": float(matches["jaccard"].mean()),
            }
        ]
    )
    angle_frame = pd.DataFrame({"layer": layer, "index": np.arange(len(angles)), "angle_deg": angles})
    return dict(summary=summary, angles=angle_frame, neurons=neurons, matches=matches, changed=changed)


def _changed_tokens(model: Any, geometry: list[dict[str, Any]], name: str, n_tokens: int) -> list[list[list[str]]]:
    """Top words of each layer's most-changed neurons under one model: layer -> neuron -> words."""
    w_u = weight_views.unembedding(model)
    vocab = padded_vocab(model, w_u.shape[1])
    vecs = torch.cat([g["changed_vectors"][name] for g in geometry])  # [layers * n_changed, d]
    _, tok = top_tokens(vecs, w_u, 3 * n_tokens)
    per_neuron = [_token_words(vocab, r)[:n_tokens] for r in tok.tolist()]
    counts = np.cumsum([0] + [len(g["order"]) for g in geometry])
    return [per_neuron[a:b] for a, b in zip(counts[:-1], counts[1:])]


def ffn_rotation(
    pair: ModelPair,
    concepts: pd.DataFrame,
    layers: int | Iterable[int] | None = None,
    *,
    k: int = 50,
    n_changed: int = 10,
    n_tokens: int = 10,
    progress: bool = True,
) -> Rotation:
    """Measure how far tuning rotated each FFN layer; see the module docstring.

    ``pair`` is a :class:`~mechit.models.ModelPair` (the same model twice gives angles 0
    and cosines 1); ``concepts`` is ``pair.run(ffn_concepts, ...)`` with at least ``k``
    components on each chosen layer, whose word lists give the matched components'
    Jaccard overlap. ``k`` components per side are compared; ``n_changed`` neurons per
    layer are listed with ``n_tokens`` top tokens before and after. Raises
    :class:`~mechit.errors.IncompatiblePairError` if the MLP shapes differ and
    :class:`~mechit.errors.InputError` if ``k`` exceeds a layer's rank or the concepts lack
    a layer or components.

    Per layer only the weights are read; the projections onto the vocabulary run once per
    model for all layers together (one pass over ``W_U`` instead of one per layer).

    >>> from mechit.ffn.concepts import ffn_concepts
    >>> concepts = pair.run(ffn_concepts, [0, 1], n_components=10, top_k=5, progress=False)
    >>> rot = ffn_rotation(pair, concepts, [0, 1], k=10, progress=False)
    >>> rot.angles.groupby("layer").size().tolist(), bool(rot.angles["angle_deg"].between(0, 90).all())
    ([10, 10], True)
    """
    if not isinstance(pair, ModelPair):
        raise InputError(f"ffn_rotation needs a ModelPair (mechit.load_pair), got {type(pair).__name__}")
    check_same_mlp(pair.base, pair.tuned)
    layer_list = weight_views.select_indices("layer", layers, int(pair.base.cfg.n_layers), from_end=True)
    geometry = []
    for layer in tqdm(layer_list, desc="rotation", unit="layer", disable=not progress):
        weights = {}
        for name, model in pair:
            w_in, w_gate = weight_views.mlp_in_weights(model, layer)
            weights[name] = {"out": weight_views.mlp_out_weights(model, layer), "in": w_in, "gate": w_gate}
        with single_thread():  # small dense ops: see mechit.runtime.single_thread
            geometry.append(_layer_geometry(layer, weights, k, n_changed))
    concept = concept_words_by_layer(concepts, layer_list, k)  # model -> layer -> component -> words
    tokens = {name: _changed_tokens(model, geometry, name, n_tokens) for name, model in pair}

    parts: dict[str, list[pd.DataFrame]] = {f.name: [] for f in fields(Rotation)}
    for i, geo in enumerate(geometry):
        frames = _layer_frames(geo, {m: concept[m][i] for m in concept}, {m: tokens[m][i] for m in tokens}, k)
        for key, frame in frames.items():
            parts[key].append(frame)
    return Rotation(**{key: pd.concat(frames, ignore_index=True) for key, frames in parts.items()})
