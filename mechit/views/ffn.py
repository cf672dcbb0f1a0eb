"""Views of the FFN frames: neuron top-k tokens (circuitsvis) and matplotlib figures.

- :func:`neuron_view`: circuitsvis ``topk_tokens`` table of the words each neuron promotes
  and suppresses, base and tuned in one widget (first drop-down: model), drawn from the
  frame of :func:`mechit.ffn.neurons.neuron_tokens` (views never run a model).
- :func:`plot_label_proportions`: label proportions per layer group, base vs tuned (the
  paper's Figure 3 style), from :func:`mechit.ffn.labels.label_proportions`.
- :func:`plot_principal_angles`: max and mean principal angle per layer, from
  :class:`mechit.ffn.rotation.Rotation`.
- :func:`plot_neuron_cosines`: histogram of per-neuron base/tuned cosines.

Each plot returns a matplotlib Figure (shown inline in notebooks); :func:`save_figure`
writes it as PNG and SVG.

>>> angles = pd.DataFrame({"layer": [0, 0], "index": [0, 1], "angle_deg": [3.0, 40.0]})
>>> [p.name for p in save_figure(plot_principal_angles(angles), "out/angles")]
['angles.png', 'angles.svg']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mechit.errors import InputError
from mechit.store import atomic_path
from mechit.views.heads import HTMLView

BASE_COLOR, TUNED_COLOR = "#4C72B0", "#DD8452"


def save_figure(fig: Any, stem: str | Path, *, dpi: int = 150) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically (:func:`mechit.store.atomic_path`); returns both paths.

    >>> import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    >>> import tempfile; fig = plt.figure()
    >>> [p.suffix for p in save_figure(fig, tempfile.mkdtemp() + "/f")]
    ['.png', '.svg']
    """
    stem = Path(stem)
    paths = []
    for ext in ("png", "svg"):
        path = stem.with_name(f"{stem.name}.{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    return paths


def _plt():
    """pyplot, on a non-interactive backend outside notebooks (imported here: the backend is
    chosen before pyplot loads)."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            import IPython  # noqa: F401

            if IPython.get_ipython() is None:
                matplotlib.use("Agg")
        except ImportError:
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_label_proportions(
    proportions: pd.DataFrame, question: str = "task", *, labels: Sequence[str] | None = None, group_size: int = 4
) -> Any:
    """Bars of each label's proportion per layer group, base vs tuned, ± std over seeds.

    ``proportions`` comes from :func:`mechit.ffn.labels.label_proportions` (with a ``model``
    column; a frame without one is drawn as a single model).

    >>> props = pd.DataFrame({"model": ["base", "tuned"], "layer_group": 0, "question": "task",
    ...                       "label": "math", "proportion": [0.1, 0.3], "std": 0.0, "n_seeds": 1})
    >>> len(plot_label_proportions(props).axes)
    1
    """
    plt = _plt()
    frame = proportions[proportions["question"] == question]
    if "model" not in frame:
        frame = frame.assign(model="model")
    chosen = list(labels) if labels is not None else [lab for lab in frame["label"].unique() if lab != "none"] or ["none"]
    groups = sorted(frame["layer_group"].unique())
    models = [m for m in ("base", "tuned", "model") if m in set(frame["model"])]
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen), 3.0), squeeze=False, sharey=True)
    width = 0.8 / len(models)
    x = np.arange(len(groups))
    for ax, lab in zip(axes[0], chosen):
        for i, m in enumerate(models):
            sel = frame[(frame["model"] == m) & (frame["label"] == lab)].set_index("layer_group").reindex(groups)
            spread = sel["std"] if sel["std"].notna().any() else None  # one seed: no error bars
            ax.bar(x + (i - (len(models) - 1) / 2) * width, sel["proportion"].fillna(0), width,
                   yerr=None if spread is None else spread.fillna(0), capsize=2, label=m,
                   color={"base": BASE_COLOR, "tuned": TUNED_COLOR}.get(m, "grey"))
        ax.set_title(lab)
        ticks = [str(int(g)) if group_size == 1 else f"{int(g) * group_size}-{int(g) * group_size + group_size - 1}"
                 for g in groups]
        ax.set_xticks(x, ticks, rotation=45 if group_size > 1 else 0)
        ax.set_xlabel("layers")
    axes[0][0].set_ylabel(f"share of concepts ({question})")
    axes[0][-1].legend(frameon=False)
    fig.tight_layout()
    return fig


def plot_principal_angles(rotation: Any) -> Any:
    """Max and mean principal angle (degrees) between base and tuned top-k subspaces, per layer.

    ``rotation`` is a :class:`mechit.ffn.rotation.Rotation` (or its ``angles`` frame).

    >>> angles = pd.DataFrame({"layer": [0, 0, 1, 1], "index": [0, 1, 0, 1], "angle_deg": [1., 5., 2., 9.]})
    >>> plot_principal_angles(angles).axes[0].get_ylabel()
    'principal angle (degrees)'
    """
    plt = _plt()
    angles = rotation.angles if hasattr(rotation, "angles") else rotation
    stats = angles.groupby("layer")["angle_deg"].agg(["max", "mean", "median"])
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.scatter(angles["layer"], angles["angle_deg"], s=4, color="lightgrey", label="all angles")
    ax.plot(stats.index, stats["max"], "-o", ms=3, color=TUNED_COLOR, label="max")
    ax.plot(stats.index, stats["mean"], "-o", ms=3, color=BASE_COLOR, label="mean")
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_ylabel("principal angle (degrees)")
    ax.set_ylim(0, max(90.0, float(stats["max"].max()) if len(stats) else 90.0) + 1)
    k = int(angles["index"].max()) + 1 if len(angles) else 0
    ax.set_title(f"base vs tuned: top-{k} component subspaces of W_out")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_neuron_cosines(rotation: Any, *, bins: int = 60) -> Any:
    """Histogram of per-neuron cosines between base and tuned (W_out rows, W_in columns).

    >>> neurons = pd.DataFrame({"layer": 0, "neuron": [0, 1], "cos_out": [0.9, 1.0], "cos_in": [0.8, 1.0]})
    >>> plot_neuron_cosines(neurons).axes[0].get_xlabel()
    'cosine(base, tuned)'
    """
    plt = _plt()
    neurons = rotation.neurons if hasattr(rotation, "neurons") else rotation
    fig, ax = plt.subplots(figsize=(6, 3))
    cols = [c for c in ("cos_out", "cos_in", "cos_gate") if c in neurons]
    lo = float(min(neurons[c].min() for c in cols))
    edges = np.linspace(lo - 1e-3 * (1.0 - lo), 1.0 + 1e-9, bins + 1)
    for c, color in zip(cols, (TUNED_COLOR, BASE_COLOR, "#55A868")):
        ax.hist(neurons[c], bins=edges, histtype="step", lw=1.5, color=color,
                label=f"{c.replace('cos_', 'W_')} (median {neurons[c].median():.3f})")
    ax.set_yscale("log")
    ax.set_xlabel("cosine(base, tuned)")
    ax.set_ylabel("neurons")
    ax.set_title(f"per-neuron cosine, {neurons['layer'].nunique()} layers")
    ax.legend(frameon=False, fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def neuron_score_grid(
    table: pd.DataFrame, layer: int | None = None, neurons: Sequence[int] | None = None
) -> tuple[list[str], list[str], list[int], np.ndarray]:
    """The scores of a neuron table as a grid: (models, words, neurons, scores [model, word, neuron]).

    ``table`` is :func:`mechit.ffn.neurons.neuron_tokens` of one model, or
    ``pair.run(neuron_tokens, ...)`` (a ``model`` column); ``layer`` may be left out when
    the table holds one layer. A word outside a model's top and bottom lists of a neuron
    gets the midpoint between that list's weakest top and weakest bottom score, so it
    ranks between them, as its true score does.

    >>> table = pd.DataFrame({"layer": 0, "neuron": 0, "direction": ["top", "bottom"], "rank": 0,
    ...                       "word": ["a", "b"], "score": [4.0, -2.0]})
    >>> models, words, neurons, grid = neuron_score_grid(table)
    >>> models, words, neurons, grid[0, :, 0].tolist()
    (['model'], ['a', 'b'], [0], [4.0, -2.0])
    """
    frame = table if "model" in table else table.assign(model="model")
    if layer is None:
        layers = sorted(frame["layer"].unique())
        if len(layers) != 1:
            raise InputError(f"the neuron table holds layers {[int(x) for x in layers]}: pass layer=")
        layer = layers[0]
    frame = frame[frame["layer"] == layer]
    if frame.empty:
        raise InputError(f"the neuron table has no rows of layer {layer}")
    chosen = sorted(int(n) for n in frame["neuron"].unique()) if neurons is None else [int(n) for n in neurons]
    missing = sorted(set(chosen) - set(frame["neuron"]))
    if missing:
        raise InputError(f"the neuron table has no rows of neuron(s) {missing} in layer {layer}")
    frame = frame[frame["neuron"].isin(chosen)]
    models = list(dict.fromkeys(frame["model"]))
    words = list(dict.fromkeys(frame["word"]))
    position = {w: i for i, w in enumerate(words)}
    grid = np.empty((len(models), len(words), len(chosen)))
    for (model, neuron), rows in frame.groupby(["model", "neuron"], sort=False):
        m, n = models.index(model), chosen.index(int(neuron))
        top, bottom = rows[rows["direction"] == "top"]["score"], rows[rows["direction"] == "bottom"]["score"]
        grid[m, :, n] = (top.min() + bottom.max()) / 2 if len(top) and len(bottom) else rows["score"].median()
        grid[m, [position[w] for w in rows["word"]], n] = rows["score"].to_numpy()
    return models, words, chosen, grid


def neuron_view(
    table: pd.DataFrame, layer: int | None = None, neurons: Sequence[int] | None = None, *, k: int | None = None
) -> HTMLView:
    """circuitsvis top-k table of the words each neuron promotes (top) and suppresses (bottom).

    ``table`` is :func:`mechit.ffn.neurons.neuron_tokens` of one model or
    ``pair.run(neuron_tokens, ...)`` of both (the first drop-down then switches between
    base and tuned); scores are each model's ``W_out[n] · W_U`` (:func:`neuron_score_grid`).
    ``k`` words per direction (default: as many as the table holds). Returns an
    :class:`~mechit.views.heads.HTMLView`.

    >>> from mechit.ffn.neurons import neuron_tokens
    >>> view = neuron_view(pair.run(neuron_tokens, 3, [10, 42], k=5))
    >>> view.save("neurons.html").exists()
    True
    """
    from circuitsvis.topk_tokens import (
        topk_tokens,  # lazy: circuitsvis imports torch (seconds), views need not
    )

    models, words, chosen, grid = neuron_score_grid(table, layer, neurons)
    layer = int(table["layer"].iloc[0]) if layer is None else layer
    ranks = int(table["rank"].max()) + 1
    rendered = topk_tokens(
        tokens=[words], activations=[grid], max_k=ranks if k is None else min(k, ranks),
        first_dimension_name="Model", third_dimension_name=f"Neuron (layer {layer}: {', '.join(map(str, chosen))})",
        first_dimension_labels=models,
    )
    return HTMLView(rendered.local_src, title=f"neurons of layer {layer}")
