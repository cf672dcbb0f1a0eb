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

>>> rot = mechit.ffn_rotation(mechit.load_pair(), k=20)   # doctest: +SKIP
>>> rot.summary                                           # doctest: +SKIP
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

from mechit.runtime import single_thread
from mechit.errors import IncompatiblePairError, InputError
from mechit.ffn.concepts import (
    check_same_mlp,
    concept_words,
    pair_models,
    principal_components,
    resolve_layers,
    top_tokens,
    unit_word_vectors,
    vocab_strings,
    word_key,
)

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
    sim = (a.to(torch.float64) @ b.to(torch.float64).T).abs().numpy()
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
        """Write each frame as ``rotation_<field>.parquet`` in ``out_dir`` (atomic writes)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for f in fields(self):
            path = out / f"rotation_{f.name}.parquet"
            tmp = path.with_suffix(".parquet.tmp")
            getattr(self, f.name).to_parquet(tmp, index=False)
            tmp.replace(path)
            paths.append(path)
        return paths

    @classmethod
    def load(cls, out_dir: str | Path) -> Rotation:
        """Read back what :meth:`save` wrote."""
        out = Path(out_dir)
        return cls(**{f.name: pd.read_parquet(out / f"rotation_{f.name}.parquet") for f in fields(cls)})

    def _repr_html_(self) -> str:
        return self.summary._repr_html_()


# ---------------------------------------------------------------------------- model wrapper


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
    angles = torch.rad2deg(principal_angles(comps["base"].directions, comps["tuned"].directions)).numpy()
    neurons = pd.DataFrame({"layer": layer, "neuron": np.arange(wb["out"].shape[0])})
    neurons["cos_out"] = row_cosines(wb["out"], wt["out"]).numpy()
    neurons["cos_in"] = row_cosines(wb["in"], wt["in"], dim=0).numpy()  # W_in [d, d_mlp]: one column per neuron
    if wb["gate"] is not None and wt["gate"] is not None:
        neurons["cos_gate"] = row_cosines(wb["gate"], wt["gate"], dim=0).numpy()
    rows, cols, abs_cos = match_components(comps["base"].directions, comps["tuned"].directions)
    order = np.argsort(neurons["cos_out"].to_numpy(), kind="stable")[:n_changed]
    return dict(layer=layer, comps=comps, angles=angles, neurons=neurons, match=(rows, cols, abs_cos),
                order=order, changed_vectors={m: weights[m]["out"][torch.as_tensor(order)] for m in weights})


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
            "base_explained": comps["base"].explained.numpy()[rows],
            "tuned_explained": comps["tuned"].explained.numpy()[cols],
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


def ffn_rotation(
    pair: Any,
    layers: int | Iterable[int] | None = None,
    *,
    k: int = 50,
    top_k: int = 50,
    words: Sequence[str] | None = None,
    n_changed: int = 10,
    n_tokens: int = 10,
    progress: bool = True,
) -> Rotation:
    """Measure how far tuning rotated each FFN layer; see the module docstring.

    ``pair`` is a :class:`~mechit.models.ModelPair` (or a ``(base, tuned)`` tuple; the
    same model twice gives angles 0 and cosines 1). ``k`` components per side are
    compared; concepts use ``top_k`` words from ``words`` (default
    :func:`mechit.tokens.default_words`); ``n_changed`` neurons per layer are listed
    with ``n_tokens`` top tokens before and after. Raises
    :class:`~mechit.errors.IncompatiblePairError` if the MLP shapes differ and
    :class:`~mechit.errors.InputError` if ``k`` exceeds a layer's rank.

    Per layer only the weights are read; the projections onto words and vocabulary run
    once per model for all layers together (one pass over ``W_U`` instead of one per layer).

    >>> rot = mechit.ffn_rotation(pair, [0, 1], k=10)   # doctest: +SKIP
    >>> rot.summary[["layer", "max_angle_deg", "median_cos_out"]]   # doctest: +SKIP
    """
    from mechit.arch.weights import mlp_in_weights, mlp_out_weights, unembedding

    base, tuned = pair_models(pair)
    check_same_mlp(base, tuned)
    models = {"base": base, "tuned": tuned}
    layer_list = resolve_layers(base, layers)
    geometry = []
    for layer in tqdm(layer_list, desc="rotation", unit="layer", disable=not progress):
        weights = {}
        for name, model in models.items():
            w_in, w_gate = mlp_in_weights(model, layer)
            weights[name] = {"out": mlp_out_weights(model, layer), "in": w_in, "gate": w_gate}
        with single_thread():  # small dense ops: see mechit.runtime.single_thread
            geometry.append(_layer_geometry(layer, weights, k, n_changed))

    concept: dict[str, list[list[list[str]]]] = {}  # model -> layer -> component -> words
    tokens: dict[str, list[list[list[str]]]] = {}  # model -> layer -> changed neuron -> words
    for name, model in models.items():
        kept, unit = unit_word_vectors(model, words)
        if top_k > len(kept):
            raise InputError(f"top_k={top_k} exceeds the number of usable words ({len(kept)})")
        dirs = torch.cat([g["comps"][name].directions for g in geometry])  # [layers * k, d]
        _, idx = concept_words(dirs, unit, top_k, chunk=256)
        words_of = [[kept[i] for i in r] for r in idx.tolist()]
        concept[name] = [words_of[i * k : (i + 1) * k] for i in range(len(geometry))]

        w_u = unembedding(model)
        vocab = vocab_strings(model.tokenizer)
        vocab = tuple(vocab) + tuple(f"<pad{i}>" for i in range(len(vocab), w_u.shape[1]))
        vecs = torch.cat([g["changed_vectors"][name] for g in geometry])  # [layers * n_changed, d]
        _, tok = top_tokens(vecs, w_u, 3 * n_tokens)
        per_neuron = [_token_words(vocab, r)[:n_tokens] for r in tok.tolist()]
        counts = np.cumsum([0] + [len(g["order"]) for g in geometry])
        tokens[name] = [per_neuron[a:b] for a, b in zip(counts[:-1], counts[1:])]

    parts: dict[str, list[pd.DataFrame]] = {f.name: [] for f in fields(Rotation)}
    for i, geo in enumerate(geometry):
        frames = _layer_frames(geo, {m: concept[m][i] for m in models}, {m: tokens[m][i] for m in models}, k)
        for key, frame in frames.items():
            parts[key].append(frame)
    return Rotation(**{key: pd.concat(frames, ignore_index=True) for key, frames in parts.items()})
